"""A small WSGI server whose cost stays bounded whatever its clients do (issue #10).

It serves /metrics, /healthz and /readyz of the exporter (9860), the scorer (9861) and the
scheduler (9862). The stdlib's threading server it replaces started one thread per connection,
with no read deadline and a listen backlog of 5: 600 idle connections made 210 threads, and
every connection beyond the backlog waited a second. Here:

- one thread runs a selector loop that accepts connections and reads request heads without
  blocking: an idle or trickling connection costs a socket and a small buffer, never a thread;
- a connection must deliver its whole request head within `read_timeout_s` of being accepted,
  in at most `max_request_bytes`, or it is closed;
- at most `max_connections` accepted connections wait for their request; one more closes the
  connection that has waited longest (a scraper or a probe sends its request as soon as it
  connects), so a flood of idle connections never keeps a scrape out;
- a complete request goes to one of at most `max_requests` worker threads, started as needed;
  a request beyond that is answered 503 at once, as node_exporter's --web.max-requests does;
- a response must be written within `write_timeout_s`: a client that does not read holds a
  worker that long at most;
- the listen backlog is the kernel's maximum (net.core.somaxconn), and the soft RLIMIT_NOFILE
  is raised to the hard limit, as Go's runtime does for node_exporter; waiting connections get
  at most half of it.

The stdlib still parses each request and calls the app (wsgiref's WSGIRequestHandler, one
request per connection, HTTP/1.0 answers, as before); only the connection handling is ours.
waitress, the usual pure-Python server built the same way, stops accepting at its connection
limit, so idle connections would keep scrapes out until they time out; this does not.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import queue
import re
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIRequestHandler

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


@dataclass(frozen=True)
class Limits:
    """What one server may spend on its clients (the defaults are the documented ones)."""

    max_requests: int = 8
    """Requests handled at once (worker threads); one more is answered 503 at once."""
    max_connections: int = 1024
    """Accepted connections waiting for their request; one more closes the longest waiting."""
    read_timeout_s: float = 5.0
    """A connection's whole request head must arrive within this, counted from its accept."""
    write_timeout_s: float = 10.0
    """A response must be written within this (a client that does not read is dropped)."""
    max_request_bytes: int = 8192
    """Largest request head (request line and headers) accepted; larger ones get 431."""


#: How often, at most, the server logs what its limits turned away.
LOG_EVERY_S = 60.0
# Connections accepted per loop turn, so that reading the waiting ones is never starved.
_ACCEPTS_PER_TURN = 64
# Without a free descriptor (EMFILE) and no waiting connection to close, accepting pauses this long.
_ACCEPT_PAUSE_S = 0.1
# Unread input drained before a canned answer: 16 x 4 KiB.
_DRAIN_CHUNKS = 16
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_ACCEPT, _WAKE = object(), object()


def _canned(status: str) -> bytes:
    body = status.split(" ", 1)[1].lower().encode()
    return (
        f"HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


_BUSY = _canned("503 Service Unavailable")
_TOO_LARGE = _canned("431 Request Header Fields Too Large")


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (Go's runtime does this for every Go
    program); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


class _Waiting:
    """An accepted connection whose request head is still arriving."""

    __slots__ = ("address", "deadline", "head")

    def __init__(self, address: tuple, deadline: float):
        self.address = address
        self.deadline = deadline
        self.head = bytearray()


class _DeadlineWriter(io.RawIOBase):
    """The response side of a connection: every write must finish by `deadline`. A missed
    deadline reads as a client that went away (ConnectionAbortedError), which wsgiref drops
    quietly instead of logging a traceback."""

    def __init__(self, sock: socket.socket, deadline: float):
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectionAbortedError("write deadline passed")
        self._sock.settimeout(remaining)
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise ConnectionAbortedError("write deadline passed") from None
        return len(data)


class _RequestHandler(WSGIRequestHandler):
    """wsgiref's handler on a request head already read by the loop."""

    def __init__(self, conn: socket.socket, address: tuple, server: BoundedWsgiServer, head: bytes, deadline: float):
        self._head = head
        self._deadline = deadline
        super().__init__(conn, address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.wfile = _DeadlineWriter(self.request, self._deadline)

    def log_message(self, format: str, *args: object) -> None:
        """No log line per request (house rule 14)."""


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()


def _reply_and_close(conn: socket.socket, answer: bytes) -> None:
    """Best effort, never blocking: a short answer fits the socket's send buffer. What the
    client sent and nobody read is drained first (up to a bound), or closing would reset the
    connection and the client could lose the answer."""
    with contextlib.suppress(OSError):
        for _ in range(_DRAIN_CHUNKS):
            if not conn.recv(4096):
                break
    with contextlib.suppress(OSError):
        conn.send(answer)
        conn.shutdown(socket.SHUT_WR)
    _close(conn)


class BoundedWsgiServer:
    """Serves `app` on host:port within `limits` (module docstring).

    `start()` binds (raising OSError when it cannot) and starts the loop thread; `port` is the
    bound port; `shutdown()` stops accepting, closes every socket and is idempotent.
    """

    def __init__(self, app: WsgiApp, *, host: str, port: int, limits: Limits = Limits(), name: str = "http"):
        self._app = app
        self._host = host
        self._port = port
        self.limits = limits
        self._name = name
        self._listener: socket.socket | None = None
        self._loop: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self._in_flight = 0
        self._workers: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._max_waiting = limits.max_connections
        # What the limits turned away, logged at most every LOG_EVERY_S.
        self._turned_away = {"closed_longest_waiting": 0, "read_timeout": 0, "busy_503": 0, "too_large_431": 0}
        self._logged: dict[str, int] = dict(self._turned_away)
        self._last_log = -LOG_EVERY_S
        # What wsgiref's handler reads from its server.
        self.base_environ = {
            "SERVER_NAME": host, "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PORT": str(port),
            "REMOTE_HOST": "", "CONTENT_LENGTH": "", "SCRIPT_NAME": "",
        }

    def get_app(self) -> WsgiApp:
        return self._app

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the port is known only after start()")
        return self._listener.getsockname()[1]

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server((self._host, self._port), family=family, backlog=socket.SOMAXCONN)
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self.base_environ["SERVER_PORT"] = str(self.port)
        self._max_waiting = max(1, min(self.limits.max_connections, raise_nofile_limit() // 2))
        self._loop = threading.Thread(target=self._serve, name=f"{self._name}-loop", daemon=True)
        self._loop.start()

    def shutdown(self) -> None:
        if self._listener is None or self._stopping:
            return
        assert self._wake_r is not None and self._wake_w is not None
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._loop is not None:
            self._loop.join()
        for _ in self._workers:
            self._jobs.put(None)
        self._wake_r.close()
        self._wake_w.close()

    # --- the loop thread --------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, _ACCEPT)
        sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        # Insertion order is accept order, hence deadline order: the first is the oldest.
        waiting: dict[socket.socket, _Waiting] = {}
        paused_until: float | None = None
        try:
            while not self._stopping:
                now = time.monotonic()
                if paused_until is not None and now >= paused_until:
                    sel.register(self._listener, selectors.EVENT_READ, _ACCEPT)
                    paused_until = None
                timeouts = [LOG_EVERY_S]
                if waiting:
                    timeouts.append(next(iter(waiting.values())).deadline - now)
                if paused_until is not None:
                    timeouts.append(paused_until - now)
                for key, _ in sel.select(max(0.0, min(timeouts))):
                    if key.data is _ACCEPT:
                        if not self._accept(sel, waiting):
                            sel.unregister(self._listener)
                            paused_until = time.monotonic() + _ACCEPT_PAUSE_S
                    elif key.data is _WAKE:
                        break  # shutdown()
                    else:
                        self._read(sel, waiting, key.fileobj)
                now = time.monotonic()
                while waiting:
                    conn, w = next(iter(waiting.items()))
                    if w.deadline > now:
                        break
                    self._drop(sel, waiting, conn, "read_timeout")
                self._log_turned_away(now)
        finally:
            for conn in waiting:
                _close(conn)
            sel.close()
            self._listener.close()

    def _accept(self, sel: selectors.BaseSelector, waiting: dict[socket.socket, _Waiting]) -> bool:
        """Accept what the backlog holds (a bounded number per turn); False when accepting
        should pause (out of descriptors with nothing left to close, or an unexpected error)."""
        assert self._listener is not None
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                conn, address = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return True
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("event=http_accept_failed server=%s reason=%r", self._name, str(exc))
                    return False
                if not waiting:
                    return False
                self._drop(sel, waiting, next(iter(waiting)), "closed_longest_waiting")
                continue
            if len(waiting) >= self._max_waiting:
                self._drop(sel, waiting, next(iter(waiting)), "closed_longest_waiting")
            conn.setblocking(False)
            waiting[conn] = _Waiting(address, time.monotonic() + self.limits.read_timeout_s)
            sel.register(conn, selectors.EVENT_READ, conn)
        return True

    def _drop(self, sel: selectors.BaseSelector, waiting: dict, conn: socket.socket, why: str) -> None:
        sel.unregister(conn)
        del waiting[conn]
        _close(conn)
        self._turned_away[why] += 1

    def _read(self, sel: selectors.BaseSelector, waiting: dict[socket.socket, _Waiting], conn: socket.socket) -> None:
        w = waiting.get(conn)
        if w is None:  # closed earlier in this turn (for a newer connection)
            return
        try:
            data = conn.recv(self.limits.max_request_bytes + 1 - len(w.head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed (or reset) before its request was complete
            sel.unregister(conn)
            del waiting[conn]
            _close(conn)
            return
        start = max(0, len(w.head) - 3)
        w.head += data
        complete = _HEAD_END.search(w.head, start) is not None
        if not complete and len(w.head) <= self.limits.max_request_bytes:
            return
        sel.unregister(conn)
        del waiting[conn]
        if not complete:
            self._turned_away["too_large_431"] += 1
            _reply_and_close(conn, _TOO_LARGE)
            return
        self._dispatch(conn, w)

    def _dispatch(self, conn: socket.socket, w: _Waiting) -> None:
        with self._lock:
            busy = self._in_flight >= self.limits.max_requests
            if not busy:
                self._in_flight += 1
                # Every request in flight has a worker of its own: none waits behind another.
                if self._in_flight > len(self._workers):
                    worker = threading.Thread(target=self._work, name=f"{self._name}-{len(self._workers)}", daemon=True)
                    self._workers.append(worker)
                    worker.start()
        if busy:
            self._turned_away["busy_503"] += 1
            _reply_and_close(conn, _BUSY)
            return
        self._jobs.put((conn, w.address, bytes(w.head)))

    def _log_turned_away(self, now: float) -> None:
        if self._turned_away == self._logged or now - self._last_log < LOG_EVERY_S:
            return
        self._last_log = now
        new = {k: v - self._logged[k] for k, v in self._turned_away.items()}
        self._logged = dict(self._turned_away)
        # Counts since the previous such line.
        log.warning(
            "event=http_limits_hit server=%s %s max_connections=%d max_requests=%d",
            self._name, " ".join(f"{k}={v}" for k, v in new.items()), self._max_waiting, self.limits.max_requests,
        )

    # --- worker threads ---------------------------------------------------------------------
    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            conn, address, head = job
            try:
                conn.setblocking(True)
                _RequestHandler(conn, address, self, head, time.monotonic() + self.limits.write_timeout_s)
            except OSError:
                pass  # the client went away; nothing to answer
            except Exception:  # a bug: say so, keep the worker
                log.exception("event=http_handler_failed server=%s", self._name)
            finally:
                _close(conn)
                with self._lock:
                    self._in_flight -= 1

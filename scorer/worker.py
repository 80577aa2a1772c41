"""The API's gunicorn worker: gthread, except that no thread ever waits for a client.

Why. gunicorn's gthread worker (27.x, `ThreadWorker.handle`) waits up to 5 s for a new
connection's first byte and then gives the connection to a pool thread, which reads the headers
and lets the app read the body from a blocking socket without a deadline; a kept-alive
connection that turns readable comes back the same way. So clients that send the first bytes of
a request and then wait hold one of the `threads` threads each, for as long as they like: 8 of
them froze /healthz for good, plain or TLS. (Its lingering close, up to 2 s waiting for the
peer's FIN, also runs in the main loop.)

The design, nginx's request buffering on gunicorn's own event loop: the main thread reads each
request whole (TLS handshake, headers, body), non-blocking, before any thread sees it.

- A request has one deadline, `read_timeout_s`, from its first byte (from accept for a new
  connection, so it covers the TLS handshake); a connection still short of a whole request then
  is closed. gunicorn's poller wakes at least once a second, so the deadline holds to ~1 s.
- `Framing` finds where a request ends (Content-Length, or chunked). A request whose body
  exceeds its path's limit (`body_limits`, the app's; 0 for any other path), whose head exceeds
  MAX_HEAD_BYTES, or whose framing is malformed is handed over as it is and its connection
  closed after the answer: the app answers 413 without reading, gunicorn's parser 400.
  `Expect: 100-continue` is answered by the loop, since the body is read here.
- Request bytes held at once (being read, queued or served) are bounded by `held_bytes`: when
  the head of a request with a body over SMALL_REQUEST_BYTES is read, the body's size (its
  Content-Length, or its path's limit when chunked) is reserved, and when it does not fit the
  request waits, off the poller (TCP pushes back on its client), until answered requests free
  enough, first come first served. A request is only ever read once its whole body fits, so
  partial bodies cannot fill the budget and stall each other. Heads and small requests are
  always read, so probes and webhook calls get through a flood of big bodies. Memory stays
  within held_bytes + worker_connections × (MAX_HEAD_BYTES + SMALL_REQUEST_BYTES).
- A pool thread then runs gunicorn's parser and the WSGI app over those bytes: the parser's
  source (`_Buffered`) is the request in memory followed by end-of-stream, never the socket.
  The only socket I/O a thread does is writing the answer, under a timeout (WRITE_TIMEOUT_S).
- Requests for the probe paths (GET/HEAD /healthz, /readyz) run in their own small pool, so no
  number of API requests queues ahead of the kubelet's probe.
- A closing connection lingers for the peer's FIN (gunicorn's close_graceful, RFC 9112 §9.6)
  in the loop, non-blocking.
- The loop is fair to small requests: it accepts every pending connection at once (gunicorn
  accepts one per iteration, so a probe waited behind every connection in the backlog), and
  in each iteration serves the listener, its wake-ups and connections with little read first;
  reading big bodies gets BIG_READS_PER_ITERATION_S per iteration, the rest stay readable for
  the next; each read is one recv(). Every recv() in the loop must take the GIL back from the
  threads, which under CPU load costs up to the switch interval (5 ms) each: reading a flood
  of 2 MiB bodies to the end in each iteration made one iteration last a second, and a probe
  wait for it.
Keep-alive parking, the connection cap (`worker_connections`), graceful stop and the arbiter's
heartbeat stay gunicorn's.

A slow client then costs a socket and its bytes, never a thread. The price: a body is in memory
before the app runs (bounded as above), the loop does per request what a thread did (about 8 %
of the saturated /validate throughput, against gunicorn's own worker serving the same app), and
this module relies on gunicorn's ThreadWorker internals (TConn, enqueue_req, finish_request,
_keepalive_after, the parser's unreader); gunicorn is pinned, and
tests/scorer/test_http_attacks.py attacks the real server with slow, trickling and flooding
clients, plain and TLS.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import time
from collections.abc import Mapping
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn import sock as gsock
from gunicorn import util
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import TConn, ThreadWorker

#: Request line plus headers; a webhook or extender call sends well under 2 KiB.
MAX_HEAD_BYTES = 16 * 1024
#: A chunk-size line (hex size plus extensions).
MAX_CHUNK_LINE = 1024
#: Bytes read per recv() in the loop.
READ_CHUNK = 256 * 1024
#: Writing one answer (at most a few MiB: /score with the explanations of thousands of nodes).
WRITE_TIMEOUT_S = 10.0
#: Threads of the probe lane: the probes are answered in microseconds.
PROBE_THREADS = 1
#: gunicorn's close_graceful: how long and how much a closing connection is drained.
LINGER_S = 2.0
LINGER_MAX_BYTES = 64 * 1024
#: Closing connections drained at once; beyond, they are closed at once.
MAX_LINGERING = 1024
#: A body larger than this needs room in `held_bytes` before it is read, and a request with
#: this much read is read after the small ones in each loop iteration, for
#: BIG_READS_PER_ITERATION_S at most. A Pod's review is usually smaller.
SMALL_REQUEST_BYTES = 32 * 1024
#: Time per loop iteration for reading big requests; the rest wait for the next iteration.
BIG_READS_PER_ITERATION_S = 0.02

HAND_OVER = -1
"""Framing.scan's verdict for a request to hand over as it is, closing the connection after."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Framing:
    """Where the first request in a growing buffer ends, found incrementally: `scan(buf)` is
    called after each read and only looks at bytes it has not seen. Follows the rules of
    gunicorn's parser (RFC 9112 §6) closely enough to buffer a valid request whole; anything
    it does not understand is handed over for gunicorn to refuse."""

    def __init__(self, body_limits: Mapping[str, int], probe_paths: frozenset[str] = frozenset(),
                 max_head: int = MAX_HEAD_BYTES):
        self.body_limits = body_limits
        self.max_head = max_head
        self.probe_paths = probe_paths
        self.max_body = 0
        """The request's path's body limit, once its head is read."""
        self.head_end: int | None = None
        self.probe = False
        """A GET or HEAD of a probe path."""
        self.expect_continue = False
        """The client waits for `100 Continue` before sending the body."""
        self._scanned = 0
        self._length: int | None = None
        self._chunk_at: int | None = None
        self._chunked_body = 0

    def scan(self, buf: bytes | bytearray) -> int | None:
        """The request's end offset when it is whole; None when more bytes are needed;
        HAND_OVER when it is to be handed over as it is (see the module docstring)."""
        if self.head_end is None:
            at = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if at < 0:
                self._scanned = len(buf)
                return HAND_OVER if len(buf) > self.max_head else None
            self.head_end = at + 4
            if self.head_end > self.max_head or not self._head(bytes(buf[:at])):
                return HAND_OVER
        if self._chunk_at is not None:
            return self._chunks(buf)
        end = self.head_end + (self._length or 0)
        return end if len(buf) >= end else None

    def body_size(self) -> int:
        """Once the head is read: the body's size, or its path's limit when chunked."""
        return self.max_body if self._chunk_at is not None else (self._length or 0)

    def _head(self, head: bytes) -> bool:
        """Read the request line and the framing headers; False when they are not understood."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return False
        method, target, version = parts
        path = target.partition("?")[0]
        self.max_body = self.body_limits.get(path, 0)
        lengths, codings = [], []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or name != name.strip() or not name:
                return False
            name, value = name.lower(), value.strip(" \t")
            if name == "content-length":
                lengths.append(value)
            elif name == "transfer-encoding":
                codings += [c.strip(" \t").lower() for c in value.split(",")]
            elif name == "expect" and value.lower() == "100-continue" and version == "HTTP/1.1":
                self.expect_continue = True
        if codings:
            if codings != ["chunked"] or lengths or version != "HTTP/1.1":
                return False
            self._chunk_at = self.head_end
        elif lengths:
            if len(lengths) > 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
                return False
            self._length = int(lengths[0])
            if self._length > self.max_body:
                return False
        self.probe = method in ("GET", "HEAD") and path in self.probe_paths
        return True

    def _chunks(self, buf: bytes | bytearray) -> int | None:
        assert self.head_end is not None and self._chunk_at is not None
        if len(buf) > self.head_end + 2 * self.max_body + self.max_head:
            return HAND_OVER  # mostly framing: not a request worth buffering further
        while True:
            line_end = buf.find(b"\r\n", self._chunk_at)
            if line_end < 0:
                return HAND_OVER if len(buf) - self._chunk_at > MAX_CHUNK_LINE else None
            text = bytes(buf[self._chunk_at:line_end]).partition(b";")[0].strip(b" \t")
            try:
                size = int(text, 16) if text and text.isalnum() else -1
            except ValueError:
                size = -1
            if size < 0:
                return HAND_OVER
            if size == 0:
                end = buf.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return HAND_OVER if len(buf) - line_end > self.max_head else None
                return end + 4
            data_at = line_end + 2
            if self._chunked_body + size > self.max_body:
                # Over the limit: hand over once one byte more than the limit is here, so the
                # app reads past its limit and answers 413.
                return HAND_OVER if len(buf) > data_at + self.max_body - self._chunked_body else None
            if len(buf) < data_at + size + 2:
                return None
            if buf[data_at + size:data_at + size + 2] != b"\r\n":
                return HAND_OVER
            self._chunked_body += size
            self._chunk_at = data_at + size + 2


class _Buffered:
    """The socket as gunicorn's parser sees it in a pool thread: the request the loop read,
    then end of stream. A thread never waits for a client."""

    def __init__(self) -> None:
        self._data = b""
        self._at = 0

    def load(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def recv(self, size: int) -> bytes:
        chunk = self._data[self._at:self._at + size]
        self._at += len(chunk)
        return chunk


class _Request(Request):
    # The loop answered `Expect: 100-continue` before reading the body; gunicorn must not again.
    _policy_expect_continue = False


class _Parser(RequestParser):
    mesg_class = _Request


class _Conn(TConn):
    """gunicorn's connection plus what the loop keeps while it reads a request."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, worker: ApiWorker):
        super().__init__(cfg, sock, client, server)
        self.data_ready = True  # gunicorn's wait for the first byte is the loop's job here
        self.worker = worker
        self.staged = bytearray()
        self.source = _Buffered()
        self.framing: Framing | None = None
        self.deadline = 0.0
        self.held = 0
        self.admitted = False
        self.handshaking = False
        self.events = selectors.EVENT_READ
        self.ready = False
        self.probe = False
        self.close_after = False
        self.sent_continue = False

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.linger(self.sock)
        else:
            util.close(self.sock)


class ApiWorker(ThreadWorker):
    """See the module docstring. `serve` makes a subclass with the settings below."""

    read_timeout_s: float = 10.0
    body_limits: Mapping[str, int] = {}
    held_bytes: int = 48 << 20
    probe_paths: frozenset[str] = frozenset()

    def init_process(self) -> None:
        self._reading: dict[_Conn, None] = {}  # insertion order is deadline order
        self._waiting: dict[_Conn, None] = {}  # big requests waiting for room, oldest first
        self._lingering: dict[socket.socket, tuple[float, int]] = {}
        self._held = 0
        self._probe_pool = futures.ThreadPoolExecutor(max_workers=PROBE_THREADS, thread_name_prefix="probe")
        super().init_process()  # runs the loop

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._probe_pool.shutdown(wait=False)
            for sock in list(self._lingering):
                self._unlinger(sock)

    # --- gunicorn's entry points ---------------------------------------------------------------
    def accept(self, listener: socket.socket) -> None:
        """Accept every pending connection, not one per loop iteration as gunicorn does: a
        connection waiting in the listen backlog has no deadline and no lane, so a probe
        queued behind many clients would wait for as many iterations of the loop."""
        while self.nr_conns < self.worker_connections:
            try:
                client_sock, client = listener.accept()
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise
                return
            self.nr_conns += 1
            conn = _Conn(self.cfg, client_sock, client, listener.getsockname(), self)
            if self.cfg.is_ssl:
                try:
                    # Wrapped without a handshake (do_handshake_on_connect off): the loop does it.
                    conn.sock = gsock.ssl_wrap_socket(conn.sock, self.cfg)
                except (OSError, ValueError):
                    self.nr_conns -= 1
                    util.close(client_sock)
                    continue
                conn.handshaking = True
            self.enqueue_req(conn)

    def enqueue_req(self, conn: _Conn) -> None:  # type: ignore[override]
        """A connection with a whole request goes to a pool; any other is read first."""
        if not conn.ready:
            self._start_reading(conn)
            return
        conn.ready = False
        pool = self._probe_pool if conn.probe else self.tpool
        future = pool.submit(self.handle, conn)
        future.add_done_callback(lambda done: self.method_queue.defer(self.finish_request, conn, done))

    def finish_request(self, conn: _Conn, fs: Any) -> None:  # type: ignore[override]
        self._release(conn)
        super().finish_request(conn, fs)

    def handle_request(self, req: Any, conn: _Conn) -> bool:  # type: ignore[override]
        conn.sock.settimeout(WRITE_TIMEOUT_S)  # gunicorn made it blocking without a deadline
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.debug("Closing a connection that does not read its answer.")
            return False

    def _keepalive_after(self, conn: _Conn, keepalive: bool) -> bool:  # type: ignore[override]
        if conn.close_after:
            return False
        keep = super()._keepalive_after(conn, keepalive)
        if keep and conn.staged:
            # Bytes of the next request read with this one: gunicorn then re-enqueues the
            # connection at once instead of waiting for the socket to turn readable.
            conn.parser.unreader.unread(bytes(conn.staged))
            conn.staged.clear()
        return keep

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            return
        big_until = None
        for key, _ in sorted(events, key=self._dispatch_order):
            if self._is_big(key.data):
                if big_until is None:
                    big_until = time.monotonic() + BIG_READS_PER_ITERATION_S
                elif time.monotonic() > big_until:
                    break  # still readable: served first thing in a later iteration
            key.data(key.fileobj)

    def _dispatch_order(self, event: tuple[selectors.SelectorKey, int]) -> tuple[int, int]:
        """Listener, wake-ups, kept-alive and closing connections first, then requests being
        read by how much is read already."""
        conn = self._reading_conn(event[0].data)
        return (0, 0) if conn is None else (1, len(conn.staged))

    def _is_big(self, callback: Any) -> bool:
        conn = self._reading_conn(callback)
        return conn is not None and len(conn.staged) >= SMALL_REQUEST_BYTES

    def _reading_conn(self, callback: Any) -> _Conn | None:
        if isinstance(callback, partial) and callback.func == self._on_readable:
            return callback.args[0]
        return None

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self._reading:
            conn = next(iter(self._reading))
            if conn.deadline > now:
                break
            self._drop(conn)
        while self._lingering:
            sock, (deadline, _) = next(iter(self._lingering.items()))
            if deadline > now:
                break
            self._unlinger(sock)

    def _cap_keepalive(self, deadline: float) -> None:
        super()._cap_keepalive(deadline)
        for conn in self._reading:
            conn.deadline = min(conn.deadline, deadline)

    # --- reading a request in the loop ----------------------------------------------------------
    def on_client_socket_readable(self, conn: _Conn, client: Any) -> None:  # type: ignore[override]
        """A kept-alive connection's next request: read it now, and keep its registration."""
        self.keepalived_conns.remove(conn)
        self._start_reading(conn, registered=True)

    def _start_reading(self, conn: _Conn, registered: bool = False) -> None:
        """Read `conn`'s next request in the loop, from what is already there: a new or kept-alive
        connection is usually readable already, so it is read at once, not one iteration later."""
        if conn.parser is not None:
            conn.staged[:0] = conn.parser.unreader.take_buffered()
            self._charge(conn, len(conn.staged) - conn.held)
        conn.framing = Framing(self.body_limits, self.probe_paths)
        conn.deadline = time.monotonic() + self.read_timeout_s
        conn.sent_continue = conn.close_after = conn.admitted = False
        conn.events = selectors.EVENT_READ
        callback = partial(self._on_readable, conn)
        try:
            conn.sock.setblocking(False)
            if registered:
                self.poller.modify(conn.sock, conn.events, callback)
            else:
                self.poller.register(conn.sock, conn.events, callback)
        except (OSError, ValueError, KeyError):
            self.nr_conns -= 1
            util.close(conn.sock)
            return
        self._reading[conn] = None
        if conn.staged:
            self._advance(conn)
        else:
            self._on_readable(conn)

    def _on_readable(self, conn: _Conn, _fileobj: Any = None) -> None:
        """One recv() per call (and what TLS already decrypted, which needs no system call):
        each recv() takes the GIL back from the threads, so a call is kept short and the loop
        turns (see `wait_for_and_dispatch_events`)."""
        try:
            if conn.handshaking:
                try:
                    conn.sock.do_handshake()
                except ssl.SSLWantWriteError:
                    self._watch(conn, selectors.EVENT_WRITE)
                    return
                except ssl.SSLWantReadError:
                    self._watch(conn, selectors.EVENT_READ)
                    return
                conn.handshaking = False
                self._watch(conn, selectors.EVENT_READ)
            chunk = conn.sock.recv(READ_CHUNK)
            if not chunk:
                self._drop(conn)
                return
            pending = conn.sock.pending() if isinstance(conn.sock, ssl.SSLSocket) else 0
            while pending:
                chunk += conn.sock.recv(pending)
                pending = conn.sock.pending()
        except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            return
        except (OSError, ValueError):  # ssl.SSLError is an OSError; a write wanted here is one too
            self._drop(conn)
            return
        conn.staged += chunk
        self._charge(conn, len(conn.staged) - conn.held)
        self._advance(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self.poller.modify(conn.sock, events, partial(self._on_readable, conn))

    def _advance(self, conn: _Conn) -> None:
        assert conn.framing is not None
        end = conn.framing.scan(conn.staged)
        if end is None:
            if not conn.admitted and conn.framing.head_end is not None and not self._admit(conn):
                self._wait(conn)
                return
            if conn.framing.expect_continue and not conn.sent_continue:
                conn.sent_continue = True
                try:
                    conn.sock.send(_CONTINUE)
                except (OSError, ValueError):
                    self._drop(conn)
            return
        if end == HAND_OVER:
            end, conn.close_after = len(conn.staged), True
        conn.probe = conn.framing.probe and not conn.close_after
        if end == len(conn.staged):
            conn.source.load(bytes(conn.staged))
            conn.staged.clear()
        else:  # the start of a pipelined request stays
            conn.source.load(bytes(conn.staged[:end]))
            del conn.staged[:end]
        if conn.parser is None:
            conn.parser = _Parser(self.cfg, conn.source, conn.client)
        self._stop_reading(conn)
        conn.ready = True
        self.enqueue_req(conn)

    def _stop_reading(self, conn: _Conn) -> None:
        del self._reading[conn]
        if self._waiting.pop(conn, False) is None:
            return  # not on the poller
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _admit(self, conn: _Conn) -> bool:
        """Reserve room for the body whose head was just read; False when it does not fit
        (nor is it first in line with nothing else big held)."""
        assert conn.framing is not None and conn.framing.head_end is not None
        body = conn.framing.body_size()
        if body <= SMALL_REQUEST_BYTES:
            conn.admitted = True
            return True
        room = conn.framing.head_end + body - conn.held
        if (self._waiting and next(iter(self._waiting)) is not conn) or self._held + room > self.held_bytes:
            return False
        conn.admitted = True
        self._charge(conn, room)
        return True

    def _wait(self, conn: _Conn) -> None:
        if conn not in self._waiting:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            self._waiting[conn] = None

    def _admit_waiting(self) -> None:
        while self._waiting:
            conn = next(iter(self._waiting))
            if not self._admit(conn):
                return
            del self._waiting[conn]
            try:
                self.poller.register(conn.sock, conn.events, partial(self._on_readable, conn))
            except (OSError, ValueError, KeyError):
                self._drop(conn)
                continue
            self._advance(conn)

    def _drop(self, conn: _Conn) -> None:
        """Close a connection that is being read: a client that is too slow, sent too much or
        went away. No answer: it has not asked a whole question."""
        if conn in self._reading:
            self._stop_reading(conn)
        self._release(conn)
        self.nr_conns -= 1
        util.close(conn.sock)

    def _charge(self, conn: _Conn, size: int) -> None:
        if size > 0:
            conn.held += size
            self._held += size

    def _release(self, conn: _Conn) -> None:
        self._held -= conn.held
        conn.held = 0
        if self._waiting:
            self._admit_waiting()

    # --- closing -----------------------------------------------------------------------------------
    def linger(self, sock: socket.socket) -> None:
        """Close after the answer: send FIN, then drain what the peer still sends until its FIN,
        LINGER_S or LINGER_MAX_BYTES, without blocking the loop (see gunicorn's close_graceful)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            util.close(sock)
            return
        if len(self._lingering) >= MAX_LINGERING:
            util.close(sock)
            return
        self._lingering[sock] = (time.monotonic() + LINGER_S, 0)
        self.poller.register(sock, selectors.EVENT_READ, self._on_linger_readable)

    def _on_linger_readable(self, sock: socket.socket) -> None:
        deadline, drained = self._lingering[sock]
        try:
            data = sock.recv(LINGER_MAX_BYTES)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except OSError:
            data = b""
        if data and drained + len(data) < LINGER_MAX_BYTES:
            self._lingering[sock] = (deadline, drained + len(data))
        else:  # the peer's FIN, an error, or enough drained
            self._unlinger(sock)

    def _unlinger(self, sock: socket.socket) -> None:
        self._lingering.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)
        util.close(sock)

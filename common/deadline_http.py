"""`DeadlineSession`: a requests Session whose `timeout` bounds the whole answer, not each read.

Why: requests (urllib3, http.client) applies `timeout` to the connect and to every single socket
read, so a server that trickles its answer (one byte a second, headers included) keeps a
request going for as long as it likes: a 2 s timeout once held the scorer's start for ~45 s
against such a Prometheus stand-in, and a tick's queries would each take minutes. The scorer
and the scheduler query Prometheus (and the scheduler the scorer) on a fixed cadence and must
get an answer, or a failure, within a bound.

How: each request starts a watchdog timer of `timeout` seconds. The connections of this
session's pools register their socket with the request running on their thread (a new
connection when it is created, a pooled one when it sends); when the timer fires first, the
socket is shut down (through a duplicate of its descriptor, so plain and TLS sockets alike,
whichever object owns it), the blocked read returns, and the request raises
`requests.ReadTimeout`. The connect itself is bounded by the same `timeout` (requests' connect
timeout). The sockets are reached through urllib3's `HTTPConnection._new_conn` and `request`,
there since urllib3 1.x; tests/scorer/test_deadline_http.py holds a trickling server to it.

Threads: one Session per calling thread at a time (as with requests); the timer runs in its
own short-lived thread, cancelled as soon as the answer is complete.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_running = threading.local()  # .watch: the _Watch of the request this thread is sending


class _Watch:
    """The deadline of one request: the sockets it used and whether the deadline struck."""

    def __init__(self, deadline_s: float):
        self._lock = threading.Lock()
        self._guards: list[socket.socket] = []
        self._over = False
        self.struck = False
        self._timer = threading.Timer(deadline_s, self._strike)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def guard(self, sock: socket.socket | None) -> None:
        """Watch `sock` (a duplicate of its descriptor: shutting that down ends the connection
        for every owner of the socket, and closing it later closes nothing else)."""
        if sock is None:
            return
        with self._lock:
            if self._over:
                return
            try:  # fromfd, not dup(): an SSLSocket refuses dup()
                dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except (OSError, ValueError):
                return
            self._guards.append(dup)
            if self.struck:
                _shutdown(dup)

    def _strike(self) -> None:
        with self._lock:
            if self._over:
                return
            self.struck = True
            for dup in self._guards:
                _shutdown(dup)

    def finish(self) -> None:
        with self._lock:
            self._over = True
            self._timer.cancel()
            for dup in self._guards:
                dup.close()
            self._guards.clear()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """Mixed into urllib3's connections: hand the socket to the running request's watch."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        watch = getattr(_running, "watch", None)
        if watch is not None:
            watch.guard(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_running, "watch", None)
        if watch is not None:
            watch.guard(getattr(self, "sock", None))  # a pooled connection: no _new_conn this time
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


class DeadlineSession(requests.Session):
    """A Session whose `timeout=` (one number, seconds) is the deadline of the whole answer:
    connect, request, status line, headers and body. Past it: `requests.ReadTimeout`."""

    def __init__(self) -> None:
        super().__init__()
        for prefix in ("http://", "https://"):
            self.mount(prefix, _Adapter())

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        timeout = kwargs.get("timeout")
        if not isinstance(timeout, int | float):
            raise TypeError("DeadlineSession needs timeout=<seconds> on every request")
        watch = _Watch(float(timeout))
        _running.watch = watch
        watch.start()
        try:
            return super().request(method, url, *args, **kwargs)
        except requests.RequestException as exc:
            if watch.struck:
                raise requests.ReadTimeout(f"no complete answer within {timeout:g}s from {url!r}") from exc
            raise
        finally:
            _running.watch = None
            watch.finish()

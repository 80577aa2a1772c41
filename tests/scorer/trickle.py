"""A Prometheus stand-in that can trickle its answers: a tiny socket server for deadline tests.

Each request head read is answered with `answer(method, target)` (a complete HTTP/1.1 response;
`keep_alive` serves the next request on the same connection, as a pooled client expects). While
`trickle` holds (a bool, or a predicate on the request target), the answer goes out one byte per
`byte_every_s` (1 s: "1 byte/s") after its first `fast_prefix` bytes (0: the status line and
headers trickle too), so a client whose timeout is per read waits forever; otherwise all at
once, after `hold_s` (a slow but finite server). `ssl_context` serves TLS. Every connection's
request target and the seconds from its request to the client hanging up (or the answer's end)
are kept in `served`, so a test can hold each query to its deadline. Written on raw sockets
because a `http.server` handler cannot send a status line byte by byte.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support import wait_for


@dataclass
class Served:
    target: str
    seconds: float | None = None  # None while the connection is open
    trickled: bool = False


def http_response(body: bytes, status: str = "200 OK", content_type: str = "application/json", *,
                  keep_alive: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode() + body


def prometheus_answer(nodes: tuple[str, ...]) -> Callable[[str, str], bytes]:
    """Answers every instant query with value 1 for each node, in the tick query's shape
    (`count_values`: one fresh series per node); range queries with an empty
    matrix."""

    def answer(method: str, target: str) -> bytes:
        parts = urlsplit(target)
        params = parse_qs(parts.query)
        if parts.path == "/api/v1/query_range":
            return http_response(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}})
                                 .encode())
        at = float(params.get("time", [str(time.time())])[0])
        result = []
        for node in nodes:
            result.append({"metric": {"node": node, "ksense_value": "1"}, "value": [at, "1"]})
        return http_response(json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
                             .encode())

    return answer


class TrickleServer:
    def __init__(self, answer: Callable[[str, str], bytes], *, trickle: Any = True, byte_every_s: float = 1.0,
                 fast_prefix: int = 0, hold_s: float = 0.0, keep_alive: bool = False,
                 ssl_context: ssl.SSLContext | None = None):
        self.answer = answer
        self.trickle = trickle
        self.hold_s = hold_s
        self.byte_every_s = byte_every_s
        self.fast_prefix = fast_prefix
        self.keep_alive = keep_alive
        self._ssl = ssl_context
        self.served: list[Served] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def open_connections(self) -> list[Served]:
        with self._lock:
            return [s for s in self.served if s.seconds is None]

    def finished(self) -> list[Served]:
        with self._lock:
            return [s for s in self.served if s.seconds is not None]

    def settled(self, deadline_s: float = 2.0) -> list[Served]:
        """Every request served so far, once the server has seen each connection end."""
        wait_for(lambda: not self.open_connections(), deadline_s, "the stand-in to see the client hang up")
        with self._lock:
            return list(self.served)

    def close(self) -> None:
        self._stop.set()
        self._accept.join()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in list(self._threads):
            t.join(timeout=5)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._ssl is not None:
                conn.settimeout(5)
                conn = self._ssl.wrap_socket(conn, server_side=True)
            with conn:
                while self._answer_one(conn) and self.keep_alive:
                    pass
        except OSError:
            pass

    def _answer_one(self, conn: socket.socket) -> bool:
        """One request and its answer; False when the connection is done."""
        head = b""
        conn.settimeout(None if self.keep_alive else 5)
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return False
            head += chunk
        started = time.monotonic()
        method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        trickle = self.trickle(target) if callable(self.trickle) else self.trickle
        record = Served(target, trickled=bool(trickle))
        with self._lock:
            self.served.append(record)
        data = self.answer(method, target)
        try:
            if not record.trickled:
                if self.hold_s and self._stop.wait(self.hold_s):
                    return False
                conn.sendall(data)
                return True
            conn.sendall(data[:self.fast_prefix])
            for i in range(self.fast_prefix, len(data)):
                # Wait a byte's time, but see the client hang up at once.
                readable, _, _ = select.select([conn], [], [], self.byte_every_s)
                if self._stop.is_set() or (readable and not conn.recv(4096)):
                    return False
                conn.sendall(data[i:i + 1])
            return True
        finally:
            record.seconds = time.monotonic() - started

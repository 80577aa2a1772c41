"""The bounded WSGI server's limits, each met by a real client on a real socket (issue #10):
503 beyond max_requests, 431 beyond max_request_bytes, the read and write deadlines, and the
longest-waiting connection closed for a new one."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from common.httpserver import BoundedWsgiServer, Limits
from tests.support import wait_for

BIG = b"x" * (64 << 20)  # far more than loopback socket buffers hold


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        environ["test.release"].wait(10)
    body = BIG if path == "/big" else b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def serve() -> Iterator:
    servers = []
    release = threading.Event()

    def start(**limits) -> BoundedWsgiServer:
        def with_release(environ, start_response):
            environ["test.release"] = release
            return app(environ, start_response)

        server = BoundedWsgiServer(with_release, host="127.0.0.1", port=0, limits=Limits(**limits))
        server.start()
        servers.append(server)
        return server

    start.release = release
    yield start
    release.set()
    for server in servers:
        server.shutdown()


def send(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return s


def answer(s: socket.socket, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    s.close()
    return b"".join(chunks)


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def test_a_request_beyond_max_requests_is_answered_503_at_once(serve):
    server = serve(max_requests=2)
    slow = [send(server.port, "/slow") for _ in range(2)]
    wait_for(lambda: server._in_flight == 2, 5, "two requests in flight")
    started = time.monotonic()
    assert status(answer(send(server.port, "/fast"))) == 503
    assert time.monotonic() - started < 0.5
    serve.release.set()
    assert [status(answer(s)) for s in slow] == [200, 200]
    assert status(answer(send(server.port, "/fast"))) == 200
    assert len(server._workers) == 2


def test_a_request_head_over_max_request_bytes_gets_431(serve):
    server = serve(max_request_bytes=1024)
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 2000 + b"\r\n\r\n")
    assert status(answer(s)) == 431
    assert status(answer(send(server.port, "/"))) == 200


def test_an_incomplete_head_is_closed_at_the_read_deadline_without_a_thread(serve):
    server = serve(read_timeout_s=0.5)
    threads = threading.active_count()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET / HTTP/1.1\r\n")
    started = time.monotonic()
    assert threading.active_count() == threads
    assert answer(s, timeout=5) == b""
    assert 0.4 < time.monotonic() - started < 2.0


def test_a_new_connection_closes_the_longest_waiting_one_at_max_connections(serve):
    server = serve(max_connections=4)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    wait_for(lambda: status(answer(send(server.port, "/"))) == 200, 5, "an answer at the limit")
    # The request above took the oldest idle connection's place: the server closed it.
    assert answer(idle[0], timeout=2) == b""
    for s in idle[1:]:
        s.close()


def test_a_client_that_does_not_read_holds_a_worker_no_longer_than_the_write_deadline(serve):
    server = serve(max_requests=1, write_timeout_s=0.5)
    stuck = send(server.port, "/big")  # never read
    wait_for(lambda: server._in_flight == 1, 5, "the big answer in flight")
    started = time.monotonic()
    # The only worker is busy: 503 until the write deadline frees it, then 200.
    wait_for(lambda: status(answer(send(server.port, "/"))) == 200, 5, "the worker freed")
    assert time.monotonic() - started < 1.5
    stuck.close()


def test_shutdown_before_start_is_a_no_op_and_shutdown_closes_the_port(serve):
    server = BoundedWsgiServer(app, host="127.0.0.1", port=0)
    server.shutdown()
    server.start()
    port = server.port
    server.shutdown()
    server.shutdown()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)

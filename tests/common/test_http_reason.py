"""common/http_reason.py: each kind of failure a real request can end in gets its reason.

Real requests against real sockets on localhost (a closed port, a listener that never answers,
a server answering 503 or garbage); about 0.5 s."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from common.http_reason import BAD_RESPONSE, TIMEOUT, UNREACHABLE, failure_reason, status_reason


def _serve_once(listener: socket.socket, answer: bytes) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.recv(65536)
        conn.sendall(answer)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s


def _url(s: socket.socket) -> str:
    return f"http://127.0.0.1:{s.getsockname()[1]}/"


def _raised(call) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("no exception")


def test_closed_port_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = _url(s)  # bound, never listening: connection refused
    assert failure_reason(_raised(lambda: requests.get(url, timeout=2))) == UNREACHABLE


def test_silent_server_is_a_timeout(listener):
    # Accepted by the kernel's backlog, never answered.
    assert failure_reason(_raised(lambda: requests.get(_url(listener), timeout=0.2))) == TIMEOUT


def _answer(listener: socket.socket, answer: bytes) -> requests.Response:
    thread = threading.Thread(target=_serve_once, args=(listener, answer))
    thread.start()
    try:
        return requests.get(_url(listener), timeout=5)
    finally:
        thread.join(5)


def test_error_status_is_http_and_its_code(listener):
    resp = _answer(listener, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert failure_reason(_raised(resp.raise_for_status)) == status_reason(503) == "http_503"


def test_garbage_body_is_a_bad_response(listener):
    resp = _answer(listener, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    assert failure_reason(_raised(resp.json)) == BAD_RESPONSE
    assert failure_reason(KeyError("data")) == BAD_RESPONSE

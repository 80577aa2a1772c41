"""scorer.worker.Framing, in-process: where a request ends, found as its bytes arrive.

The worker's behaviour against real clients is tests/scorer/test_http_attacks.py's; these pin
the framing rules themselves, byte by byte where it matters (the loop calls `scan` after every
read, and a trickling client delivers one byte per read).
"""

from __future__ import annotations

import pytest

from scorer.worker import HAND_OVER, MAX_HEAD_BYTES, Framing

PROBES = frozenset({"/healthz", "/readyz"})


def limits(max_body: int) -> dict[str, int]:
    return {"/validate": max_body}


def scan_bytewise(data: bytes, max_body: int = 1000) -> tuple[int | None, Framing]:
    """Feed `data` one byte at a time; the first verdict that is not None (or None)."""
    framing = Framing(limits(max_body), PROBES)
    buf = bytearray()
    for byte in data:
        buf.append(byte)
        verdict = framing.scan(buf)
        if verdict is not None:
            return verdict, framing
    return None, framing


def post(body: bytes, *headers: str) -> bytes:
    head = "".join(h + "\r\n" for h in headers)
    return f"POST /validate HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body


GET = b"GET /score HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (GET, len(GET)),
        (GET + b"GET /healthz", len(GET)),  # pipelined: the first request ends where it ends
        (post(b"{}", "Content-Length: 2"), len(post(b"{}", "Content-Length: 2"))),
        (post(b"{}", "Content-Length: 2") + b"POST", len(post(b"{}", "Content-Length: 2"))),
        (post(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
         len(post(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"))),
        (post(b"2;ext=1\r\n{}\r\n1\r\n \r\n0\r\nTrailer: t\r\n\r\n", "transfer-encoding:  Chunked"),
         len(post(b"2;ext=1\r\n{}\r\n1\r\n \r\n0\r\nTrailer: t\r\n\r\n", "transfer-encoding:  Chunked"))),
    ],
)
def test_a_whole_request_ends_where_it_ends_however_it_arrives(data, end):
    assert Framing(limits(1000), PROBES).scan(bytearray(data)) == end
    assert scan_bytewise(data)[0] == end


@pytest.mark.parametrize(
    "data",
    [
        b"GET /score HTTP/1.1\r\nHost: x\r\n",
        post(b"{", "Content-Length: 2"),
        post(b"2\r\n{}\r\n", "Transfer-Encoding: chunked"),
        post(b"2\r\n{}\r\n0\r\n", "Transfer-Encoding: chunked"),
        post(b"5\r\n{}", "Transfer-Encoding: chunked"),
    ],
)
def test_an_unfinished_request_waits_for_more(data):
    assert Framing(limits(1000), PROBES).scan(bytearray(data)) is None


@pytest.mark.parametrize(
    "data",
    [
        post(b"", "Content-Length: 1001"),  # over the largest body: the app refuses it unread
        post(b"{}", "Content-Length: 2", "Content-Length: 2"),
        post(b"{}", "Content-Length: +2"),
        post(b"{}", "Content-Length: 2", "Transfer-Encoding: chunked"),
        post(b"{}", "Transfer-Encoding: gzip, chunked"),
        post(b"{}", "Transfer-Encoding: chunked, chunked"),
        post(b"zz\r\n", "Transfer-Encoding: chunked"),
        post(b"2\r\n{}xx", "Transfer-Encoding: chunked"),  # no CRLF after the chunk's data
        b"POST /validate HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /score\r\n\r\n",
        b"GET /score HTTP/2.0\r\n\r\n",
        b"GET /score HTTP/1.1\r\nBad header\r\n\r\n",
        b"GET /score HTTP/1.1\r\nSpace : x\r\n\r\n",
        b"GET /" + b"a" * MAX_HEAD_BYTES + b" HTTP/1.1\r\n",  # a head that never ends
    ],
)
def test_what_is_not_understood_is_handed_over_as_it_is(data):
    assert Framing(limits(1000), PROBES).scan(bytearray(data)) == HAND_OVER


def test_a_chunked_body_over_the_limit_is_handed_over_one_byte_past_it():
    """The app reads one byte more than its limit to answer 413, so that byte must be there."""
    head = post(b"", "Transfer-Encoding: chunked")
    data = head + b"800\r\n" + b"x" * 0x800
    cut = len(head) + len(b"800\r\n") + 1000
    assert Framing(limits(1000), PROBES).scan(bytearray(data[:cut])) is None
    assert Framing(limits(1000), PROBES).scan(bytearray(data[:cut + 1])) == HAND_OVER


def test_many_tiny_chunks_are_not_buffered_without_end():
    data = post(b"1\r\nx\r\n" * 1000, "Transfer-Encoding: chunked")
    assert Framing(limits(100), PROBES).scan(bytearray(data)) == HAND_OVER  # 100 bytes of body passed long ago


@pytest.mark.parametrize(
    ("request_line", "probe"),
    [("GET /healthz HTTP/1.1", True), ("HEAD /readyz?verbose HTTP/1.1", True), ("POST /healthz HTTP/1.1", False),
     ("GET /score HTTP/1.1", False), ("GET /healthz/ HTTP/1.1", False)],
)
def test_probes_are_recognised(request_line, probe):
    framing = Framing(limits(1000), PROBES)
    assert framing.scan(bytearray(request_line.encode() + b"\r\n\r\n")) is not None
    assert framing.probe is probe


def test_each_path_has_its_limit_and_others_have_none():
    framing = Framing({"/validate": 10, "/filter": 20}, PROBES)
    assert framing.scan(bytearray(post(b"x" * 11, "Content-Length: 11"))) == HAND_OVER
    head = b"POST /filter HTTP/1.1\r\nContent-Length: 11\r\n\r\n"
    assert Framing({"/validate": 10, "/filter": 20}, PROBES).scan(bytearray(head + b"x" * 11)) == len(head) + 11
    score = b"GET /score HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
    assert Framing({"/validate": 10}, PROBES).scan(bytearray(score)) == HAND_OVER


def test_expect_100_continue_is_noticed_before_the_body():
    verdict, framing = scan_bytewise(post(b"", "Content-Length: 2", "Expect: 100-continue"))
    assert verdict is None and framing.expect_continue


def test_the_body_size_is_known_from_the_head():
    """What the worker reserves before reading a big body: its length, or the path's limit."""
    sized = Framing(limits(1000), PROBES)
    assert sized.scan(bytearray(post(b"", "Content-Length: 700"))) is None and sized.body_size() == 700
    chunked = Framing(limits(1000), PROBES)
    assert chunked.scan(bytearray(post(b"", "Transfer-Encoding: chunked"))) is None and chunked.body_size() == 1000
    bodiless = Framing(limits(1000), PROBES)
    assert bodiless.scan(bytearray(GET)) == len(GET) and bodiless.body_size() == 0

"""DeadlineSession (common/deadline_http.py) against a server trickling 1 byte/s on a real
socket: the whole answer — status line, headers, body; a fresh or a pooled connection; plain
HTTP or TLS — is bounded by `timeout`, and the server sees the connection closed at the
deadline. Plain requests, whose timeout is per read, is shown waiting past it."""

from __future__ import annotations

import ssl
import threading
import time

import pytest
import requests
import trustme

from common.deadline_http import DeadlineSession
from tests.scorer.trickle import TrickleServer, http_response
from tests.support import wait_for

DEADLINE_S = 0.6
#: What "a little" over the deadline may be: thread wake-up and the socket shutdown, on a busy
#: 2-core machine.
SLACK_S = 0.4
BODY = b'{"status": "success"}'


def fixed(body: bytes = BODY, *, keep_alive: bool = False):
    return lambda method, target: http_response(body, keep_alive=keep_alive)


@pytest.fixture
def servers():
    started: list[TrickleServer] = []

    def start(*args, **kwargs) -> TrickleServer:
        server = TrickleServer(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def timed(call):
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except requests.RequestException as exc:
        return exc, time.monotonic() - started


def test_a_trickled_status_line_and_headers_end_at_the_deadline(servers):
    server = servers(fixed(), byte_every_s=0.05)  # 20 bytes/s: ~5 s for the answer
    got, took = timed(lambda: DeadlineSession().get(server.url, timeout=DEADLINE_S))
    assert isinstance(got, requests.ReadTimeout), got
    assert DEADLINE_S - 0.05 <= took < DEADLINE_S + SLACK_S
    (served,) = server.settled()
    assert served.seconds < DEADLINE_S + SLACK_S


def test_a_trickled_body_ends_at_the_deadline_and_per_read_timeouts_do_not(servers):
    answer = http_response(BODY)
    server = servers(fixed(), fast_prefix=answer.index(b"\r\n\r\n") + 4, byte_every_s=0.1)
    got, took = timed(lambda: DeadlineSession().get(server.url, timeout=DEADLINE_S))
    assert isinstance(got, requests.ReadTimeout), got
    assert took < DEADLINE_S + SLACK_S
    # The same answer through a plain Session: every read comes within its timeout, so it waits
    # for the whole trickle (21 bytes at 10/s ≈ 2.1 s), far past the same timeout.
    got, took = timed(lambda: requests.Session().get(server.url, timeout=DEADLINE_S))
    assert got.status_code == 200 and took > 3 * DEADLINE_S


def test_a_pooled_connection_is_watched_too(servers):
    server = servers(fixed(keep_alive=True), trickle=False, keep_alive=True, byte_every_s=0.05)
    session = DeadlineSession()
    first = session.get(server.url, timeout=DEADLINE_S)
    assert first.status_code == 200 and first.content == BODY
    server.trickle = True
    got, took = timed(lambda: session.get(server.url, timeout=DEADLINE_S))
    assert isinstance(got, requests.ReadTimeout), got
    assert took < DEADLINE_S + SLACK_S
    assert len(server.served) == 2  # both requests went over the one kept-alive connection
    server.trickle = False
    assert session.get(server.url, timeout=DEADLINE_S).content == BODY  # and the session recovers


def test_tls_answers_are_bounded_alike(servers, tmp_path):
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = servers(fixed(), byte_every_s=0.05, ssl_context=ctx)
    got, took = timed(lambda: DeadlineSession().get(server.url, timeout=DEADLINE_S, verify=str(ca_file)))
    assert isinstance(got, requests.ReadTimeout), got
    assert took < DEADLINE_S + SLACK_S
    server.trickle = False
    assert DeadlineSession().get(server.url, timeout=DEADLINE_S, verify=str(ca_file)).content == BODY


def test_a_quick_answer_leaves_no_timer_behind(servers):
    server = servers(fixed(), trickle=False)
    before = threading.active_count()
    session = DeadlineSession()
    for _ in range(20):
        assert session.get(server.url, timeout=DEADLINE_S).content == BODY
    wait_for(lambda: threading.active_count() <= before, 2, "the cancelled timers' threads to end")


def test_other_failures_keep_their_type(servers):
    with pytest.raises(requests.ConnectionError) as info:
        DeadlineSession().get("http://127.0.0.1:9", timeout=DEADLINE_S)
    assert not isinstance(info.value, requests.Timeout)
    with pytest.raises(TypeError):
        DeadlineSession().get("http://127.0.0.1:9")  # no deadline: refused, not unbounded

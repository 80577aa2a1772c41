"""The pod name cache (exporter/pods/kubenames.py) against the fake API server over real HTTP:
list + watch of this node's pods, 410 -> relist, the API down or refusing -> names kept and
`available` false, then back; the bound; the token re-read before each connection."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from exporter.pods import kubenames
from tests.kubeapi import factories
from tests.kubeapi.server import KubeAPIServer
from tests.scorer.trickle import TrickleServer, http_response
from tests.support import wait_for

NODE = "node-a"


@pytest.fixture
def server():
    with KubeAPIServer() as s:
        yield s


def _pod(server: KubeAPIServer, name: str, *, node: str = NODE, namespace: str = "team-a",
         phase: str = "Running") -> str:
    obj = server.store.create("pods", factories.pod(name, namespace, node_name=node, phase=phase))
    return obj["metadata"]["uid"]


def _names(server: KubeAPIServer, token_file=None, **kw) -> kubenames.PodNames:
    api, why = kubenames.endpoint(server.url, {}, token_file)
    assert api is not None, why
    return kubenames.PodNames(api, NODE, max_pods=kw.pop("max_pods", 100), backoff_s=(0.05, 0.2), **kw)


@pytest.fixture
def started():
    made = []

    def start(names: kubenames.PodNames) -> kubenames.PodNames:
        made.append(names)
        names.start()
        return names

    yield start
    for n in made:
        n.stop()


def test_lists_then_follows_this_nodes_running_pods(server, started, tmp_path):
    web = _pod(server, "web")
    other_node = _pod(server, "elsewhere", node="node-b")
    finished = _pod(server, "job-1", phase="Succeeded")
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    names = started(_names(server, token))
    wait_for(lambda: names.get(web), 5, "the listed pod's name")
    assert names.get(web) == ("team-a", "web") and names.available
    assert names.get(other_node) is None and names.get(finished) is None
    server.wait_for_watches(1)
    db = _pod(server, "db", namespace="team-b")
    wait_for(lambda: names.get(db) == ("team-b", "db"), 5, "the watched pod's name")
    server.store.delete("pods", "team-a", "web")
    wait_for(lambda: names.get(web) is None, 5, "the deleted pod's name to go")
    # A pod that ends (Succeeded) leaves the selector: the watch sends it as DELETED.
    server.store.patch("pods", "team-b", "db", {"status": {"phase": "Succeeded"}},
                       content_type="application/merge-patch+json", subresource="status")
    wait_for(lambda: names.get(db) is None, 5, "the finished pod's name to go")
    assert len(names) == 0 and names.available
    sent = [r for r in server.requests if r.resource == "pods"]
    assert {r.verb for r in sent} == {"list", "watch"}
    assert all("spec.nodeName=node-a" in r.query.replace("%3D", "=") for r in sent)
    assert {r.authorization for r in sent} == {"Bearer tok-1"}


def test_expired_watch_relists_and_learns_what_it_missed(server, started):
    gone = _pod(server, "gone")
    names = started(_names(server))
    wait_for(lambda: names.get(gone), 5, "the first list")
    server.wait_for_watches(1)
    server.drop_watches(abrupt=True)  # while the client reconnects, history is lost ...
    server.store.delete("pods", "team-a", "gone")
    new = _pod(server, "new")
    server.compact(expire_open_watches=True)
    wait_for(lambda: names.relists >= 2 and names.get(new), 5, "a relist after 410 Expired")
    assert names.get(gone) is None and names.available


def test_api_down_or_refusing_keeps_names_and_says_so_then_recovers(server, started, caplog):
    caplog.set_level(logging.INFO, logger=kubenames.__name__)
    web = _pod(server, "web")
    names = started(_names(server))
    wait_for(lambda: names.get(web) and server.open_watches == 1, 5, "the list and its watch")
    server.stop()
    wait_for(lambda: not names.available, 5, "the loss to be noticed")
    assert names.get(web) == ("team-a", "web")  # a uid's name never changes: kept
    server.start()
    server.inject(verb="list", resource="pods", status=403, times=2)
    wait_for(lambda: names.available and names.relists >= 2, 10, "recovery after the refusals")
    text = caplog.text
    assert "event=pod_names_unavailable" in text and "exporter-clusterrole.yaml" in text  # a 403 names the RBAC fix


def test_the_cache_is_bounded(server, started):
    uids = [_pod(server, f"p{i}") for i in range(5)]
    names = started(_names(server, max_pods=3))
    wait_for(lambda: names.available, 5, "the list")
    assert len(names) == 3 and sum(names.get(u) is not None for u in uids) == 3


def test_token_reread_before_each_connection_and_kept_when_unreadable(server, started, tmp_path):
    token = tmp_path / "token"
    token.write_text("tok-1")
    started(_names(server, token))

    def watches():
        return [r.authorization for r in server.requests if r.verb == "watch"]

    wait_for(lambda: len(watches()) == 1, 5, "the watch")
    token.write_text("tok-2")  # the kubelet rotated it
    server.drop_watches()
    wait_for(lambda: len(watches()) == 2, 5, "the second watch")
    token.unlink()  # out of reach (as for a uid that may not read it): the last one read is kept
    server.drop_watches()
    wait_for(lambda: len(watches()) == 3, 5, "the third watch")
    assert watches() == ["Bearer tok-1", "Bearer tok-2", "Bearer tok-2"]


def test_endpoint_settings():
    assert kubenames.endpoint("off", {})[0] is None
    api, why = kubenames.endpoint("auto", {})
    assert api is None and "KUBERNETES_SERVICE_HOST" in why
    api, _ = kubenames.endpoint("http://127.0.0.1:8001/", {})
    assert api is not None and api.url == "http://127.0.0.1:8001" and api.token is None


# --- a hostile API: trickling, hanging, refusing, closing (tests/scorer/trickle.py's raw server) ---------
UID = "6c3c22c6-0000-4000-8000-000000000001"


def _listing(*uids: str, rv: str = "7") -> bytes:
    items = [{"metadata": {"uid": u, "namespace": "team-a", "name": f"p-{u[-1]}", "resourceVersion": rv}}
             for u in uids]
    return json.dumps({"kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": rv},
                       "items": items}).encode()


def _event(kind: str, uid: str, rv: str = "8") -> bytes:
    meta = {"uid": uid, "namespace": "team-b", "name": "watched", "resourceVersion": rv}
    return json.dumps({"type": kind, "object": {"metadata": meta}}).encode() + b"\n"


def _status(code: int, reason: str) -> bytes:
    body = json.dumps({"kind": "Status", "status": "Failure", "message": reason, "code": code}).encode()
    return http_response(body, f"{code} {reason}")


def _hostile(watch: bytes, *, listing: bytes | None = None, **kw) -> TrickleServer:
    """Lists normally (or answers `listing`, a whole response), answers every watch with
    `watch` (a whole response), trickled as `kw` says (TrickleServer)."""

    def answer(method: str, target: str) -> bytes:
        if "watch=1" in target:
            return watch
        return listing if listing is not None else http_response(_listing(UID))

    return TrickleServer(answer, **{"trickle": lambda target: "watch=1" in target, **kw})


def _hostile_names(server: TrickleServer) -> kubenames.PodNames:
    api, _ = kubenames.endpoint(server.url, {})
    assert api is not None
    return kubenames.PodNames(api, NODE, max_pods=100, backoff_s=(0.05, 0.2))


#: Requests a second at most with the tests' backoff (0.05 s doubling to 0.2 s, ±20 % jitter):
#: a list and a watch per cycle, ≤ 6.25 cycles a second once at the cap, a few more on the way.
#: A client without backoff sends hundreds.
BACKED_OFF = 16


def _requests_during(server: TrickleServer, seconds: float) -> int:
    before = len(server.served)
    threading.Event().wait(seconds)  # an observation window: how many requests in it
    return len(server.served) - before


def test_a_watch_trickled_a_byte_at_a_time_is_followed(started):
    server = _hostile(http_response(_event("ADDED", "uid-w")), byte_every_s=0.002)
    try:
        names = started(_hostile_names(server))
        wait_for(lambda: names.get("uid-w") == ("team-b", "watched"), 10, "the trickled event")
        assert names.get(UID) == ("team-a", "p-1") and names.available
    finally:
        server.close()


@pytest.mark.parametrize("answer", [
    pytest.param(_status(410, "Gone"), id="410 to everything"),
    pytest.param(_status(500, "Internal Server Error"), id="500 to everything"),
])
def test_an_api_refusing_everything_is_retried_with_backoff_not_hammered(started, answer):
    """A 410 on the watch means relist at once; a 410 on the list itself (or on every request)
    must not turn that into a loop without backoff."""
    server = _hostile(answer, listing=answer, trickle=False)
    try:
        names = started(_hostile_names(server))
        wait_for(lambda: len(server.served) >= 2, 5, "a retry")
        assert _requests_during(server, 1.0) <= BACKED_OFF
        assert not names.available and len(names) == 0
    finally:
        server.close()


def test_a_watch_the_server_ends_at_once_is_not_hammered(started):
    """200 and an empty stream, again and again (a broken proxy): the list holds, each watch
    ends without a line; resuming at once each time would be a busy loop against the API."""
    server = _hostile(http_response(b""), trickle=False)
    try:
        names = started(_hostile_names(server))
        wait_for(lambda: names.get(UID) and len(server.served) >= 3, 5, "the list and its watches")
        assert _requests_during(server, 1.0) <= BACKED_OFF
        assert names.get(UID) == ("team-a", "p-1")  # a uid's name never changes: kept
    finally:
        server.close()


def test_a_watch_hanging_mid_stream_blocks_no_reader_and_ends_at_its_deadline(started, monkeypatch):
    """One event, then a byte every 50 ms forever: no read ever times out, so only an overall
    deadline (the watch's timeoutSeconds plus slack) ends it and the names are relisted. Meanwhile
    `get` and `available` answer at once (the sample loop reads them), and `stop` is prompt."""
    monkeypatch.setattr(kubenames, "WATCH_TIMEOUT_S", 1)
    monkeypatch.setattr(kubenames, "READ_SLACK_S", 0.5)
    head_and_event = http_response(_event("ADDED", "uid-w") + b"\n" * 100_000)
    first = len(head_and_event) - 100_000
    server = _hostile(head_and_event, fast_prefix=first, byte_every_s=0.05)
    try:
        names = started(_hostile_names(server))
        wait_for(lambda: names.get("uid-w"), 5, "the event before the hang")
        t0 = time.monotonic()
        assert names.get(UID) == ("team-a", "p-1") and names.get("nope") is None and names.available
        assert time.monotonic() - t0 < 0.05
        wait_for(lambda: names.relists >= 2, 5, "a relist once the hung watch passed its deadline")
        t0 = time.monotonic()
        names.stop()
        assert time.monotonic() - t0 < 1.0
    finally:
        server.close()


def test_a_list_trickled_forever_ends_at_its_deadline(started, monkeypatch):
    monkeypatch.setattr(kubenames, "LIST_TIMEOUT_S", 0.5)
    server = _hostile(http_response(b""), listing=http_response(b" " * 100_000 + _listing(UID)),
                      trickle=lambda target: "watch=1" not in target, byte_every_s=0.01)
    try:
        names = started(_hostile_names(server))
        wait_for(lambda: len(server.served) >= 3, 5, "the list retried after its deadline")
        assert not names.available
    finally:
        server.close()


@pytest.mark.parametrize("stream", [
    pytest.param(_event("ADDED", "uid-w")[:40], id="closed mid-event"),
    pytest.param(b'{"type": "ADDED", "object": ' + b" " * 3000 + b"}\n", id="event over the line bound"),
    pytest.param(b"[1, 2]\n", id="not an event"),
])
def test_a_broken_watch_stream_backs_off_relists_and_keeps_names(started, monkeypatch, stream):
    monkeypatch.setattr(kubenames, "MAX_LINE_BYTES", 1024)
    server = _hostile(http_response(stream), trickle=False)
    try:
        names = started(_hostile_names(server))
        wait_for(lambda: names.relists >= 3, 5, "relists after broken streams")
        assert names.get(UID) == ("team-a", "p-1")
        assert _requests_during(server, 1.0) <= BACKED_OFF
    finally:
        server.close()


def test_a_500_on_the_watch_keeps_names_and_recovers(server, started):
    web = _pod(server, "web")
    server.inject(verb="watch", resource="pods", status=500, times=2)
    names = started(_names(server))
    wait_for(lambda: names.get(web) and server.open_watches == 1 and names.relists >= 3, 10,
             "two refused watches, then a watch")
    assert names.available

"""The pod name cache (exporter/pods/kubenames.py) against the fake API server over real HTTP:
list + watch of this node's pods, 410 -> relist, the API down or refusing -> names kept and
`available` false, then back; the bound; the token re-read before each connection."""

from __future__ import annotations

import logging

import pytest

from exporter.pods import kubenames
from tests.kubeapi import factories
from tests.kubeapi.server import KubeAPIServer
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

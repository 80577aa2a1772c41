"""The fake API server, exercised only through the official `kubernetes` client.

What these pin is what the scheduler relies on: uids and resourceVersions, selectors, watch
from a resourceVersion with 410 when it is too old, pods/binding with its 409/404, pods/status
patches, events, leases with optimistic concurrency, faults and disconnects.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import factories as f
from tests.kubeapi.fixtures import KubeAPI, kube_api, running_kube_api  # noqa: F401  (kube_api is a fixture)
from tests.kubeapi.server import NOT_EMULATED, KubeAPIServer

NS = "default"


def _binding(name: str, node: str, uid: str | None = None) -> client.V1Binding:
    return client.V1Binding(metadata=client.V1ObjectMeta(name=name, uid=uid),
                            target=client.V1ObjectReference(api_version="v1", kind="Node", name=node))


def _read(resp: Any) -> int:
    """The status of an unparsed (`_preload_content=False`) response, whose body is read so its
    connection goes back to the pool instead of leaking a socket (a ResourceWarning)."""
    resp.read()
    resp.release_conn()
    return resp.status


def _bind(k: KubeAPI, name: str, node: str, uid: str | None = None, ns: str = NS) -> int:
    return _read(k.core.create_namespaced_pod_binding(name, ns, _binding(name, node, uid), _preload_content=False))


def _status(exc: pytest.ExceptionInfo[ApiException]) -> dict:
    return json.loads(exc.value.body)


def _names(items) -> list[str]:
    return sorted(i.metadata.name for i in items)


class _Collector:
    """Runs Watch().stream in a thread and keeps what it yields (or the exception it raised)."""

    def __init__(self, func: Callable, **kwargs):
        self.w = watch.Watch()
        self.events: list[tuple[str, str, str]] = []  # (type, name, resourceVersion)
        self.raw: list[dict] = []
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self._t = threading.Thread(target=self._run, args=(func,), kwargs=kwargs, daemon=True)

    def _run(self, func: Callable, **kwargs) -> None:
        try:
            for e in self.w.stream(func, **kwargs):
                meta = e["raw_object"].get("metadata", {})
                self.events.append((e["type"], meta.get("name", ""), meta.get("resourceVersion", "")))
                self.raw.append(e["raw_object"])
        except BaseException as exc:  # handed to the test thread
            self.error = exc
        finally:
            self.ended.set()

    def start(self, server: KubeAPIServer) -> _Collector:
        before = server.watches_started
        self._t.start()
        deadline = time.monotonic() + 5.0
        while server.watches_started == before:
            assert time.monotonic() < deadline, "watch did not open"
            time.sleep(0.005)
        return self

    def wait_for(self, n: int, timeout_s: float = 5.0) -> list[tuple[str, str, str]]:
        deadline = time.monotonic() + timeout_s
        while len(self.events) < n and time.monotonic() < deadline and not self.ended.is_set():
            time.sleep(0.005)
        return list(self.events)

    def stop(self) -> None:
        self.w.stop()


@pytest.fixture
def nodes(kube_api: KubeAPI) -> KubeAPI:  # noqa: F811
    for name in ("n1", "n2"):
        kube_api.core.create_node(f.node(name))
    return kube_api


# ---- create / get / list ------------------------------------------------------------------


def test_create_assigns_uid_resource_version_timestamp_and_pod_defaults(kube_api: KubeAPI) -> None:  # noqa: F811
    p = kube_api.core.create_namespaced_pod(NS, f.pod("a", phase="Running"))
    assert len(p.metadata.uid) == 36 and p.metadata.namespace == NS
    assert int(p.metadata.resource_version) >= 1 and p.metadata.creation_timestamp is not None
    assert p.status.phase == "Pending", "a POST resets status like the pod strategy"
    assert p.spec.scheduler_name == "fuzzy-scheduler" and p.spec.priority == 0
    assert p.spec.containers[0].resources.requests == {"cpu": "100m", "memory": "64Mi"}
    assert {t.key for t in p.spec.tolerations} == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    other = kube_api.core.create_namespaced_pod(NS, f.pod("b", scheduler_name=None, limits={"cpu": "1"}))
    assert other.spec.scheduler_name == "default-scheduler"
    assert other.spec.containers[0].resources.requests["cpu"] == "100m", "explicit requests are kept"
    only_limits = f.pod("c", cpu=None, memory=None, limits={"cpu": "2", "memory": "1Gi"})
    assert kube_api.core.create_namespaced_pod(NS, only_limits).spec.containers[0].resources.requests == {
        "cpu": "2", "memory": "1Gi"}, "requests default to limits"
    assert kube_api.core.read_namespaced_pod("a", NS).metadata.uid == p.metadata.uid
    assert kube_api.store.pod(NS, "a")["metadata"]["uid"] == p.metadata.uid


def test_errors_are_status_objects(kube_api: KubeAPI) -> None:  # noqa: F811
    with pytest.raises(ApiException) as exc:
        kube_api.core.read_namespaced_pod("missing", NS)
    assert exc.value.status == 404
    assert _status(exc) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": 'pods "missing" not found', "reason": "NotFound", "code": 404,
                            "details": {"name": "missing", "kind": "pods"}}
    kube_api.core.create_namespaced_pod(NS, f.pod("a"))
    with pytest.raises(ApiException) as exc:
        kube_api.core.create_namespaced_pod(NS, f.pod("a"))
    assert exc.value.status == 409 and _status(exc)["reason"] == "AlreadyExists"
    bad = f.pod("nocontainers")
    bad["spec"]["containers"] = []
    with pytest.raises(ApiException) as exc:
        kube_api.core.create_namespaced_pod(NS, bad)
    assert exc.value.status == 422 and _status(exc)["reason"] == "Invalid"
    with pytest.raises(ApiException) as exc:
        kube_api.core.list_namespaced_pod(NS, field_selector="spec.nope=x")
    assert exc.value.status == 400 and "field label not supported: spec.nope" in _status(exc)["message"]


def test_field_selectors(kube_api: KubeAPI) -> None:  # noqa: F811
    s = kube_api.store
    s.create("pods", f.pod("pending", "a"))
    s.create("pods", f.pod("other-sched", "a", scheduler_name="default-scheduler"))
    s.create("pods", f.pod("bound", "b", node_name="n1", phase="Running"))
    s.create("pods", f.pod("done", "b", node_name="n1", phase="Succeeded"))
    s.create("pods", f.pod("failed", "b", node_name="n2", phase="Failed"))
    core = kube_api.core
    unbound = "spec.schedulerName=fuzzy-scheduler,spec.nodeName="
    assert _names(core.list_pod_for_all_namespaces(field_selector=unbound).items) == ["pending"]
    assert _names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName==n1").items) == ["bound", "done"]
    live = "status.phase!=Succeeded,status.phase!=Failed"
    assert _names(core.list_pod_for_all_namespaces(field_selector=live).items) == ["bound", "other-sched", "pending"]
    assert _names(core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName=n1,{live}").items) == ["bound"]
    assert _names(core.list_namespaced_pod("b", field_selector="metadata.name=done").items) == ["done"]
    assert _names(core.list_pod_for_all_namespaces(field_selector="metadata.namespace=a").items) == [
        "other-sched", "pending"]
    assert _names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=").items) == [
        "bound", "done", "failed"]


def test_label_selectors(kube_api: KubeAPI) -> None:  # noqa: F811
    s = kube_api.store
    s.create("pods", f.pod("web1", labels={"app": "web", "tier": "front"}))
    s.create("pods", f.pod("web2", labels={"app": "web"}))
    s.create("pods", f.pod("db", labels={"app": "db", "tier": "back"}))
    s.create("pods", f.pod("bare", labels={}))

    def sel(selector: str) -> list[str]:
        return _names(kube_api.core.list_namespaced_pod(NS, label_selector=selector).items)

    assert sel("app=web") == ["web1", "web2"]
    assert sel("app==db") == ["db"]
    assert sel("app!=web") == ["bare", "db"], "!= also matches objects without the key"
    assert sel("tier") == ["db", "web1"]
    assert sel("!tier") == ["bare", "web2"]
    assert sel("app in (web, db),tier") == ["db", "web1"]
    assert sel("tier notin (front)") == ["bare", "db", "web2"]
    assert sel("app=web,tier=front") == ["web1"]
    with pytest.raises(ApiException) as exc:
        sel("app in web")
    assert exc.value.status == 400


def test_resource_version_is_global_and_monotonic(kube_api: KubeAPI) -> None:  # noqa: F811
    rvs = []
    rvs.append(int(kube_api.core.create_node(f.node("n1")).metadata.resource_version))
    for i in range(3):
        rvs.append(int(kube_api.core.create_namespaced_pod(NS, f.pod(f"p{i}")).metadata.resource_version))
    rvs.append(int(kube_api.core.patch_node("n1", {"metadata": {"labels": {"x": "y"}}}).metadata.resource_version))
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)
    listed = int(kube_api.core.list_namespaced_pod(NS).metadata.resource_version)
    assert listed == rvs[-1] == kube_api.store.resource_version
    # a write that changes nothing does not bump the resourceVersion (as etcd's GuaranteedUpdate)
    same = kube_api.core.patch_node("n1", {"metadata": {"labels": {"x": "y"}}})
    assert int(same.metadata.resource_version) == rvs[-1]


def test_list_limit_and_continue(kube_api: KubeAPI) -> None:  # noqa: F811
    for i in range(5):
        kube_api.store.create("pods", f.pod(f"p{i}"))
    first = kube_api.core.list_namespaced_pod(NS, limit=2)
    assert _names(first.items) == ["p0", "p1"] and first.metadata.remaining_item_count == 3
    second = kube_api.core.list_namespaced_pod(NS, limit=2, _continue=first.metadata.var_continue)
    last = kube_api.core.list_namespaced_pod(NS, limit=2, _continue=second.metadata.var_continue)
    assert _names(second.items) == ["p2", "p3"] and _names(last.items) == ["p4"]
    assert not last.metadata.var_continue


# ---- watch -------------------------------------------------------------------------------


def test_watch_from_resource_version_sees_subsequent_events(nodes: KubeAPI) -> None:
    k = nodes
    k.store.create("pods", f.pod("before"))
    rv = k.core.list_namespaced_pod(NS).metadata.resource_version
    c = _Collector(k.core.list_namespaced_pod, namespace=NS, resource_version=rv, timeout_seconds=10).start(k.server)
    p = k.core.create_namespaced_pod(NS, f.pod("a"))
    k.core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"x": "1"}}})
    k.core.delete_namespaced_pod("a", NS)
    k.core.create_namespaced_pod("elsewhere", f.pod("b", "elsewhere"))  # other namespace: not in this watch
    got = c.wait_for(3)
    c.stop()
    assert [(t, n) for t, n, _ in got] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    rvs = [int(r) for _, _, r in got]
    assert rvs == sorted(rvs) and rvs[0] == int(p.metadata.resource_version)


def test_watch_without_resource_version_starts_with_current_state(kube_api: KubeAPI) -> None:  # noqa: F811
    kube_api.store.create("pods", f.pod("x"))
    kube_api.store.create("pods", f.pod("y", node_name="n1"))
    c = _Collector(kube_api.core.list_pod_for_all_namespaces, field_selector="spec.nodeName=",
                   timeout_seconds=10).start(kube_api.server)
    assert c.wait_for(1) == [("ADDED", "x", kube_api.store.pod(NS, "x")["metadata"]["resourceVersion"])]
    c.stop()


def test_watch_with_selector_sends_deleted_when_an_object_stops_matching(nodes: KubeAPI) -> None:
    k = nodes
    p = k.core.create_namespaced_pod(NS, f.pod("a"))
    unbound = "spec.schedulerName=fuzzy-scheduler,spec.nodeName="
    c = _Collector(k.core.list_pod_for_all_namespaces, field_selector=unbound,
                   resource_version=p.metadata.resource_version, timeout_seconds=10).start(k.server)
    assert _bind(k, "a", "n1", p.metadata.uid) == 201
    got = c.wait_for(1)
    c.stop()
    bound_rv = k.store.pod(NS, "a")["metadata"]["resourceVersion"]
    assert got == [("DELETED", "a", bound_rv)]
    assert "nodeName" not in c.raw[0]["spec"], "the previous content, with the event's resourceVersion"


def test_watch_from_too_old_resource_version_raises_410() -> None:
    with running_kube_api(history_limit=5) as k:
        first = k.core.create_namespaced_pod(NS, f.pod("p0")).metadata.resource_version
        for i in range(1, 10):
            k.core.create_namespaced_pod(NS, f.pod(f"p{i}"))
        for kwargs in ({"timeout_seconds": 5}, {}):  # with and without the client's one retry
            with pytest.raises(ApiException) as exc:
                for _ in watch.Watch().stream(k.core.list_namespaced_pod, NS, resource_version=first, **kwargs):
                    pass
            assert exc.value.status == 410
            assert "Expired" in exc.value.reason and "too old resource version" in exc.value.reason
        recent = k.store.resource_version - 3
        c = _Collector(k.core.list_namespaced_pod, namespace=NS, resource_version=str(recent),
                       timeout_seconds=5).start(k.server)
        assert [n for _, n, _ in c.wait_for(3)] == ["p7", "p8", "p9"], "inside the window: replayed"
        c.stop()


def test_compact_makes_the_next_watch_410_and_expire_ends_open_watches(kube_api: KubeAPI) -> None:  # noqa: F811
    old = kube_api.core.create_namespaced_pod(NS, f.pod("a")).metadata.resource_version
    kube_api.core.create_namespaced_pod(NS, f.pod("b"))
    current = kube_api.server.compact()
    with pytest.raises(ApiException) as exc:
        for _ in watch.Watch().stream(kube_api.core.list_namespaced_pod, NS, resource_version=old, timeout_seconds=5):
            pass
    assert exc.value.status == 410
    c = _Collector(kube_api.core.list_namespaced_pod, namespace=NS, resource_version=str(current),
                   timeout_seconds=30).start(kube_api.server)
    assert kube_api.server.expire_watches() == 1
    assert c.ended.wait(5)
    assert isinstance(c.error, ApiException) and c.error.status == 410


def test_watch_bookmarks_carry_the_resource_version() -> None:
    with running_kube_api(bookmark_interval_s=0.2) as k:
        rv = k.core.create_namespaced_pod(NS, f.pod("a")).metadata.resource_version
        k.core.create_node(f.node("n1"))  # moves the global rv; no pod event
        seen = [e for e in watch.Watch().stream(k.core.list_namespaced_pod, NS, resource_version=rv,
                                                allow_watch_bookmarks=True, timeout_seconds=1)]
        assert seen and all(e["type"] == "BOOKMARK" for e in seen)
        assert seen[-1]["raw_object"]["metadata"]["resourceVersion"] == str(k.store.resource_version)


def test_clean_drop_ends_the_stream_and_abrupt_drop_raises(kube_api: KubeAPI) -> None:  # noqa: F811
    c = _Collector(kube_api.core.list_namespaced_pod, namespace=NS, timeout_seconds=60).start(kube_api.server)
    assert kube_api.server.drop_watches() == 1
    assert c.ended.wait(5) and c.error is None, "like a server-side timeout: the generator just ends"
    assert kube_api.server.wait_for_watches(0, exactly=True)
    c2 = _Collector(kube_api.core.list_namespaced_pod, namespace=NS, timeout_seconds=60).start(kube_api.server)
    assert kube_api.server.drop_watches(abrupt=True) == 1
    assert c2.ended.wait(5)
    assert isinstance(c2.error, urllib3.exceptions.ProtocolError), repr(c2.error)
    assert kube_api.server.wait_for_watches(0, exactly=True)


def test_a_watch_the_client_stops_is_closed_on_the_server(kube_api: KubeAPI) -> None:  # noqa: F811
    c = _Collector(kube_api.core.list_namespaced_pod, namespace=NS, timeout_seconds=60).start(kube_api.server)
    c.stop()
    kube_api.core.create_namespaced_pod(NS, f.pod("wake-the-client"))  # the client notices stop() on a line
    assert c.ended.wait(5)
    assert kube_api.server.wait_for_watches(0, 5.0, exactly=True)


def test_stop_ends_open_watches_promptly() -> None:
    k_ctx = running_kube_api()
    k = k_ctx.__enter__()
    c = _Collector(k.core.list_namespaced_pod, namespace=NS, timeout_seconds=600).start(k.server)
    t0 = time.monotonic()
    k_ctx.__exit__(None, None, None)
    assert c.ended.wait(5)
    assert time.monotonic() - t0 < 3.0


def test_restart_keeps_the_store_and_the_url(kube_api: KubeAPI) -> None:  # noqa: F811
    kube_api.core.create_namespaced_pod(NS, f.pod("a"))
    url = kube_api.url
    kube_api.server.stop()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        kube_api.core.list_namespaced_pod(NS, _request_timeout=1)
    kube_api.server.start()
    assert kube_api.url == url and _names(kube_api.core.list_namespaced_pod(NS).items) == ["a"]


# ---- binding -------------------------------------------------------------------------------


def test_binding_sets_node_name_and_pod_scheduled_and_emits_modified(nodes: KubeAPI) -> None:
    k = nodes
    p = k.core.create_namespaced_pod(NS, f.pod("a"))
    c = _Collector(k.core.list_namespaced_pod, namespace=NS, resource_version=p.metadata.resource_version,
                   timeout_seconds=10).start(k.server)
    assert _bind(k, "a", "n1", p.metadata.uid) == 201
    got = c.wait_for(1)
    c.stop()
    bound = k.core.read_namespaced_pod("a", NS)
    assert bound.spec.node_name == "n1"
    assert [(x.type, x.status) for x in bound.status.conditions] == [("PodScheduled", "True")]
    assert got == [("MODIFIED", "a", bound.metadata.resource_version)]
    assert int(bound.metadata.resource_version) > int(p.metadata.resource_version)
    assert k.server.count("create", "pods/binding") == 1


def test_binding_conflicts_and_not_found(nodes: KubeAPI) -> None:
    k = nodes
    p = k.core.create_namespaced_pod(NS, f.pod("a"))
    assert _bind(k, "a", "n1", p.metadata.uid) == 201
    with pytest.raises(ApiException) as exc:
        _bind(k, "a", "n2", p.metadata.uid)
    assert exc.value.status == 409
    assert _status(exc)["message"] == (
        'Operation cannot be fulfilled on pods/binding "a": pod a is already assigned to node "n1"')
    q = k.core.create_namespaced_pod(NS, f.pod("b"))
    with pytest.raises(ApiException) as exc:
        _bind(k, "b", "n1", "00000000-0000-0000-0000-000000000000")
    assert exc.value.status == 409 and "Precondition failed: UID in precondition" in exc.value.body
    assert k.store.pod(NS, "b")["spec"].get("nodeName") is None
    # replaced: same name, new uid -> the old uid no longer binds
    k.core.delete_namespaced_pod("b", NS)
    k.core.create_namespaced_pod(NS, f.pod("b"))
    with pytest.raises(ApiException) as exc:
        _bind(k, "b", "n1", q.metadata.uid)
    assert exc.value.status == 409
    k.core.delete_namespaced_pod("b", NS)
    with pytest.raises(ApiException) as exc:
        _bind(k, "b", "n1", q.metadata.uid)
    assert exc.value.status == 404
    assert k.server.count("create", "pods/binding") == 5


def test_binding_without_uid_and_through_the_bindings_collection(nodes: KubeAPI) -> None:
    k = nodes
    k.core.create_namespaced_pod(NS, f.pod("a"))
    k.core.create_namespaced_pod(NS, f.pod("b"))
    assert _bind(k, "a", "n1") == 201
    assert _read(k.core.create_namespaced_binding(NS, _binding("b", "n2"), _preload_content=False)) == 201
    assert k.store.pod(NS, "b")["spec"]["nodeName"] == "n2"
    with pytest.raises(ApiException) as exc:
        k.core.create_namespaced_pod_binding("a", NS, _binding("other", "n1"), _preload_content=False)
    assert exc.value.status == 400


def test_scheduling_gates_block_binding_and_can_only_be_removed(nodes: KubeAPI) -> None:
    k = nodes
    p = k.core.create_namespaced_pod(NS, f.pod("g", scheduling_gates=("example.com/a", "example.com/b")))
    [cond] = p.status.conditions
    assert (cond.type, cond.status, cond.reason, cond.message) == (
        "PodScheduled", "False", "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates")
    with pytest.raises(ApiException) as exc:
        _bind(k, "g", "n1", p.metadata.uid)
    assert exc.value.status == 409 and _status(exc)["message"] == (
        'Operation cannot be fulfilled on pods/binding "g": pod g has non-empty .spec.schedulingGates')
    with pytest.raises(ApiException) as exc:
        k.core.patch_namespaced_pod("g", NS, {"spec": {"schedulingGates": [
            {"name": "example.com/a"}, {"name": "example.com/c"}]}}, _content_type="application/merge-patch+json")
    assert exc.value.status == 422 and _status(exc)["message"] == (
        'Pod "g" is invalid: spec.schedulingGates[1].name: Forbidden: only deletion is allowed, but found new '
        "scheduling gate 'example.com/c'")
    k.core.patch_namespaced_pod("g", NS, [{"op": "remove", "path": "/spec/schedulingGates/0"}])
    with pytest.raises(ApiException) as exc:
        _bind(k, "g", "n1", p.metadata.uid)
    assert exc.value.status == 409, "one gate left"
    k.core.patch_namespaced_pod("g", NS, [{"op": "remove", "path": "/spec/schedulingGates"}])
    assert _bind(k, "g", "n1", p.metadata.uid) == 201
    with pytest.raises(ApiException) as exc:  # gates are set at creation only, and never on a bound pod
        k.core.create_namespaced_pod(NS, f.pod("h", node_name="n1", scheduling_gates=("example.com/a",)))
    assert exc.value.status == 422 and "spec.nodeName: Forbidden: cannot be set until all schedulingGates" in (
        _status(exc)["message"])
    ungated = k.core.create_namespaced_pod(NS, f.pod("u"))
    assert not ungated.status.conditions, "an ungated pod is created without a PodScheduled condition"


# ---- status, update, delete ------------------------------------------------------------------


def test_pod_status_patch_merges_conditions_by_type(kube_api: KubeAPI) -> None:  # noqa: F811
    kube_api.core.create_namespaced_pod(NS, f.pod("a"))
    kube_api.core.patch_namespaced_pod_status("a", NS, {"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "Other"}]}})
    msg = "0/5 nodes are available: 3 fuzzy deny (score ≥ 70), 2 Insufficient cpu."
    before = kube_api.store.resource_version
    got = kube_api.core.patch_namespaced_pod_status("a", NS, {"status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
         "lastTransitionTime": "2024-01-01T00:00:00Z"}]}})
    conds = {c.type: c for c in got.status.conditions}
    assert set(conds) == {"Ready", "PodScheduled"}
    assert (conds["PodScheduled"].status, conds["PodScheduled"].reason, conds["PodScheduled"].message) == (
        "False", "Unschedulable", msg)
    assert int(got.metadata.resource_version) == before + 1
    assert kube_api.core.read_namespaced_pod_status("a", NS).status.conditions[1].type == "PodScheduled"
    again = kube_api.core.patch_namespaced_pod_status("a", NS, {"status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
         "lastTransitionTime": "2024-01-01T00:00:00Z"}]}})
    assert again.metadata.resource_version == got.metadata.resource_version, "no-op patch: no new rv"
    # status patches ignore spec; spec patches ignore status
    kube_api.core.patch_namespaced_pod_status("a", NS, {"spec": {"nodeName": "n1"}})
    kube_api.core.patch_namespaced_pod("a", NS, {"status": {"phase": "Running"}})
    pod = kube_api.store.pod(NS, "a")
    assert "nodeName" not in pod["spec"] and pod["status"]["phase"] == "Pending"


def test_patch_content_types(kube_api: KubeAPI) -> None:  # noqa: F811
    kube_api.core.create_namespaced_pod(NS, f.pod("a", labels={"a": "1", "b": "2"}))
    merged = kube_api.core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"a": None, "c": "3"}}},
                                                _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"b": "2", "c": "3"}
    patched = kube_api.core.patch_namespaced_pod("a", NS, [{"op": "add", "path": "/metadata/labels/d", "value": "4"}])
    assert patched.metadata.labels == {"b": "2", "c": "3", "d": "4"}
    with pytest.raises(ApiException) as exc:
        kube_api.core.patch_namespaced_pod("a", NS, {"metadata": {"resourceVersion": "1", "labels": {"e": "5"}}})
    assert exc.value.status == 409, "a resourceVersion in the patch is a precondition"


def test_pod_spec_is_immutable_except_the_usual_fields(kube_api: KubeAPI) -> None:  # noqa: F811
    kube_api.core.create_namespaced_pod(NS, f.pod("a"))
    with pytest.raises(ApiException) as exc:
        kube_api.core.patch_namespaced_pod("a", NS, {"spec": {"nodeName": "n1"}})
    assert exc.value.status == 422, "nodeName goes through pods/binding, not an update"
    pod = kube_api.core.read_namespaced_pod("a", NS)
    pod.spec.containers[0].image = "registry.k8s.io/pause:3.10"
    assert kube_api.core.replace_namespaced_pod("a", NS, pod).spec.containers[0].image.endswith("3.10")


def test_delete_with_uid_precondition(kube_api: KubeAPI) -> None:  # noqa: F811
    p = kube_api.core.create_namespaced_pod(NS, f.pod("a"))
    wrong = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="not-it"))
    with pytest.raises(ApiException) as exc:
        kube_api.core.delete_namespaced_pod("a", NS, body=wrong)
    assert exc.value.status == 409
    right = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=p.metadata.uid))
    gone = kube_api.core.delete_namespaced_pod("a", NS, body=right)
    assert gone.metadata.uid == p.metadata.uid and kube_api.store.pod(NS, "a") is None
    with pytest.raises(ApiException) as exc:
        kube_api.core.delete_namespaced_pod("a", NS)
    assert exc.value.status == 404


# ---- nodes, events, leases -----------------------------------------------------------------


def test_nodes_crud_patch_status_and_watch(kube_api: KubeAPI) -> None:  # noqa: F811
    core = kube_api.core
    core.create_node(f.node("n1", labels={"zone": "a"}))
    n2 = core.create_node(f.node("n2", cpu="8", taints=[f.taint("gpu", "true")]))
    assert n2.status.allocatable["cpu"] == "8" and n2.spec.taints[0].effect == "NoSchedule"
    assert n2.metadata.labels["kubernetes.io/hostname"] == "n2"
    assert [x.type for x in n2.status.conditions][-1] == "Ready"
    c = _Collector(core.list_node, resource_version=n2.metadata.resource_version, timeout_seconds=10).start(
        kube_api.server)
    core.patch_node("n1", {"spec": {"unschedulable": True, "taints": [f.taint("k", effect="NoExecute")]}})
    core.patch_node_status("n2", {"status": {"conditions": [{"type": "Ready", "status": "False"}],
                                             "allocatable": {"cpu": "7"}}})
    core.delete_node("n1")
    got = c.wait_for(3)
    c.stop()
    assert [(t, n) for t, n, _ in got] == [("MODIFIED", "n1"), ("MODIFIED", "n2"), ("DELETED", "n1")]
    n2 = core.read_node("n2")
    ready = next(x for x in n2.status.conditions if x.type == "Ready")
    assert ready.status == "False" and n2.status.allocatable == {
        "cpu": "7", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
    assert len(n2.status.conditions) == 4, "conditions merged by type"
    assert _names(core.list_node(field_selector="spec.unschedulable=false").items) == ["n2"]
    assert _names(core.list_node(label_selector="kubernetes.io/hostname in (n2)").items) == ["n2"]
    # the main resource ignores status, like the node strategy
    core.patch_node("n2", {"status": {"allocatable": {"cpu": "1"}}})
    assert kube_api.store.node("n2")["status"]["allocatable"]["cpu"] == "7"


def test_events_create_list_and_patch_count(kube_api: KubeAPI) -> None:  # noqa: F811
    p = kube_api.core.create_namespaced_pod(NS, f.pod("a"))
    ev = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="a."),
        involved_object=client.V1ObjectReference(kind="Pod", namespace=NS, name="a", uid=p.metadata.uid),
        reason="FailedScheduling", message="0/2 nodes are available", type="Warning", count=1,
        source=client.V1EventSource(component="fuzzy-scheduler"), reporting_component="fuzzy-scheduler")
    created = kube_api.core.create_namespaced_event(NS, ev)
    assert created.metadata.name.startswith("a.") and created.metadata.uid
    kube_api.core.patch_namespaced_event(created.metadata.name, NS, {"count": 2, "message": "0/3 nodes"})
    listed = kube_api.core.list_namespaced_event(NS, field_selector="involvedObject.name=a,reason=FailedScheduling")
    assert [(e.count, e.message) for e in listed.items] == [(2, "0/3 nodes")]
    assert kube_api.core.list_event_for_all_namespaces(field_selector="type=Normal").items == []
    ev.metadata = client.V1ObjectMeta(name="wrong-ns")
    with pytest.raises(ApiException) as exc:
        kube_api.core.create_namespaced_event("other", ev)
    assert exc.value.status == 422
    assert [e["reason"] for e in kube_api.store.events()] == ["FailedScheduling"]
    assert kube_api.server.count("create", "events") == 2 and kube_api.server.count("patch", "events") == 1


def test_lease_optimistic_concurrency(kube_api: KubeAPI) -> None:  # noqa: F811
    co = kube_api.coordination
    with pytest.raises(ApiException) as exc:
        co.read_namespaced_lease("fuzzy-scheduler", "ksense")
    assert exc.value.status == 404
    created = co.create_namespaced_lease("ksense", f.lease("fuzzy-scheduler", "ksense", holder="a"))
    with pytest.raises(ApiException) as exc:
        co.create_namespaced_lease("ksense", f.lease("fuzzy-scheduler", "ksense", holder="b"))
    assert exc.value.status == 409 and _status(exc)["reason"] == "AlreadyExists"
    assert "leases.coordination.k8s.io" in _status(exc)["message"]
    mine = co.read_namespaced_lease("fuzzy-scheduler", "ksense")
    mine.spec.renew_time = mine.spec.renew_time.replace(second=5)
    renewed = co.replace_namespaced_lease("fuzzy-scheduler", "ksense", mine)
    assert int(renewed.metadata.resource_version) > int(created.metadata.resource_version)
    stale = created
    stale.spec.holder_identity = "b"
    with pytest.raises(ApiException) as exc:
        co.replace_namespaced_lease("fuzzy-scheduler", "ksense", stale)
    assert exc.value.status == 409 and _status(exc)["reason"] == "Conflict"
    assert kube_api.store.lease("ksense", "fuzzy-scheduler")["spec"]["holderIdentity"] == "a"
    co.delete_namespaced_lease("fuzzy-scheduler", "ksense")
    assert kube_api.store.leases() == []


def test_the_client_leaselock_works_against_the_fake(kube_api: KubeAPI) -> None:  # noqa: F811
    from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    saved = client.Configuration._default
    client.Configuration.set_default(kube_api.api_client.configuration)  # LeaseLock builds its own client
    try:
        a, b = LeaseLock("fuzzy-scheduler", "ksense", "a"), LeaseLock("fuzzy-scheduler", "ksense", "b")
        found, err = a.get("fuzzy-scheduler", "ksense")
        assert not found and err.status == 404
        rec = LeaderElectionRecord("a", "15", "2024-01-01 00:00:00.000000", "2024-01-01 00:00:00.000000")
        assert a.create("fuzzy-scheduler", "ksense", rec)
        assert not b.create("fuzzy-scheduler", "ksense", rec), "AlreadyExists"
        assert b.get("fuzzy-scheduler", "ksense")[0]
        rec.renew_time = "2024-01-01 00:00:05.000000"
        assert a.update("fuzzy-scheduler", "ksense", rec)
        assert not b.update("fuzzy-scheduler", "ksense", LeaderElectionRecord(
            "b", "15", rec.renew_time, rec.renew_time)), "b holds a stale resourceVersion: 409"
        assert kube_api.store.lease("ksense", "fuzzy-scheduler")["spec"]["holderIdentity"] == "a"
    finally:
        client.Configuration._default = saved


def test_events_k8s_io_and_pod_status_replace(kube_api: KubeAPI) -> None:  # noqa: F811
    ev = client.EventsV1Event(metadata=client.V1ObjectMeta(name="a.1"), event_time=datetime.now(UTC),
                              reason="Scheduled", note="Successfully assigned default/a to n1", type="Normal",
                              action="Binding", reporting_controller="fuzzy-scheduler", reporting_instance="x",
                              regarding=client.V1ObjectReference(kind="Pod", namespace=NS, name="a"))
    kube_api.events.create_namespaced_event(NS, ev)
    listed = kube_api.events.list_namespaced_event(NS, field_selector="regarding.name=a")
    assert [e.reason for e in listed.items] == ["Scheduled"] and kube_api.store.events() == []
    kube_api.core.create_namespaced_pod(NS, f.pod("a"))
    pod = kube_api.core.read_namespaced_pod_status("a", NS)
    pod.status.phase = "Running"
    assert kube_api.core.replace_namespaced_pod_status("a", NS, pod).status.phase == "Running"


# ---- faults and counting ---------------------------------------------------------------------


def test_fault_injection_fails_then_succeeds_and_is_counted(kube_api: KubeAPI) -> None:  # noqa: F811
    fault = kube_api.server.inject(verb="list", resource="pods", status=500, times=1)
    with pytest.raises(ApiException) as exc:
        kube_api.core.list_namespaced_pod(NS)
    assert exc.value.status == 500 and _status(exc)["reason"] == "InternalError"
    assert kube_api.core.list_namespaced_pod(NS).items == []
    assert fault.hits == 1 and kube_api.server.count("list", "pods") == 2
    bound = kube_api.server.inject(verb="list", resource="pods", query=r"fieldSelector=spec\.nodeName!=", status=500)
    assert kube_api.core.list_namespaced_pod(NS, field_selector="spec.nodeName=").items == []
    with pytest.raises(ApiException):
        kube_api.core.list_namespaced_pod(NS, field_selector="spec.nodeName!=")
    assert bound.hits == 1, "matched by the decoded query only"
    kube_api.server.inject(method="POST", path=r"/binding$", status=503, retry_after_s=1, times=2)
    kube_api.store.create("pods", f.pod("a"))
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            _bind(kube_api, "a", "n1")
        assert exc.value.status == 503 and exc.value.headers["Retry-After"] == "1"
    assert _bind(kube_api, "a", "n1") == 201


def test_fault_injection_hang_and_reset(kube_api: KubeAPI) -> None:  # noqa: F811
    kube_api.store.create("pods", f.pod("a"))
    kube_api.server.inject(verb="create", resource="pods/binding", delay_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        kube_api.core.create_namespaced_pod_binding("a", NS, _binding("a", "n1"), _preload_content=False,
                                                    _request_timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    kube_api.server.inject(verb="create", resource="pods/binding", reset=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        _bind(kube_api, "a", "n1")
    assert _bind(kube_api, "a", "n1") == 201


def test_request_counts_by_verb_and_resource(nodes: KubeAPI) -> None:
    k = nodes
    k.server.reset_counts()
    k.core.create_namespaced_pod(NS, f.pod("a"))
    k.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=")
    for _ in watch.Watch().stream(k.core.list_node, timeout_seconds=1):
        pass
    _bind(k, "a", "n1")
    k.core.patch_namespaced_pod_status("a", NS, {"status": {"phase": "Running"}})
    assert dict(k.server.counts) == {("create", "pods"): 1, ("list", "pods"): 1, ("watch", "nodes"): 1,
                                     ("create", "pods/binding"): 1, ("patch", "pods/status"): 1}
    assert k.server.count(verb="create") == 2
    assert [r.status for r in k.server.requests] == [201, 200, 200, 201, 200]


def test_not_emulated_list_is_documented() -> None:
    assert any("graceful deletion" in line for line in NOT_EMULATED)


# ---- throughput --------------------------------------------------------------------------------


@pytest.fixture
def counting_watch(kube_api: KubeAPI) -> Iterator[_Collector]:  # noqa: F811
    c = _Collector(kube_api.core.list_pod_for_all_namespaces, timeout_seconds=120).start(kube_api.server)
    yield c
    c.stop()


def test_throughput_creates_and_binds(kube_api: KubeAPI, counting_watch: _Collector) -> None:  # noqa: F811
    n = 1000
    kube_api.core.create_node(f.node("n1", pods=n))
    t0 = time.perf_counter()
    uids = [kube_api.core.create_namespaced_pod(NS, f.pod(f"p{i:04d}")).metadata.uid for i in range(n)]
    t1 = time.perf_counter()
    for i, uid in enumerate(uids):
        assert _bind(kube_api, f"p{i:04d}", "n1", uid) == 201
    t2 = time.perf_counter()
    creates, binds = n / (t1 - t0), n / (t2 - t1)
    print(f"\nfake API server through the official client: {creates:.0f} pod creates/s, {binds:.0f} binds/s "
          f"(sequential, one watch open)")
    assert counting_watch.wait_for(2 * n, 10.0)[-1][0] == "MODIFIED"
    assert len(counting_watch.events) == 2 * n
    assert all(p["spec"].get("nodeName") == "n1" for p in kube_api.store.pods())
    assert binds >= 100, "the scheduler benchmark needs >= 100 binds/s through this server"

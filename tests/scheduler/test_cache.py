"""ClusterCache fed by hand (no server): the assume cache, tombstones, relists and the node table
follow the watches without double counting or losing capacity."""

from __future__ import annotations

from scheduler.cache import BOUND, NODE, PENDING, ClusterCache
from scheduler.core.pods import Resources
from tests.kubeapi import factories as f


def _pod(name: str, uid: str, *, node: str | None = None, cpu: str = "500m", phase: str = "Pending") -> dict:
    p = f.pod(name, cpu=cpu, memory=None, node_name=node, phase=phase)
    p["metadata"]["uid"] = uid
    return p


def _cache(*nodes: str) -> tuple[ClusterCache, list[int]]:
    wakes: list[int] = []
    c = ClusterCache(on_change=lambda: wakes.append(1), clock=lambda: 10.0)
    c.replace(NODE, [f.node(n, cpu="2") for n in nodes], 0.0)
    c.replace(PENDING, [], 0.0)
    c.replace(BOUND, [], 0.0)
    return c, wakes


def _cpu(c: ClusterCache, node: str) -> int:
    return c.table()[node].requested.cpu


def test_synced_only_after_all_three_lists() -> None:
    c = ClusterCache()
    c.replace(NODE, [], 0.0)
    c.replace(PENDING, [], 0.0)
    assert not c.synced()
    c.replace(BOUND, [], 0.0)
    assert c.synced()


def test_assumed_pod_counts_until_the_watch_shows_it_then_once() -> None:
    c, _ = _cache("n1")
    pod = _pod("a", "u1")
    c.apply(PENDING, "ADDED", pod)
    c.assume(pod, "n1", Resources(cpu=500, pods=1))
    assert c.pending() == [] and _cpu(c, "n1") == 500
    c.apply(BOUND, "ADDED", _pod("a", "u1", node="n1"))
    assert _cpu(c, "n1") == 500, "seen by the watch: counted once"
    assert c.assumed() == {}
    c.apply(BOUND, "DELETED", _pod("a", "u1", node="n1", phase="Succeeded"))
    assert _cpu(c, "n1") == 0


def test_late_pending_event_does_not_requeue_a_bound_pod() -> None:
    c, _ = _cache("n1")
    pod = _pod("a", "u1")
    c.apply(PENDING, "ADDED", pod)
    c.assume(pod, "n1", Resources(cpu=500, pods=1))
    c.apply(PENDING, "MODIFIED", pod)  # written before the bind, delivered after it
    assert c.pending() == []
    c.apply(PENDING, "DELETED", pod)  # the bind moved it off the pending selector
    assert _cpu(c, "n1") == 500, "the DELETED the bind causes must not free the capacity"
    recreated = _pod("a", "u2")
    c.apply(PENDING, "ADDED", recreated)
    assert [p["metadata"]["uid"] for p in c.pending()] == ["u2"], "a new pod with the same name is queued"


def test_requeue_after_a_failed_bind() -> None:
    c, _ = _cache("n1")
    pod = _pod("a", "u1")
    c.apply(PENDING, "ADDED", pod)
    c.assume(pod, "n1", Resources(cpu=500, pods=1))
    c.requeue(pod, keep_assumed=False)  # a 500: refused for sure
    assert _cpu(c, "n1") == 0 and [p["metadata"]["name"] for p in c.pending()] == ["a"]
    c.assume(pod, "n1", Resources(cpu=500, pods=1))
    c.requeue(pod, keep_assumed=True)  # no answer: it may be bound, keep counting it
    assert _cpu(c, "n1") == 500 and [p["metadata"]["name"] for p in c.pending()] == ["a"]
    c.apply(PENDING, "MODIFIED", pod)  # still pending at the server: events flow again
    assert len(c.pending()) == 1


def test_drop_after_conflict_frees_our_node_and_waits_for_the_watch() -> None:
    c, _ = _cache("n1", "n2")
    pod = _pod("a", "u1")
    c.apply(PENDING, "ADDED", pod)
    c.assume(pod, "n1", Resources(cpu=500, pods=1))
    c.drop(pod)  # 409: someone else bound it to n2
    assert _cpu(c, "n1") == 0 and c.pending() == []
    c.apply(BOUND, "ADDED", _pod("a", "u1", node="n2"))
    assert _cpu(c, "n2") == 500


def test_pending_watch_delete_keeps_the_assumption_until_the_bound_watch_shows_the_pod() -> None:
    c, _ = _cache("n1")
    pod = _pod("a", "u1")
    c.apply(PENDING, "ADDED", pod)
    c.assume(pod, "n1", Resources(cpu=1500, pods=1))
    c.finish_binding(pod)
    # The bind moves the pod off `spec.nodeName=`: DELETED with the previous object (no node yet),
    # usually before the bound watch shows it.
    c.apply(PENDING, "DELETED", pod)
    assert c.assumed() == {"u1": "n1"} and _cpu(c, "n1") == 1500, "capacity freed before the bound watch saw it"
    c.apply(BOUND, "ADDED", _pod("a", "u1", node="n1", cpu="1500m"))
    assert c.assumed() == {} and _cpu(c, "n1") == 1500


def _timed_cache(now: list[float]) -> ClusterCache:
    c = ClusterCache(clock=lambda: now[0])
    c.replace(NODE, [f.node("n1", cpu="2")], 0.0)
    c.replace(PENDING, [], 0.0)
    c.replace(BOUND, [], 0.0)
    return c


def test_relist_keeps_assumptions_whose_bind_finished_after_the_list_started() -> None:
    now = [10.0]
    c = _timed_cache(now)
    old, slow = _pod("old", "u1"), _pod("slow", "u2")
    c.assume(old, "n1", Resources(cpu=500, pods=1))
    c.finish_binding(old)  # answered at 10
    c.assume(slow, "n1", Resources(cpu=300, pods=1))  # at 10, answered only at 20
    # A list started at 15 without "old": deleted meanwhile. "slow" may land after the list.
    c.replace(BOUND, [], 15.0)
    assert c.assumed() == {"u2": "n1"} and _cpu(c, "n1") == 300
    now[0] = 20.0
    c.finish_binding(slow)
    c.replace(BOUND, [], 18.0)
    assert c.assumed() == {"u2": "n1"}, "the bind finished after this list started"
    c.replace(BOUND, [], 21.0)
    assert c.assumed() == {} and _cpu(c, "n1") == 0, "a list started after the bind would show the pod"


def test_an_assumption_is_never_released_by_time() -> None:
    now = [10.0]
    c = _timed_cache(now)
    pod = _pod("a", "u1")
    c.assume(pod, "n1", Resources(cpu=500, pods=1))
    c.finish_binding(pod)
    now[0] += 86400.0
    assert _cpu(c, "n1") == 500 and c.assumed() == {"u1": "n1"}, "no watch or list told: still counted"


def test_a_lost_bind_is_released_when_the_pod_shows_up_being_deleted_without_a_node() -> None:
    for etype in ("MODIFIED", "DELETED"):
        c, wakes = _cache("n1")
        c.take_node_changes()
        pod = _pod("a", "u1")
        c.apply(PENDING, "ADDED", pod)
        c.assume(pod, "n1", Resources(cpu=500, pods=1))
        c.finish_binding(pod)
        c.requeue(pod, keep_assumed=True)  # no answer: it may be bound
        deleting = _pod("a", "u1")
        deleting["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
        woken = len(wakes)
        c.apply(PENDING, etype, deleting)  # the API never binds a pod being deleted
        assert c.assumed() == {} and _cpu(c, "n1") == 0 and c.pending() == [], etype
        assert len(wakes) == woken + 1 and c.take_node_changes() == (frozenset({"n1"}), False), etype


def test_a_retried_pod_is_evaluated_without_its_own_assumption() -> None:
    c, _ = _cache("n1")
    pod, other = _pod("a", "u1"), _pod("b", "u2")
    c.apply(PENDING, "ADDED", pod)
    c.assume(pod, "n1", Resources(cpu=1500, pods=1))
    c.finish_binding(pod)
    c.requeue(pod, keep_assumed=True)  # no answer: its capacity stays taken...
    assert _cpu(c, "n1") == 1500 and c.table(other)["n1"].requested.cpu == 1500
    assert c.table(pod)["n1"].requested.cpu == 0, "...but not from the pod itself"


def test_gated_pods_are_queued_once_their_last_gate_is_removed() -> None:
    c, wakes = _cache("n1")
    gated = _pod("g", "u1")
    gated["spec"]["schedulingGates"] = [{"name": "example.com/a"}]
    c.replace(PENDING, [gated], 0.0)
    woken = len(wakes)
    c.apply(PENDING, "MODIFIED", gated)  # e.g. a label change: still gated
    assert c.pending() == [] and len(wakes) == woken
    c.apply(PENDING, "MODIFIED", _pod("g", "u1"))  # the last gate removed
    assert [p["metadata"]["name"] for p in c.pending()] == ["g"] and len(wakes) == woken + 1


def test_pods_being_deleted_are_not_queued() -> None:
    c, _ = _cache("n1")
    doomed = _pod("doomed", "u1")
    doomed["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    c.replace(PENDING, [doomed, _pod("ok", "u2")], 0.0)
    assert [p["metadata"]["name"] for p in c.pending()] == ["ok"]
    c.apply(PENDING, "ADDED", _pod("late", "u3"))
    late = _pod("late", "u3")
    late["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    c.apply(PENDING, "MODIFIED", late)
    assert [p["metadata"]["name"] for p in c.pending()] == ["ok"], "a queued pod being deleted leaves the queue"


def test_other_schedulers_pods_and_node_changes() -> None:
    c, wakes = _cache("n1")
    c.apply(BOUND, "ADDED", _pod("x", "ux", node="n1", cpu="1500m", phase="Running"))
    assert _cpu(c, "n1") == 1500
    before = len(wakes)
    c.apply(NODE, "MODIFIED", f.node("n1", cpu="4"))
    assert c.table()["n1"].allocatable.cpu == 4000 and _cpu(c, "n1") == 1500, "usage survives a node update"
    assert len(wakes) == before + 1
    bad = f.node("n2")
    bad["status"]["allocatable"]["cpu"] = "lots"
    c.apply(NODE, "ADDED", bad)
    assert "n2" not in c.table(), "a node whose allocatable does not parse is left out"
    c.apply(NODE, "DELETED", f.node("n1"))
    assert len(c.table()) == 0


def test_node_changes_record_what_may_help_a_pending_pod() -> None:
    c, _ = _cache("n1", "n2")
    assert c.take_node_changes() == (frozenset({"n1", "n2"}), True), "the first list: all new"
    assert c.take_node_changes() == (frozenset(), False), "taken: the record starts over"
    heartbeat = f.node("n1", cpu="2")
    heartbeat["status"]["conditions"][-1]["lastHeartbeatTime"] = "2024-01-01T00:00:10Z"
    c.apply(NODE, "MODIFIED", heartbeat)
    c.replace(NODE, [f.node("n1", cpu="2"), f.node("n2", cpu="2")], 0.0)
    assert c.take_node_changes() == (frozenset(), False), "nothing the filters read changed"
    c.apply(NODE, "MODIFIED", f.node("n2", cpu="2", taints=[f.taint("gpu")]))
    c.apply(NODE, "ADDED", f.node("n3"))
    assert c.take_node_changes() == (frozenset({"n2", "n3"}), True)
    c.apply(BOUND, "ADDED", _pod("a", "u1", node="n1", phase="Running"))
    c.apply(BOUND, "MODIFIED", _pod("a", "u1", node="n1", phase="Running"))
    assert c.take_node_changes() == (frozenset(), False), "a bound pod arriving or updated frees nothing"
    c.apply(BOUND, "DELETED", _pod("a", "u1", node="n1", phase="Running"))
    assert c.take_node_changes() == (frozenset({"n1"}), False)
    c.apply(BOUND, "ADDED", _pod("b", "u2", node="n2", phase="Running"))
    c.replace(BOUND, [], 0.0)  # a relist without it: gone
    assert c.take_node_changes() == (frozenset({"n2"}), False)

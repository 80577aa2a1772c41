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


def test_relist_keeps_only_assumptions_newer_than_the_list() -> None:
    now = [10.0]
    c = ClusterCache(clock=lambda: now[0])
    c.replace(NODE, [f.node("n1", cpu="2")], 0.0)
    c.replace(PENDING, [], 0.0)
    c.replace(BOUND, [], 0.0)
    old, new = _pod("old", "u1"), _pod("new", "u2")
    c.assume(old, "n1", Resources(cpu=500, pods=1))  # at 10
    now[0] = 20.0
    c.assume(new, "n1", Resources(cpu=300, pods=1))  # at 20
    # A list started at 15 without "old": it was deleted meanwhile; "new" may not be in it yet.
    c.replace(BOUND, [], 15.0)
    assert c.assumed() == {"u2": "n1"} and _cpu(c, "n1") == 300


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

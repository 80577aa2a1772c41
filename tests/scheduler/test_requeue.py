"""Cluster events requeue unschedulable pods (kube-scheduler's move to the active queue): a node
added, a node changed in what the filters read (allocatable, taints, Ready, cordon, labels), or
capacity freed on a node by a bound pod leaving wakes the backed-off pods whose last attempt
failed on that node for a reason other than the fuzzy filter (any pod, for a new node) — at the
next cycle, not at their backoff retry. Fake clock, the fake API server's watches."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scheduler.loop import Scheduler
from tests.kubeapi import factories as f
from tests.kubeapi.fixtures import KubeAPI
from tests.scheduler.conftest import NS, FakeScores, add_nodes, allow, deny, node_of, wait_for
from tests.scheduler.test_loop import _queue, _scheduler_with_fake_clock

START = 1000.0


def _back_off_to_4s(sched: Scheduler, now: list[float]) -> None:
    """Three failed attempts (t = 0, 1, 3): the next retry is due at t = 7."""
    for t in (0.0, 1.0, 3.0):
        now[0] = START + t
        r = sched.cycle()
        assert (r.attempted, r.unschedulable) == (1, 1), (t, r)
    now[0] = START + 3.25
    assert sched.cycle().attempted == 0, "backing off until t = 7"


def _node_info(sched: Scheduler, name: str):
    return sched._cache.table().infos.get(name)


def _woken_and_bound(sched: Scheduler, now: list[float], k: KubeAPI, pod: str, node: str) -> None:
    now[0] = START + 3.5
    r = sched.cycle()
    assert (r.attempted, r.bound) == (1, 1), r
    assert node_of(k, pod) == node


def _bound_pod_deleted(k: KubeAPI) -> None:
    k.store.delete("pods", NS, "other")


def _bound_pod_succeeded(k: KubeAPI) -> None:
    k.store.patch("pods", NS, "other", {"status": {"phase": "Succeeded"}}, subresource="status")


@pytest.mark.parametrize("change", [_bound_pod_deleted, _bound_pod_succeeded], ids=["deleted", "succeeded"])
def test_capacity_freed_by_a_bound_pod_leaving_wakes_a_cpu_blocked_pod(
        kube_api: KubeAPI, change: Callable[[KubeAPI], None]) -> None:
    k = kube_api
    add_nodes(k, "a", cpu="2")
    k.store.create("pods", f.pod("other", scheduler_name=None, cpu="1500m", node_name="a", phase="Running"), NS)
    now = [START]
    sched, stop = _scheduler_with_fake_clock(k, FakeScores(allow("a")), now, poll_s=10.0)
    try:
        wait_for(lambda: _node_info(sched, "a") and _node_info(sched, "a").requested.cpu > 0, 5, "other counted")
        _queue(k, sched, "p", cpu="1")
        _back_off_to_4s(sched, now)
        change(k)
        wait_for(lambda: _node_info(sched, "a").requested.cpu == 0, 5, "capacity freed in the cache")
        _woken_and_bound(sched, now, k, "p", "a")
    finally:
        stop.set()


def test_allocatable_growing_wakes_a_cpu_blocked_pod(kube_api: KubeAPI) -> None:
    k = kube_api
    add_nodes(k, "a", cpu="1")
    now = [START]
    sched, stop = _scheduler_with_fake_clock(k, FakeScores(allow("a")), now, poll_s=10.0)
    try:
        _queue(k, sched, "p", cpu="2")
        _back_off_to_4s(sched, now)
        k.store.patch("nodes", None, "a", {"status": {"allocatable": {"cpu": "4"}}}, subresource="status")
        wait_for(lambda: _node_info(sched, "a").allocatable.cpu == 4000, 5, "allocatable in the cache")
        _woken_and_bound(sched, now, k, "p", "a")
    finally:
        stop.set()


def test_taint_removed_wakes_a_taint_blocked_pod(kube_api: KubeAPI) -> None:
    k = kube_api
    add_nodes(k, "a", taints=[f.taint("gpu", "true")])
    now = [START]
    sched, stop = _scheduler_with_fake_clock(k, FakeScores(allow("a")), now, poll_s=10.0)
    try:
        _queue(k, sched, "p")
        _back_off_to_4s(sched, now)
        k.store.patch("nodes", None, "a", {"spec": {"taints": None}}, "application/merge-patch+json")
        wait_for(lambda: not _node_info(sched, "a").taints, 5, "taint gone in the cache")
        _woken_and_bound(sched, now, k, "p", "a")
    finally:
        stop.set()


def test_node_turning_ready_wakes_a_not_ready_blocked_pod(kube_api: KubeAPI) -> None:
    k = kube_api
    add_nodes(k, "a", ready=False)
    now = [START]
    sched, stop = _scheduler_with_fake_clock(k, FakeScores(allow("a")), now, poll_s=10.0)
    try:
        _queue(k, sched, "p")
        _back_off_to_4s(sched, now)
        k.store.update("nodes", f.node("a"), subresource="status")
        wait_for(lambda: _node_info(sched, "a").ready, 5, "Ready in the cache")
        _woken_and_bound(sched, now, k, "p", "a")
    finally:
        stop.set()


def test_new_node_wakes_pods(kube_api: KubeAPI) -> None:
    """A pod was never evaluated against a node added after its attempt: woken whatever it failed
    on — here a fuzzy deny on the only node, or no node at all."""
    k = kube_api
    add_nodes(k, "a")
    now = [START]
    sched, stop = _scheduler_with_fake_clock(k, FakeScores({**deny("a"), **allow("b")}), now, poll_s=10.0)
    try:
        _queue(k, sched, "p")
        _back_off_to_4s(sched, now)
        add_nodes(k, "b")
        wait_for(lambda: _node_info(sched, "b"), 5, "b in the cache")
        _woken_and_bound(sched, now, k, "p", "b")
    finally:
        stop.set()


def test_unrelated_node_churn_does_not_wake_pods(kube_api: KubeAPI) -> None:
    """A pod blocked on `a` by resources and on `b` by the fuzzy filter: a label change on `b` or
    a heartbeat on `a` (nothing the filters read) does not wake it; `a` growing does."""
    k = kube_api
    add_nodes(k, "a", cpu="1")
    add_nodes(k, "b", cpu="8")
    now = [START]
    sched, stop = _scheduler_with_fake_clock(k, FakeScores({**allow("a"), **deny("b")}), now, poll_s=10.0)
    try:
        _queue(k, sched, "p", cpu="2")
        _back_off_to_4s(sched, now)
        heartbeat = f.node("a", cpu="1")
        for c in heartbeat["status"]["conditions"]:
            c["lastHeartbeatTime"] = "2024-01-01T00:00:10Z"
        k.store.update("nodes", heartbeat, subresource="status")
        # After the heartbeat on the same watch: once the label shows, both events were applied.
        k.store.patch("nodes", None, "b", {"metadata": {"labels": {"zone": "z1"}}})
        wait_for(lambda: _node_info(sched, "b").labels.get("zone") == "z1", 5, "label in the cache")
        now[0] = START + 3.5
        assert sched.cycle().attempted == 0, "nothing p failed on changed in a way that could help"
        k.store.patch("nodes", None, "a", {"status": {"allocatable": {"cpu": "4"}}}, subresource="status")
        wait_for(lambda: _node_info(sched, "a").allocatable.cpu == 4000, 5, "allocatable in the cache")
        now[0] = START + 3.75
        r = sched.cycle()
        assert (r.attempted, r.bound) == (1, 1), r
        assert node_of(k, "p") == "a"
    finally:
        stop.set()

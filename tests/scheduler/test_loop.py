"""The scheduling loop end to end, through the official client against the fake API server:
pods go only to allowed nodes that fit, with events and conditions; rate limits; backoff timing
(fake clock); malformed pods; score source down or stale."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from scheduler.core import backoff
from scheduler.core.filters import ScoreRecord
from scheduler.loop import Scheduler
from scheduler.metrics import SchedulerStats
from tests.kubeapi import factories as f
from tests.kubeapi.fixtures import KubeAPI
from tests.scheduler.conftest import (
    NS,
    FakeScores,
    add_nodes,
    add_pods,
    allow,
    binding_requests,
    binding_successes,
    deny,
    fast_config,
    kube_for,
    node_of,
    wait_for,
)


def _events(k: KubeAPI, pod: str, reason: str) -> list[dict]:
    return [e for e in k.store.events(NS) if e["involvedObject"]["name"] == pod and e["reason"] == reason]


def _condition(k: KubeAPI, pod: str) -> dict | None:
    conds = (k.store.pod(NS, pod) or {}).get("status", {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "PodScheduled"), None)


def test_binds_only_to_allowed_nodes_that_fit_with_events(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "small", cpu="1")
    add_nodes(k, "denied", cpu="8")
    add_nodes(k, "big", cpu="8")
    add_nodes(k, "tainted", cpu="8", taints=[f.taint("gpu", "true")])
    scores = FakeScores({**allow("small", "big", "tainted", score=10.0), **deny("denied")})
    scores.set({**scores.fetch().records, "small": ScoreRecord(True, 5.0, True)})  # small is the best score
    inst = start_scheduler(k.url, scores)
    add_pods(k, "tiny", cpu="500m")
    add_pods(k, "large", cpu="2")
    wait_for(lambda: node_of(k, "tiny") and node_of(k, "large"), 10, "both pods bound")
    assert node_of(k, "tiny") == "small", "lowest score wins"
    assert node_of(k, "large") == "big", "small is too small, denied is denied, tainted is tainted"
    scheduled = _events(k, "tiny", "Scheduled")
    assert len(scheduled) == 1 and scheduled[0]["type"] == "Normal"
    assert scheduled[0]["message"] == "Successfully assigned default/tiny to small"
    assert scheduled[0]["source"]["component"] == "fuzzy-scheduler"
    wait_for(lambda: inst.stats.binds() == {"bound": 2, "conflict": 0, "error": 0}, 5, "bind counters")
    assert binding_successes(k) == {"tiny": 1, "large": 1}


def test_unschedulable_pod_gets_one_event_and_condition(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1", cpu="2")
    add_nodes(k, "n2", "n3", cpu="8")
    scores = FakeScores({**allow("n1"), **deny("n2", "n3")})
    inst = start_scheduler(k.url, scores)
    add_pods(k, "huge", cpu="4")
    wait_for(lambda: _condition(k, "huge"), 10, "PodScheduled condition")
    message = "0/3 nodes are available: 1 Insufficient cpu, 2 fuzzy deny (score ≥ 70)."
    cond = _condition(k, "huge")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", message)
    # Backoff 1 s: a second attempt, still one event and one status write.
    wait_for(lambda: inst.stats.unschedulable_counts()["resources"] >= 2, 10, "two attempts")
    events = _events(k, "huge", "FailedScheduling")
    assert len(events) == 1 and events[0]["type"] == "Warning" and events[0]["message"] == message
    assert k.server.count("patch", "pods/status") == 1
    assert inst.stats.unschedulable_counts()["fuzzy_deny"] >= 2
    # A new reason is a new message: one more event, the condition follows.
    scores.set({**allow("n1"), **deny("n3")})
    new = "0/3 nodes are available: 1 Insufficient cpu, 1 fuzzy deny (score ≥ 70), 1 node(s) had no fresh fuzzy score."
    wait_for(lambda: (_condition(k, "huge") or {}).get("message") == new, 10, "condition updated")
    assert sorted(e["message"] for e in _events(k, "huge", "FailedScheduling")) == sorted([message, new])
    assert node_of(k, "huge") == ""


def test_malformed_requests_reported_and_others_continue(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1")
    # A POST would be refused by validation in a real cluster; the store takes it as a watch would show it.
    k.store.create("pods", f.pod("bad", cpu="abc"), NS)
    start_scheduler(k.url, FakeScores(allow("n1")))
    add_pods(k, "good")
    wait_for(lambda: node_of(k, "good") == "n1", 10, "good pod bound")
    wait_for(lambda: _condition(k, "bad"), 10, "bad pod's condition")
    message = _condition(k, "bad")["message"]
    assert "invalid quantity 'abc'" in message and "spec.containers[main].resources.requests.cpu" in message
    assert _events(k, "bad", "FailedScheduling")[0]["message"] == message
    assert node_of(k, "bad") == ""


def test_gated_pod_is_left_alone_until_its_last_gate_is_removed(kube_api: KubeAPI, start_scheduler) -> None:
    """kube-scheduler's PreEnqueue (KEP-3521): no bind attempt on a gated pod and nothing written
    about it (the API server marked it SchedulingGated); the update that removes its last gate
    queues it at once — with the resync an hour away, only that watch event can."""
    k = kube_api
    add_nodes(k, "n1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")), poll_s=3600.0)
    add_pods(k, "gated", scheduling_gates=("example.com/a", "example.com/b"))
    # Pods created after it come after it on the pending watch and in the queue (older first):
    # once one is bound, the loop has passed the gated pod.
    add_pods(k, "plain-1")
    wait_for(lambda: node_of(k, "plain-1") == "n1", 5, "the pod behind the gated one bound")
    k.core.patch_namespaced_pod("gated", NS, [{"op": "remove", "path": "/spec/schedulingGates/0"}])
    add_pods(k, "plain-2")
    wait_for(lambda: node_of(k, "plain-2") == "n1", 5, "the pod behind the still-gated one bound")
    assert [status for name, _, status in binding_requests(k) if name == "gated"] == [], "bind attempts"
    assert _events(k, "gated", "FailedScheduling") == [] and k.server.count("patch", "pods/status") == 0
    assert _condition(k, "gated")["reason"] == "SchedulingGated"
    k.core.patch_namespaced_pod("gated", NS, [{"op": "remove", "path": "/spec/schedulingGates"}])
    wait_for(lambda: node_of(k, "gated") == "n1", 2, "bound once its last gate was removed")
    wait_for(lambda: inst.stats.binds()["bound"] == 3, 5, "its bind answered")  # recorded by then
    assert [status for name, _, status in binding_requests(k) if name == "gated"] == [201]
    assert _condition(k, "gated")["status"] == "True"


def test_score_source_down_means_no_binds_and_pods_say_why(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1", "n2")
    scores = FakeScores()
    scores.fail("unreachable")
    inst = start_scheduler(k.url, scores)
    add_pods(k, "p")
    wait_for(lambda: _condition(k, "p"), 10, "condition")
    assert _condition(k, "p")["message"] == "0/2 nodes are available: 2 node(s) had no fresh fuzzy score."
    assert inst.stats.unschedulable_counts()["no_score"] >= 1
    assert node_of(k, "p") == ""
    # Stale records are as good as none: another attempt, still nothing bound.
    scores.set({"n1": ScoreRecord(True, 10.0, False), "n2": ScoreRecord(True, 10.0, False)})
    seen = inst.stats.unschedulable_counts()["no_score"]
    wait_for(lambda: inst.stats.unschedulable_counts()["no_score"] > seen, 5, "an attempt with stale scores")
    assert node_of(k, "p") == ""
    # The source recovers: the pod is bound on its next attempt (backoff 2 s here).
    scores.set(allow("n1", "n2"))
    wait_for(lambda: node_of(k, "p"), 10, "bound after recovery")
    wait_for(lambda: inst.stats.binds()["bound"] == 1, 5, "bind counter")


#: A rate limit counts from a bind's answer: the next request leaves that long after the answer,
#: so it arrives at least that long after the previous request — and later by one bind round
#: trip and a thread wake (≤ 0.06 s measured under `stress-ng --cpu 2` on 2 cores; 0.3 s allowed).
LATE_S = 0.3


def _bind_gaps(k: KubeAPI, count: int) -> list[float]:
    """Seconds between the arrivals of the first `count` binding requests at the server (measured
    there, not by a test thread that polls counters updated after each answer)."""
    wait_for(lambda: len(binding_requests(k)) >= count, 10, f"{count} binds")
    times = [r.received for r in list(k.server.requests) if r.resource == "pods/binding"][:count]
    return [b - a for a, b in itertools.pairwise(times)]


def test_queue_order_and_max_per_cycle(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1", cpu="64", pods="500")
    # creationTimestamp has 1 s resolution, so the two low-priority pods tie on age: name decides.
    for name, prio in (("low-2", 0), ("high", 100), ("low-1", 0)):
        k.store.create("pods", f.pod(name, priority=prio), NS)
    # One bind per 1 s window: one pod per second, in queue order.
    start_scheduler(k.url, FakeScores(allow("n1")), max_per_cycle=1, poll_s=1.0)
    gaps = _bind_gaps(k, 3)
    assert [r.name for r in k.server.requests if r.resource == "pods/binding"] == ["high", "low-1", "low-2"]
    assert all(1.0 <= g <= 1.0 + LATE_S for g in gaps), gaps


def test_placement_delay_spaces_binds(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1", cpu="64", pods="500")
    inst = start_scheduler(k.url, FakeScores(allow("n1")), max_per_cycle=0, poll_s=10.0, placement_delay_s=0.5)
    add_pods(k, "a", "b", "c")
    gaps = _bind_gaps(k, 3)
    assert all(0.5 <= g <= 0.5 + LATE_S for g in gaps), gaps
    wait_for(lambda: inst.stats.binds() == {"bound": 3, "conflict": 0, "error": 0}, 5, "bind counters")


def _scheduler_with_fake_clock(k: KubeAPI, scores: FakeScores, now: list[float],
                               **overrides: Any) -> tuple[Scheduler, threading.Event]:
    from scheduler.cache import ClusterCache, reflectors

    class AlwaysLeader:
        def is_leader(self) -> bool:
            return True

        def remaining(self) -> float:
            return 10.0

    kube = kube_for(k.url)
    cache = ClusterCache(clock=lambda: now[0])
    stop = threading.Event()
    threads = [threading.Thread(target=r.run, args=(stop,), daemon=True)
               for r in reflectors(kube, cache, "fuzzy-scheduler")]
    for t in threads:
        t.start()
    wait_for(cache.synced, 10, "lists")
    sched = Scheduler(fast_config(**overrides), kube=kube, cache=cache, scores=scores, leader=AlwaysLeader(),
                      stats=SchedulerStats(), wake=threading.Event(), clock=lambda: now[0], wall=lambda: 1.7e9)
    return sched, stop


def test_backoff_spaces_attempts_1_2_4_8_seconds(kube_api: KubeAPI) -> None:
    k = kube_api
    add_nodes(k, "n1")
    now = [1000.0]
    sched, stop = _scheduler_with_fake_clock(k, FakeScores(deny("n1")), now)
    try:
        add_pods(k, "p")
        wait_for(lambda: sched._cache.pending(), 5, "pod queued")
        attempts = []
        for tick in range(0, 33):  # every 0.5 s of fake time for 16 s
            now[0] = 1000.0 + tick * 0.5
            if sched.cycle().unschedulable:
                attempts.append(now[0] - 1000.0)
        assert attempts == [0.0, 1.0, 3.0, 7.0, 15.0]
        assert [b - a for a, b in itertools.pairwise(attempts)] == [1.0, 2.0, 4.0, 8.0]
        assert backoff.delay(7) == 60.0
        assert len(_events(k, "p", "FailedScheduling")) == 1, "five attempts, one event"
    finally:
        stop.set()


def _queue(k: KubeAPI, sched: Scheduler, *names: str, **kwargs: Any) -> None:
    add_pods(k, *names, **kwargs)
    wait_for(lambda: set(names) <= {p["metadata"]["name"] for p in sched._cache.pending()}, 5, "queued")


def test_max_per_cycle_holds_over_poll_s_when_pods_trickle_in(kube_api: KubeAPI) -> None:
    """Every new pod wakes a cycle that binds fewer than max_per_cycle: the limit is a window of
    poll_s, not a count per cycle."""
    k = kube_api
    add_nodes(k, "n1", cpu="64", pods="500")
    now = [1000.0]
    sched, stop = _scheduler_with_fake_clock(k, FakeScores(allow("n1")), now, max_per_cycle=3, poll_s=10.0)
    try:
        binds: list[float] = []
        for i in range(40):  # a pod every 0.5 s for 20 s
            _queue(k, sched, f"p{i}")
            binds += [now[0]] * sched.cycle().bound
            now[0] += 0.5
        assert binds == [1000.0, 1000.5, 1001.0, 1010.0, 1010.5, 1011.0]
    finally:
        stop.set()


def test_rate_limited_pods_wait_for_the_limit_without_fetching_scores(kube_api: KubeAPI) -> None:
    k = kube_api
    add_nodes(k, "n1", cpu="64", pods="500")
    now = [1000.0]
    scores = FakeScores(allow("n1"))
    sched, stop = _scheduler_with_fake_clock(k, scores, now, max_per_cycle=1, poll_s=10.0)
    try:
        _queue(k, sched, "a", "b")
        assert sched.cycle().bound == 1 and scores.fetches == 1
        held = [p["metadata"]["name"] for p in sched._cache.pending()]
        for _ in range(5):  # watch events wake the loop while the limit holds
            now[0] += 1.0
            assert sched.cycle().bound == 0
        assert scores.fetches == 1, "a pod held by the rate limit is not evaluated again before the limit lifts"
        assert sched._next_wake(now[0]) == 1010.0
        _queue(k, sched, "c")  # a new pod is evaluated at once (it may be unschedulable: told why)
        assert sched.cycle().bound == 0 and scores.fetches == 2
        assert [p["metadata"]["name"] for p in sched._cache.pending()] == sorted([*held, "c"])
        now[0] = 1010.0
        assert sched.cycle().bound == 1 and scores.fetches == 3
    finally:
        stop.set()


def _tick(sched: Scheduler, scores: FakeScores, now: list[float], until: float, log: list[tuple]) -> None:
    """Cycles every 0.25 s of fake time up to `until` (relative to 1000); logs (t, attempted, bound,
    unschedulable, fetched) of every cycle that attempted a pod or fetched scores."""
    while now[0] - 1000.0 < until:
        now[0] += 0.25
        fetches = scores.fetches
        r = sched.cycle()
        if r.attempted or scores.fetches != fetches:
            log.append((now[0] - 1000.0, r.attempted, r.bound, r.unschedulable, scores.fetches - fetches))


def test_node_turning_allow_wakes_fuzzy_blocked_pods_not_resource_blocked_ones(kube_api: KubeAPI) -> None:
    """kube-scheduler moves unschedulable pods back to the active queue on cluster events that may
    make them schedulable. Here: a score refresh shows a node newly allowed. A pod that failed on
    that node only through the fuzzy filter is attempted at the next cycle — at most poll_s later,
    since the loop refreshes scores at the poll interval while every pod backs off — not at its
    backoff retry. A pod that node cannot take (resources) keeps its backoff."""
    k = kube_api
    add_nodes(k, "a", cpu="1")
    add_nodes(k, "b", cpu="8")
    now = [1000.0]
    scores = FakeScores(deny("a", "b"))
    sched, stop = _scheduler_with_fake_clock(k, scores, now, poll_s=1.0)
    try:
        _queue(k, sched, "fits", cpu="500m")
        _queue(k, sched, "huge", cpu="4")  # a: Insufficient cpu; b: fuzzy deny
        log: list[tuple] = []
        r = sched.cycle()
        assert (r.attempted, r.unschedulable, scores.fetches) == (2, 2, 1)
        _tick(sched, scores, now, 1.5, log)  # second failure at 1.0: both back off until 3.0
        scores.set({**allow("a"), **deny("b")})  # t = 1.5: a turns allow
        assert sched._next_wake(now[0]) == 1002.0, "a score refresh one poll_s after the last fetch"
        _tick(sched, scores, now, 3.0, log)
        assert node_of(k, "fits") == "a"
        assert log == [
            (1.0, 2, 0, 2, 1),
            (2.0, 1, 1, 0, 1),  # refresh: a is allowed now → fits woken and bound; huge not woken
            (3.0, 1, 0, 1, 1),  # huge at its own backoff retry (next: 7.0)
        ]
        scores.set(allow("a", "b"))  # t = 3.0 (after that cycle's fetch): b turns allow
        log.clear()
        _tick(sched, scores, now, 4.0, log)
        assert log == [(4.0, 1, 1, 0, 1)], "huge failed on b through the fuzzy filter: woken, not at 7.0"
        assert node_of(k, "huge") == "b"
    finally:
        stop.set()


def test_woken_pods_still_respect_the_placement_delay(kube_api: KubeAPI) -> None:
    k = kube_api
    add_nodes(k, "a", "b", cpu="1")
    now = [1000.0]
    scores = FakeScores({**allow("a"), **deny("b")})
    sched, stop = _scheduler_with_fake_clock(k, scores, now, poll_s=1.0, placement_delay_s=5.0)
    try:
        _queue(k, sched, "p1", "p2", cpu="1")
        r = sched.cycle()  # p1 → a; p2: a full, b denied
        assert (r.bound, r.unschedulable) == (1, 1)
        log: list[tuple] = []
        _tick(sched, scores, now, 1.5, log)
        scores.set(allow("a", "b"))
        _tick(sched, scores, now, 6.0, log)
        assert log == [
            (1.0, 1, 0, 1, 1),
            (2.0, 1, 0, 0, 1),  # woken by the refresh, schedulable, held by the placement delay
            (5.0, 1, 1, 0, 1),  # 5 s after the first bind
        ]
        assert node_of(k, "p2") == "b"
    finally:
        stop.set()

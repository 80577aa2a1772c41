"""The queue's state machine (scheduler.core.queue) row by row: (state, event, now) → (state, effect),
and its queries (due, to_evaluate, wants_scores, next_wake) as tables. No clock, no threads: the
loop tests (test_loop, test_requeue, test_burst) check that the shell feeds it as described."""

from __future__ import annotations

import math

import pytest

from scheduler.core.backoff import BackoffState
from scheduler.core.filters import FUZZY_DENY, NO_SCORE, RESOURCES_FIT, TAINT
from scheduler.core.queue import (
    Action,
    Attempting,
    BindFailed,
    Bound,
    Effect,
    Limits,
    NodesChanged,
    PodState,
    QueueState,
    Reported,
    Schedulable,
    SchedulingQueue,
    ScoresFetched,
    Synced,
    Unschedulable,
)

LIMITS = Limits(max_per_cycle=1, poll_s=10.0, placement_delay_s=5.0)
NONE = Effect()
F = frozenset


def B(failures: int, not_before: float) -> BackoffState:
    return BackoffState(failures, not_before)


def S(pods: dict[str, PodState] | None = None, binds: tuple[float, ...] = (), last_fetch: float = -math.inf):
    return QueueState(pods or {}, binds, last_fetch)


TRANSITIONS = [
    # name, state, event, now, expected state, expected effect
    ("synced forgets pods no longer pending",
     S({"a": PodState(held=True), "b": PodState(backoff=B(1, 5.0))}), Synced(F({"b", "c"})), 0.0,
     S({"b": PodState(backoff=B(1, 5.0))}), NONE),
    ("a changed node wakes the pods that failed on it, failure count kept",
     S({"a": PodState(backoff=B(2, 103.0), node_blocked=F({"n1"})),
        "b": PodState(backoff=B(1, 101.0), node_blocked=F({"n2"}))}),
     NodesChanged(F({"n1"})), 100.0,
     S({"a": PodState(backoff=B(2, 100.0)),
        "b": PodState(backoff=B(1, 101.0), node_blocked=F({"n2"}))}), Effect(woken=("a",))),
    ("a new node wakes every unschedulable pod, not an invalid one",
     S({"a": PodState(backoff=B(1, 101.0), node_blocked=F()),
        "bad": PodState(backoff=B(3, 104.0))}),
     NodesChanged(F({"n9"}), added=True), 100.0,
     S({"a": PodState(backoff=B(1, 100.0)), "bad": PodState(backoff=B(3, 104.0))}), Effect(woken=("a",))),
    ("no node change: nothing",
     S({"a": PodState(backoff=B(1, 101.0), node_blocked=F())}), NodesChanged(F(), added=True), 100.0,
     S({"a": PodState(backoff=B(1, 101.0), node_blocked=F())}), NONE),
    ("a fetch showing a denied node allowed wakes its pods; node-blocking stays",
     S({"a": PodState(backoff=B(4, 108.0), score_blocked=F({"n1", "n2"}), node_blocked=F({"n3"})),
        "b": PodState(backoff=B(1, 101.0), score_blocked=F({"n4"}))}),
     ScoresFetched(F({"n2", "n3"})), 100.0,
     S({"a": PodState(backoff=B(4, 100.0), node_blocked=F({"n3"})),
        "b": PodState(backoff=B(1, 101.0), score_blocked=F({"n4"}))}, last_fetch=100.0), Effect(woken=("a",))),
    ("a fetch records its time even when it wakes no one",
     S({"b": PodState(score_blocked=F({"n4"}))}, last_fetch=90.0), ScoresFetched(F()), 100.0,
     S({"b": PodState(score_blocked=F({"n4"}))}, last_fetch=100.0), NONE),
    ("an attempt clears held and blocked, keeps backoff and what was reported",
     S({"a": PodState(backoff=B(1, 99.0), held=True, score_blocked=F({"n1"}), node_blocked=F(), event_key="k")}),
     Attempting("a"), 100.0,
     S({"a": PodState(backoff=B(1, 99.0), event_key="k")}), NONE),
    ("unschedulable: backoff, fuzzy failures apart from the others, report a new message",
     S(), Unschedulable("a", {"n1": FUZZY_DENY, "n2": NO_SCORE, "n3": TAINT}, "k1"), 100.0,
     S({"a": PodState(backoff=B(1, 101.0), score_blocked=F({"n1", "n2"}), node_blocked=F({"n3"}))}),
     Effect(Action.REPORT)),
    ("unschedulable again with the same message: wait doubles, no second report",
     S({"a": PodState(backoff=B(1, 101.0), event_key="k1")}), Unschedulable("a", {"n3": RESOURCES_FIT}, "k1"),
     101.0, S({"a": PodState(backoff=B(2, 103.0), node_blocked=F({"n3"}), event_key="k1")}), NONE),
    ("an invalid pod backs off and is blocked on nothing (no change wakes it)",
     S(), Unschedulable("bad", None, "k"), 100.0, S({"bad": PodState(backoff=B(1, 101.0))}), Effect(Action.REPORT)),
    ("reported event key remembered",
     S({"a": PodState(backoff=B(1, 101.0), condition="m")}), Reported("a", event_key="k"), 100.0,
     S({"a": PodState(backoff=B(1, 101.0), event_key="k", condition="m")}), NONE),
    ("reported condition remembered, event key kept",
     S({"a": PodState(event_key="k")}), Reported("a", condition="m2"), 100.0,
     S({"a": PodState(event_key="k", condition="m2")}), NONE),
    ("schedulable with no bind yet: bind",
     S(), Schedulable("a"), 100.0, S(), Effect(Action.BIND)),
    ("schedulable within placement_delay_s of the last bind: held, no backoff",
     S(binds=(98.0,)), Schedulable("a"), 100.0, S({"a": PodState(held=True)}, binds=(98.0,)), Effect(Action.HOLD)),
    ("past the delay but inside the poll_s window of max_per_cycle binds: held",
     S(binds=(100.0,)), Schedulable("a"), 106.0, S({"a": PodState(held=True)}, binds=(100.0,)),
     Effect(Action.HOLD)),
    ("the window lifted: bind",
     S(binds=(100.0,)), Schedulable("a"), 110.0, S(binds=(100.0,)), Effect(Action.BIND)),
    ("bound: time recorded (one kept for max_per_cycle=1), backoff reset, the default state not kept",
     S({"a": PodState(backoff=B(3, 99.0))}, binds=(80.0,)), Bound("a"), 100.0, S(binds=(100.0,)), NONE),
    ("a failed bind backs off",
     S({"a": PodState(backoff=B(1, 99.0))}), BindFailed("a"), 100.0, S({"a": PodState(backoff=B(2, 102.0))}), NONE),
]


@pytest.mark.parametrize(("name", "state", "event", "now", "expected", "effect"), TRANSITIONS,
                         ids=[row[0] for row in TRANSITIONS])
def test_transition_table(name, state, event, now, expected, effect):
    queue = SchedulingQueue(LIMITS, state)
    assert queue.apply(event, now) == effect, name
    assert queue.state() == expected, name


def test_bind_times_kept_as_many_as_the_window_needs():
    queue = SchedulingQueue(Limits(max_per_cycle=3, poll_s=10.0, placement_delay_s=0.0))
    for now in (1.0, 2.0, 3.0):
        assert queue.apply(Schedulable("p"), now).action is Action.BIND
        queue.apply(Bound("p"), now)
    assert queue.apply(Schedulable("p"), 4.0).action is Action.HOLD, "3 binds in the window 1..11"
    assert queue.apply(Schedulable("p"), 11.0).action is Action.BIND
    queue.apply(Bound("p"), 11.0)
    assert queue.state().binds == (2.0, 3.0, 11.0)
    assert queue.bind_not_before() == 12.0, "the 3rd last bind + poll_s"


@pytest.mark.parametrize(
    ("name", "limits", "binds", "expected"),
    [
        ("no bind yet", LIMITS, (), -math.inf),
        ("delay after the last bind", Limits(0, 10.0, 5.0), (100.0,), 105.0),
        ("window after the max_per_cycle-th last bind", Limits(1, 10.0, 5.0), (100.0,), 110.0),
        ("window not full", Limits(2, 10.0, 0.0), (100.0,), -math.inf),
        ("both limits off", Limits(0, 0.0, 0.0), (100.0,), -math.inf),
        ("poll_s 0: no window", Limits(1, 0.0, 5.0), (100.0,), 105.0),
    ],
)
def test_bind_not_before_table(name, limits, binds, expected):
    assert SchedulingQueue(limits, S(binds=binds)).bind_not_before() == expected, name


NEXT_WAKE = [
    # name, limits, state, pending, now, active, expected
    ("not synced or not leading: resync", LIMITS, S(), {"a"}, 100.0, False, 110.0),
    ("nothing pending: resync", LIMITS, S(), set(), 100.0, True, 110.0),
    ("poll_s 0 and nothing pending: never", Limits(1, 0.0, 5.0), S(), set(), 100.0, True, math.inf),
    ("a pod not evaluated yet: now", LIMITS, S(), {"a"}, 100.0, True, 100.0),
    ("backing off: its retry", LIMITS, S({"a": PodState(backoff=B(2, 103.0))}), {"a"}, 100.0, True, 103.0),
    ("backoff beyond resync: resync", LIMITS, S({"a": PodState(backoff=B(7, 160.0))}), {"a"}, 100.0, True, 110.0),
    ("all due pods held: when the limit lifts (the window: the last bind + poll_s)", LIMITS,
     S({"a": PodState(held=True)}, binds=(98.0,)), {"a"}, 100.0, True, 108.0),
    ("all due pods held: when the limit lifts (the delay)", Limits(0, 10.0, 5.0),
     S({"a": PodState(held=True)}, binds=(98.0,)), {"a"}, 100.0, True, 103.0),
    ("held but a new pod is due: now", LIMITS,
     S({"a": PodState(held=True)}, binds=(98.0,)), {"a", "b"}, 100.0, True, 100.0),
    ("waiting for a node to turn allow: a refresh poll_s after the last fetch", LIMITS,
     S({"a": PodState(backoff=B(6, 130.0), score_blocked=F({"n1"}))}, last_fetch=95.0), {"a"}, 100.0, True,
     105.0),
    ("poll_s 0: refresh every backoff.INITIAL_S", Limits(1, 0.0, 5.0),
     S({"a": PodState(backoff=B(6, 130.0), score_blocked=F({"n1"}))}, last_fetch=100.0), {"a"}, 100.5, True,
     101.0),
    ("state of pods no longer pending is ignored", LIMITS,
     S({"gone": PodState(backoff=B(1, 101.0), score_blocked=F({"n1"}))}), {"a"}, 100.0, True, 100.0),
]


@pytest.mark.parametrize(("name", "limits", "state", "pending", "now", "active", "expected"), NEXT_WAKE,
                         ids=[row[0] for row in NEXT_WAKE])
def test_next_wake_table(name, limits, state, pending, now, active, expected):
    assert SchedulingQueue(limits, state).next_wake(pending, now, active=active) == expected, name


@pytest.mark.parametrize(
    ("name", "state", "due", "now", "evaluate", "fetch"),
    [
        ("nothing due, nothing waiting", S(), [], 100.0, False, False),
        ("a due pod", S(), ["a"], 100.0, True, True),
        ("all held, limit in force", S({"a": PodState(held=True)}, binds=(98.0,)), ["a"], 100.0, False, False),
        ("all held, limit lifted", S({"a": PodState(held=True)}, binds=(90.0,)), ["a"], 100.0, True, True),
        ("one held, one new", S({"a": PodState(held=True)}, binds=(98.0,)), ["a", "b"], 100.0, True, True),
        ("none due, a score-blocked pod and no fetch for poll_s: refresh",
         S({"a": PodState(backoff=B(5, 120.0), score_blocked=F({"n"}))}, last_fetch=90.0), [], 100.0, False, True),
        ("none due, fetched recently: no refresh",
         S({"a": PodState(backoff=B(5, 120.0), score_blocked=F({"n"}))}, last_fetch=95.0), [], 100.0, False, False),
    ],
)
def test_evaluate_and_fetch_table(name, state, due, now, evaluate, fetch):
    queue = SchedulingQueue(LIMITS, state)
    assert queue.to_evaluate(due, now) is evaluate, name
    assert queue.wants_scores(due, now) is fetch, name


def _pod(uid: str, created: str, priority: int = 0) -> dict:
    return {"metadata": {"uid": uid, "name": uid, "namespace": "default", "creationTimestamp": created},
            "spec": {"priority": priority}}


def test_due_is_the_pods_not_backing_off_in_queue_order():
    old, new, urgent, waiting = (_pod("old", "2024-01-01T00:00:00Z"), _pod("new", "2024-01-02T00:00:00Z"),
                                 _pod("urgent", "2024-01-03T00:00:00Z", priority=100),
                                 _pod("waiting", "2023-01-01T00:00:00Z"))
    queue = SchedulingQueue(LIMITS, S({"waiting": PodState(backoff=B(1, 101.0))}))
    assert [p["metadata"]["uid"] for p in queue.due([new, waiting, old, urgent], 100.0)] == ["urgent", "old", "new"]
    assert [p["metadata"]["uid"] for p in queue.due([new, waiting], 101.0)] == ["waiting", "new"]


def test_pods_share_blocked_sets_and_forgotten_sets_are_dropped():
    queue = SchedulingQueue(LIMITS)
    failures = {"n1": FUZZY_DENY, "n2": TAINT}
    queue.apply(Unschedulable("a", dict(failures), "k"), 0.0)
    queue.apply(Unschedulable("b", dict(failures), "k"), 0.0)
    assert queue.pod("a").score_blocked is queue.pod("b").score_blocked
    assert queue.pod("a").node_blocked is queue.pod("b").node_blocked
    queue.apply(Synced(F()), 1.0)
    assert queue._interned == {}, "no memory kept for pods that left"

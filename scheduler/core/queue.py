"""The scheduling queue's policy as a pure state machine (docs/design.md#the-fuzzy-scheduler).

It exists so that the loop's *when* — which pods are due, when they are woken, when a rate limit
holds them, when the next cycle must run — is one state that can be tested row by row, apart
from the API calls (`scheduler.loop` is the shell: it feeds the events and carries out the
effects). Nothing here reads a clock or touches a thread: every transition takes `now`
(monotonic seconds from the shell).

**Order.** Pending pods are attempted in `queue_key` order: higher `spec.priority` first, then
older first, then namespace/name, so two replicas and two runs agree:

    key(pod) = (−priority, creationTimestamp, namespace/name)

**State.** Per pod (`PodState`): its backoff (`scheduler.core.backoff`), whether a rate limit
holds it, the nodes its last failed attempt found failing *only* the fuzzy filter
(`score_blocked`, woken when a fetch shows one of them allowed) and the nodes it failed on for
any other reason (`node_blocked`, woken by a change of one of them, or by any new node; `None`
for a pod not to be woken that way: its requests did not parse, or its bind failed), and the
last FailedScheduling event key and PodScheduled condition message written for it (so each is
written once per change). Globally: the times of the last binds (as many as the window limit
needs) and of the last score fetch.

**Events** (`SchedulingQueue.apply(event, now)` → `Effect`):

| event | state change | effect |
|---|---|---|
| `Synced(pending)` | forget pods no longer pending | — |
| `NodesChanged(changed, added)` | node-blocked pods on a changed node (all when `added`) due now | woken uids |
| `ScoresFetched(allowed)` | last fetch = now; score-blocked pods on an allowed node due now | woken uids |
| `Attempting(uid)` | clear held and blocked | — |
| `Unschedulable(uid, failures, key)` | backoff step; remember blocked nodes | `report`: new key |
| `Reported(uid, key, condition)` | remember what was written | — |
| `Schedulable(uid)` | held when a rate limit is in force | `bind` or `hold` |
| `Bound(uid)` | bind time recorded, backoff reset | — |
| `BindFailed(uid)` | backoff step | — |

A wake keeps the pod's failure count (`backoff.wake`). Queries: `due(pods, now)` (pending pods
not backing off, in queue order), `wants_scores(due, now)` (a cycle fetches scores when a due
pod is to be evaluated, or a score-blocked pod has waited `refresh_s` without a fetch),
`to_evaluate(due, now)` (not when every due pod is held by a limit still in force), and
`next_wake(pending, now, active)`, the time the loop must run if no watch event wakes it.

**Rate limits** (`Limits`; 0 disables each): at most `max_per_cycle` binds in any `poll_s`
window and `placement_delay_s` between two binds. A schedulable pod beyond them is held: queued
without backoff and not evaluated again until the limit lifts.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from scheduler.core import backoff
from scheduler.core.backoff import READY, BackoffState
from scheduler.core.filters import FUZZY_DENY, NO_SCORE
from scheduler.core.pods import creation_key, pod_key, priority

Pod = Mapping[str, Any]


def queue_key(pod: Pod) -> tuple[int, float, str]:
    """Sort key of a pending pod: `sorted(pods, key=queue_key)` is the attempt order."""
    return (-priority(pod), creation_key(pod), pod_key(pod))


def pod_uid(pod: Pod) -> str:
    """The uid the queue keys its state by ("" for a pod without one)."""
    uid: str = (pod.get("metadata") or {}).get("uid") or ""
    return uid


@dataclass(frozen=True, slots=True)
class Limits:
    """The rate limits and the resync period (from SchedulerConfig; 0 disables each)."""

    max_per_cycle: int
    poll_s: float
    placement_delay_s: float

    @property
    def refresh_s(self) -> float:
        """Longest time without a score fetch while a pod waits for a node to turn allow."""
        return self.poll_s or backoff.INITIAL_S


@dataclass(frozen=True, slots=True)
class PodState:
    """What the queue remembers of one pending pod (module docstring)."""

    backoff: BackoffState = READY
    held: bool = False
    score_blocked: frozenset[str] = frozenset()
    node_blocked: frozenset[str] | None = None
    event_key: str | None = None
    condition: str | None = None


@dataclass(frozen=True, slots=True)
class QueueState:
    """A snapshot of the whole queue state, to build a queue from and compare (table tests)."""

    pods: Mapping[str, PodState] = field(default_factory=dict)
    binds: tuple[float, ...] = ()
    last_fetch: float = -math.inf


# --- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Synced:
    """The uids pending now (the cache's queue); the others are forgotten."""

    pending: frozenset[str]


@dataclass(frozen=True, slots=True)
class NodesChanged:
    """Nodes changed in a way that may help (cache.take_node_changes); `added`: one is new."""

    changed: frozenset[str]
    added: bool = False


@dataclass(frozen=True, slots=True)
class ScoresFetched:
    """A score fetch at `now`; `allowed`: the nodes it shows allowed and fresh."""

    allowed: frozenset[str]


@dataclass(frozen=True, slots=True)
class Attempting:
    """The pod is being evaluated in this cycle."""

    uid: str


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """No node fits: `failures` maps node → filter reason (None: the pod is invalid and is not
    woken by any change); `event_key` is the dedupe key of its FailedScheduling message."""

    uid: str
    failures: Mapping[str, str] | None
    event_key: str


@dataclass(frozen=True, slots=True)
class Reported:
    """The FailedScheduling event (`event_key`) and/or condition (`condition`) were written."""

    uid: str
    event_key: str | None = None
    condition: str | None = None


@dataclass(frozen=True, slots=True)
class Schedulable:
    """A node was chosen for the pod."""

    uid: str


@dataclass(frozen=True, slots=True)
class Bound:
    uid: str


@dataclass(frozen=True, slots=True)
class BindFailed:
    """The bind failed for a reason worth a retry (5xx, timeout); a conflict is no event."""

    uid: str


Event = Synced | NodesChanged | ScoresFetched | Attempting | Unschedulable | Reported | Schedulable | Bound | BindFailed


class Action(Enum):
    BIND = "bind"
    HOLD = "hold"
    REPORT = "report"


@dataclass(frozen=True, slots=True)
class Effect:
    """What the shell is to do after an event: `action` (bind/hold a schedulable pod, report an
    unschedulable one whose message changed) and the uids an event woke (for the debug log)."""

    action: Action | None = None
    woken: tuple[str, ...] = ()


NOTHING = Effect()


class SchedulingQueue:
    """The state machine of the module docstring (mutable for speed: a cycle with thousands of
    pods applies thousands of events; `state()` is an immutable snapshot)."""

    def __init__(self, limits: Limits, state: QueueState | None = None):
        state = state or QueueState()
        self.limits = limits
        self._pods: dict[str, PodState] = {}
        self._interned: dict[frozenset[str], frozenset[str]] = {}  # pods share a few blocked sets
        for uid, pod in state.pods.items():
            self._put(uid, pod)
        self._binds: deque[float] = deque(state.binds, maxlen=max(1, limits.max_per_cycle))
        self._last_fetch = state.last_fetch

    def state(self) -> QueueState:
        return QueueState(dict(self._pods), tuple(self._binds), self._last_fetch)

    def pod(self, uid: str) -> PodState:
        return self._pods.get(uid, PodState())

    # --- transitions ---------------------------------------------------------------------------
    def apply(self, event: Event, now: float) -> Effect:
        match event:
            case Synced(pending):
                gone = [u for u in self._pods if u not in pending]
                for uid in gone:
                    del self._pods[uid]
                if gone:
                    self._forget_unused_sets()
                return NOTHING
            case NodesChanged(changed, added):
                if not changed:
                    return NOTHING
                return self._wake([uid for uid, p in self._pods.items() if p.node_blocked is not None
                                   and (added or not p.node_blocked.isdisjoint(changed))], now, node_blocked=None)
            case ScoresFetched(allowed):
                self._last_fetch = now
                return self._wake([uid for uid, p in self._pods.items() if not p.score_blocked.isdisjoint(allowed)],
                                  now, score_blocked=frozenset())
            case Attempting(uid):
                self._update(uid, held=False, score_blocked=frozenset(), node_blocked=None)
                return NOTHING
            case Unschedulable(uid, failures, event_key):
                p = self.pod(uid)
                changes: dict[str, Any] = {"backoff": backoff.step(p.backoff, now, failed=True)}
                if failures is not None:
                    fuzzy = frozenset(node for node, reason in failures.items() if reason in (FUZZY_DENY, NO_SCORE))
                    changes["score_blocked"] = fuzzy
                    changes["node_blocked"] = frozenset(failures.keys() - fuzzy)
                self._update(uid, **changes)
                return Effect(Action.REPORT) if p.event_key != event_key else NOTHING
            case Reported(uid, event_key, condition):
                p = self.pod(uid)
                self._update(uid, event_key=event_key or p.event_key, condition=condition or p.condition)
                return NOTHING
            case Schedulable(uid):
                if now < self.bind_not_before():
                    self._update(uid, held=True)
                    return Effect(Action.HOLD)
                return Effect(Action.BIND)
            case Bound(uid):
                self._binds.append(now)
                self._update(uid, backoff=READY)
                return NOTHING
            case BindFailed(uid):
                self._update(uid, backoff=backoff.step(self.pod(uid).backoff, now, failed=True))
                return NOTHING
        raise TypeError(f"not a queue event: {event!r}")

    def _put(self, uid: str, p: PodState) -> None:
        if p == PodState():
            self._pods.pop(uid, None)
            return
        intern = self._interned.setdefault
        if p.score_blocked:
            p = replace(p, score_blocked=intern(p.score_blocked, p.score_blocked))
        if p.node_blocked is not None:
            p = replace(p, node_blocked=intern(p.node_blocked, p.node_blocked))
        self._pods[uid] = p

    def _update(self, uid: str, **changes: Any) -> None:
        self._put(uid, replace(self.pod(uid), **changes))

    def _wake(self, woken: Sequence[str], now: float, **cleared: Any) -> Effect:
        """Clear what woke the pods and make them due from `now`, failure counts kept."""
        if not woken:
            return NOTHING
        for uid in woken:
            p = self._pods[uid]
            self._put(uid, replace(p, backoff=backoff.wake(p.backoff, now), **cleared))
        self._forget_unused_sets()
        return Effect(woken=tuple(woken))

    def _forget_unused_sets(self) -> None:
        live = {s for p in self._pods.values() for s in (p.score_blocked, p.node_blocked) if s is not None}
        self._interned = {s: s for s in self._interned if s in live}

    # --- queries -------------------------------------------------------------------------------
    def bind_not_before(self) -> float:
        """Earliest time of the next bind: `placement_delay_s` after the last bind, and `poll_s`
        after the `max_per_cycle`-th last one."""
        binds, limits = self._binds, self.limits
        times = [-math.inf]
        if binds and limits.placement_delay_s:
            times.append(binds[-1] + limits.placement_delay_s)
        if limits.max_per_cycle and limits.poll_s and len(binds) == limits.max_per_cycle:
            times.append(binds[0] + limits.poll_s)
        return max(times)

    def due(self, pods: Iterable[Pod], now: float) -> list[Pod]:
        """The pods not backing off at `now`, in queue order."""
        return sorted((p for p in pods if backoff.due(self.pod(pod_uid(p)).backoff, now)), key=queue_key)

    def to_evaluate(self, due: Collection[str], now: float) -> bool:
        """Is any due pod to be evaluated now? Not when all are held by a rate limit still in force."""
        return bool(due) and not (now < self.bind_not_before() and all(self.pod(uid).held for uid in due))

    def wants_scores(self, due: Collection[str], now: float) -> bool:
        """Does a cycle at `now` fetch scores: a due pod to evaluate, or a score refresh due?"""
        return self.to_evaluate(due, now) or self._refresh_due(now)

    def _refresh_due(self, now: float) -> bool:
        return any(p.score_blocked for p in self._pods.values()) and now >= self._last_fetch + self.limits.refresh_s

    def next_wake(self, pending: Collection[str], now: float, *, active: bool) -> float:
        """When the next cycle is due if no event wakes the loop earlier. `active`: the caches
        are synced and this replica leads (their changes wake the loop themselves)."""
        resync = now + self.limits.poll_s if self.limits.poll_s else math.inf
        if not active or not pending:
            return resync
        states = {uid: self.pod(uid) for uid in pending}
        later = [p.backoff.not_before for p in states.values() if p.backoff.not_before > now]
        times = [resync, min(later)] if later else [resync]
        if any(p.score_blocked for p in states.values()):
            times.append(self._last_fetch + self.limits.refresh_s)
        due = [p for p in states.values() if p.backoff.not_before <= now]
        if due:
            # Held by a rate limit: retry when it lifts; a pod not evaluated yet: now.
            times.append(max(self.bind_not_before(), now) if all(p.held for p in due) else now)
        return min(times)

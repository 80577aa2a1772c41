"""The scheduling loop: queue → one score fetch → filters + choice → bind or explain, per cycle.

A **cycle** runs when the loop is woken (a watch event that may make a pod schedulable, a
leadership change), when a pod's backoff expires, when a rate limit lifts, and at least every
`poll_s` (resync). It takes the pending pods (the cache's queue: not gated, not being deleted)
that are due (not backing off) in queue order (priority, then age), fetches every node's fuzzy
decision once, and for each pod runs `scheduler.core` (`decide`) against the cache's NodeTable:

- a node was chosen → bind (pods/binding, uid precondition), count it on the node at once
  (assume cache; `finish_binding` once the call returns), `Scheduled` event. 409/404 → the pod
  is gone or placed by someone else: dropped and counted as `conflict`, never retried blindly.
  Other failures (5xx, timeout) → `error`, retried after the pod's backoff; after a lost answer
  (timeout, reset) the pod stays assumed on the node, because the bind may have happened, until
  the watches tell (cache docstring); its retry is evaluated without that assumption.
- no node fits (or its requests do not parse) → `FailedScheduling` Warning event once per
  distinct message per pod (core.messages.dedupe_key; the event name derives from it, so other
  replicas and restarts do not repeat it either), `PodScheduled=False` patched only when it
  changes, per-pod backoff 1 s → 60 s.

**Waking backed-off pods** (kube-scheduler moves unschedulable pods back to the active queue on
cluster events that may make them schedulable): a pod's failed attempt remembers the nodes it
failed only through the fuzzy filter (`fuzzy_deny`, `no_score` — the last filter, so those nodes
passed every other one). When a score fetch shows one of them allowed and fresh, the pod is due
at once (`backoff.wake`: its failure count is kept) and is attempted in that same cycle, still
under the rate limits below. A pod blocked on a node by anything else (resources, taints, …) is
not woken by a score change. Scores are fetched by the cycles that attempt pods, and — while such
a pod backs off and no cycle fetched for `poll_s` (1 s when 0) — by a refresh, one query per
interval like any cycle, so a node turning allow is seen within `poll_s`, not at the next
backoff retry (up to 60 s).

The attempt also remembers the nodes it failed on for any other reason (not_ready, taint,
selector, affinity, resources). Every cycle takes from the cache the nodes that changed in a way
that may help since the last cycle (`ClusterCache.take_node_changes`, from watch events: a node
added or changed in what the filters read, capacity freed by a bound pod leaving) and wakes the
pods that failed on one of them that way — and every unschedulable pod when a node is new (it was
not evaluated against it). The node and pod watches wake the loop, so such a pod is attempted at
once, under the same rate limits, not at its backoff retry. A pod whose requests do not parse,
or whose bind failed, is not woken.

**Rate limits**, the seed's semantics applied correctly (0 disables each): at most
`max_per_cycle` binds in any `poll_s` window — a rate of max_per_cycle / poll_s however often
watch events wake the loop — and `placement_delay_s` between any two binds. A pod beyond the
limit is still evaluated once (an unschedulable pod is told why at once), then held: queued
without backoff, and not evaluated again — no score fetch — until the limit lifts, unless a new
pod needs evaluating.

Only the leader binds or writes feedback; `is_leader()` is checked before every pod, so a
replica that lost its lease stops within one pod, and a bind's request timeout is capped at the
leadership time left (`remaining()`), so no bind is still awaited after the renew deadline.
Everything is injected (kube wrapper, cache, score source, elector, clock); `cycle()` is one pass
and is what the backoff tests drive with a fake clock. `Runtime` wires one scheduler instance
(reflectors, elector, loop) for `python -m scheduler`, the tests and the benchmark; its `ready()`
is /readyz.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from scheduler.cache import ClusterCache, Reflector, reflectors
from scheduler.config import SchedulerConfig
from scheduler.core.choose import decide
from scheduler.core.filters import RESOURCES_FIT, ScoreTable, pod_view
from scheduler.core.messages import (
    EVENT_REASON,
    condition_update,
    dedupe_key,
    failed_scheduling_message,
    invalid_pod_message,
    reason_counts,
    rfc3339,
)
from scheduler.core.pods import pod_key
from scheduler.core.quantity import QuantityError
from scheduler.core.queue import (
    Action,
    Attempting,
    BindFailed,
    Bound,
    Limits,
    NodesChanged,
    Reported,
    Schedulable,
    SchedulingQueue,
    ScoresFetched,
    Synced,
    Unschedulable,
    pod_uid,
)
from scheduler.kube import BOUND, CONFLICT, Kube, KubeError
from scheduler.leader import LeaderElector
from scheduler.metrics import SchedulerStats
from scheduler.scores import Scores, ScoreSource

log = logging.getLogger(__name__)

SCHEDULED_REASON = "Scheduled"


class Leader(Protocol):
    def is_leader(self) -> bool: ...

    def remaining(self) -> float:
        """Seconds of leadership left (0 when not leading)."""
        ...


def _meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def event_body(pod: Mapping[str, Any], *, reason: str, kind: str, message: str, key: str, component: str,
               instance: str, wall: float) -> dict[str, Any]:
    """A core/v1 Event about `pod`. Its name is the pod name + a digest of `key` (the dedupe
    key), so the same event written twice — by a restarted or second replica — is one object."""
    meta = _meta(pod)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stamp = rfc3339(wall)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{digest}", "namespace": meta.get("namespace") or "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name"),
                           "namespace": meta.get("namespace") or "default", "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
        # The legacy (core/v1) shape without eventTime, which `kubectl describe pod` lists.
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


@dataclass(frozen=True)
class CycleResult:
    """What one cycle did (for tests and the debug log)."""

    attempted: int = 0
    bound: int = 0
    unschedulable: int = 0
    conflicts: int = 0
    errors: int = 0
    score_error: str | None = None


class Scheduler:
    """The loop of the module docstring: the shell around `scheduler.core.queue`, which decides
    when; this class fetches, decides per pod (`scheduler.core.choose`), binds and reports."""

    def __init__(
        self,
        cfg: SchedulerConfig,
        *,
        kube: Kube,
        cache: ClusterCache,
        scores: ScoreSource,
        leader: Leader,
        stats: SchedulerStats,
        wake: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self._cfg = cfg
        self._kube = kube
        self._cache = cache
        self._scores = scores
        self._leader = leader
        self._stats = stats
        self._wake = wake
        self._clock, self._wall = clock, wall
        self._queue = SchedulingQueue(Limits(cfg.max_per_cycle, cfg.poll_s, cfg.placement_delay_s))
        self._score_error: str | None = None  # the last state logged (one line per change)

    # --- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        # The loop sleeps on `wake`; relay `stop` to it so a SIGTERM ends the wait at once.
        def relay() -> None:
            stop.wait()
            self._wake.set()

        threading.Thread(target=relay, name="stop-relay", daemon=True).start()
        while not stop.is_set():
            now = self._clock()
            timeout = self._next_wake(now) - now
            if timeout > 0:
                self._wake.wait(None if math.isinf(timeout) else timeout)
            if stop.is_set():
                return
            self._wake.clear()
            try:
                self.cycle()
            except Exception:  # a bug must not end scheduling: log it, back off, carry on
                log.exception("event=cycle_failed")
                stop.wait(1.0)

    def _next_wake(self, now: float) -> float:
        """When the next cycle is due if no event wakes the loop earlier."""
        active = self._cache.synced() and self._leader.is_leader()
        pending = {pod_uid(p) for p in self._cache.pending()} if active else set()
        return self._queue.next_wake(pending, now, active=active)

    # --- one cycle -----------------------------------------------------------------------------
    def cycle(self) -> CycleResult:
        queue = self._queue
        now = self._clock()
        pending = self._cache.pending()
        self._stats.pending(len(pending))
        queue.apply(Synced(frozenset(pod_uid(p) for p in pending)), now)
        changed, added = self._cache.take_node_changes()
        if woken := queue.apply(NodesChanged(changed, added), now).woken:
            log.debug("event=pods_woken cause=node_change pods=%d", len(woken))
        if not pending or not self._cache.synced() or not self._leader.is_leader():
            return CycleResult()
        due = queue.due(pending, now)
        if not queue.wants_scores([pod_uid(p) for p in due], now):
            return CycleResult()
        fetched = self._fetch_scores()
        score_table = ScoreTable(fetched.records)
        if woken := queue.apply(ScoresFetched(score_table.allowed), now).woken:
            log.debug("event=pods_woken cause=score_refresh pods=%d", len(woken))
            due = queue.due(pending, now)
        if not queue.to_evaluate([pod_uid(p) for p in due], now):
            return CycleResult(score_error=fetched.error)
        bound = unschedulable = conflicts = errors = 0
        for pod in due:
            if not self._leader.is_leader():
                break
            uid = pod_uid(pod)
            queue.apply(Attempting(uid), now)
            started = time.perf_counter()
            try:
                view = pod_view(pod)
                decision = decide(view, self._cache.table(pod), score_table)
            except QuantityError as exc:
                self._stats.attempt(time.perf_counter() - started)
                self._unschedulable(pod, invalid_pod_message(exc), {RESOURCES_FIT: 1}, None)
                unschedulable += 1
                continue
            self._stats.attempt(time.perf_counter() - started)
            if decision.node is None:
                message = failed_scheduling_message(decision.total, decision.failures, fetched.records)
                self._unschedulable(pod, message, reason_counts(decision.failures),
                                    {node: failure.reason for node, failure in decision.failures.items()})
                unschedulable += 1
                continue
            if queue.apply(Schedulable(uid), self._clock()).action is Action.HOLD:
                continue  # schedulable but rate-limited: stays queued, no backoff
            lease_left = self._leader.remaining()
            if lease_left <= 0:
                break
            outcome = self._bind(pod, decision.node, view.requests, lease_left)
            if outcome == BOUND:
                bound += 1
            elif outcome == CONFLICT:
                conflicts += 1
            else:
                errors += 1
        result = CycleResult(len(due), bound, unschedulable, conflicts, errors, fetched.error)
        if bound or conflicts or errors:
            log.debug("event=cycle result=%r", result)
        return result

    def _fetch_scores(self) -> Scores:
        fetched = self._scores.fetch()
        if fetched.error != self._score_error:  # one line per change of state, not per cycle
            if fetched.error:
                log.warning("event=score_source_failing source=%s reason=%s effect='no binds until it recovers'",
                            self._scores.name, fetched.error)
            else:
                log.info("event=score_source_recovered source=%s nodes=%d", self._scores.name, len(fetched.records))
            self._score_error = fetched.error
        return fetched

    # --- outcomes ------------------------------------------------------------------------------
    def _bind(self, pod: Mapping[str, Any], node: str, requests: Any, lease_left: float) -> str:
        meta = _meta(pod)
        uid, namespace, name = pod_uid(pod), meta.get("namespace") or "default", meta.get("name") or ""
        # Assumed before the call: the answer may be lost after the API bound the pod.
        self._cache.assume(pod, node, requests)
        outcome = self._kube.bind(namespace, name, uid, node, timeout_s=lease_left)
        self._cache.finish_binding(pod)
        result, detail = outcome.result, outcome.detail
        self._stats.bind(result)
        if result == BOUND:
            self._queue.apply(Bound(uid), self._clock())
            log.debug("event=bound pod=%s/%s node=%s", namespace, name, node)
            self._event(pod, SCHEDULED_REASON, "Normal", f"Successfully assigned {namespace}/{name} to {node}",
                        f"{uid}/{SCHEDULED_REASON}")
        elif result == CONFLICT:
            # Bound elsewhere, deleted, or replaced: off the queue until the watch says it left.
            log.info("event=bind_conflict pod=%s/%s node=%s detail=%r", namespace, name, node, detail)
            self._cache.drop(pod)
        else:
            log.warning("event=bind_failed pod=%s/%s node=%s detail=%r", namespace, name, node, detail)
            self._cache.requeue(pod, keep_assumed=outcome.status is None)
            self._queue.apply(BindFailed(uid), self._clock())
        return result

    def _unschedulable(self, pod: Mapping[str, Any], message: str, reasons: Mapping[str, int],
                       failures: Mapping[str, str] | None) -> None:
        """Count it, back it off, and tell why: the event and the condition, each once per message.
        `failures` (node → reason) is None for an invalid pod, which no change wakes."""
        meta = _meta(pod)
        uid = pod_uid(pod)
        self._stats.unschedulable(reasons)
        key = dedupe_key(uid, message)
        effect = self._queue.apply(Unschedulable(uid, failures, key), self._clock())
        if effect.action is Action.REPORT and self._event(pod, EVENT_REASON, "Warning", message, key):
            self._queue.apply(Reported(uid, event_key=key), self._clock())
        condition = condition_update(pod, message, self._wall())
        if condition is not None and self._queue.pod(uid).condition != message:
            try:
                self._kube.patch_pod_status(meta.get("namespace") or "default", meta.get("name") or "", uid,
                                            condition)
                self._queue.apply(Reported(uid, condition=message), self._clock())
            except KubeError as exc:
                log.debug("event=condition_not_written pod=%s error=%r", pod_key(pod), str(exc))

    def _event(self, pod: Mapping[str, Any], reason: str, kind: str, message: str, key: str) -> bool:
        body = event_body(pod, reason=reason, kind=kind, message=message, key=key,
                          component=self._cfg.scheduler_name, instance=self._cfg.identity, wall=self._wall())
        try:
            self._kube.create_event(body["metadata"]["namespace"], body)
            return True
        except KubeError as exc:
            log.debug("event=event_not_written pod=%s reason=%s error=%r", pod_key(pod), reason, str(exc))
            return False


class Runtime:
    """One scheduler instance: cache + three reflectors + leader elector + loop. `run(stop)`
    starts the reflector and elector threads, runs the loop in the caller's thread, and on
    `stop` ends the loop first, then (with `release=True`, a SIGTERM) hands the lease over,
    then stops the watches. `release=False` imitates a crash for failover tests."""

    def __init__(self, cfg: SchedulerConfig, *, kube: Kube, scores: ScoreSource,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.cfg = cfg
        self.kube = kube
        self.wake = threading.Event()
        self.stats = SchedulerStats()
        self.cache = ClusterCache(on_change=self.wake.set, clock=clock)
        self.reflectors: list[Reflector] = reflectors(kube, self.cache, cfg.scheduler_name,
                                                      watch_timeout_s=cfg.watch_timeout_s, clock=clock)
        self.elector = LeaderElector(
            kube, cfg.namespace, cfg.identity, lease_duration_s=cfg.lease_duration_s,
            renew_deadline_s=cfg.renew_deadline_s, retry_period_s=cfg.retry_period_s,
            on_change=lambda leading: self.wake.set(), clock=clock, wall=wall)
        self.scheduler = Scheduler(cfg, kube=kube, cache=self.cache, scores=scores, leader=self.elector,
                                   stats=self.stats, wake=self.wake, clock=clock, wall=wall)
        self._threads: list[threading.Thread] = []  # reflectors and elector, while `run` runs

    def ready(self) -> bool:
        """/readyz: the caches synced, and the reflector and elector threads alive and not failing
        for long (their loops survive errors, so a stuck replica shows here, not as a dead thread)."""
        return (self.cache.synced() and bool(self._threads) and all(t.is_alive() for t in self._threads)
                and all(r.healthy() for r in self.reflectors) and self.elector.healthy())

    def run(self, stop: threading.Event, *, release: bool = True) -> None:
        watches_stop, lease_stop = threading.Event(), threading.Event()
        threads = [threading.Thread(target=r.run, args=(watches_stop,), name=f"reflector-{r.kind}", daemon=True)
                   for r in self.reflectors]
        elector = threading.Thread(target=self._lead, args=(lease_stop, release), name="leader-elector", daemon=True)
        self._threads = [*threads, elector]
        for t in self._threads:
            t.start()
        try:
            self.scheduler.run(stop)
        finally:
            lease_stop.set()
            elector.join()
            watches_stop.set()
            for r in self.reflectors:
                r.interrupt()
            for t in threads:
                t.join(timeout=5.0)

    def _lead(self, stop: threading.Event, release: bool) -> None:
        if release:
            self.elector.run(stop)
            return
        while not stop.is_set():  # a "crash": renew until stopped, never release
            self.elector.try_acquire_or_renew()
            stop.wait(self.cfg.retry_period_s)

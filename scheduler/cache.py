"""What the scheduler knows of the cluster, kept current by watches instead of polling.

Three reflectors (list, then watch from the list's resourceVersion and resume from the last
event or bookmark when the server ends the watch; relist, after a backoff of 0.5 s doubling to
30 s, on 410 Gone, a lost connection, an API error or a bug — docs/design.md; never give up) feed one
`ClusterCache`. Watches start at least `min_interval_s` apart, so a proxy that closes them at
once cannot make a hot loop; a reflector failing for `unhealthy_after_s` reports itself unhealthy
(readiness).

- **pending**: pods with `spec.schedulerName=<ours>,spec.nodeName=` — the queue, without pods
  being deleted (`metadata.deletionTimestamp`, as kube-scheduler) or gated (`spec.schedulingGates`,
  kube-scheduler's PreEnqueue: no attempt, no event; the API server itself marks such a pod
  PodScheduled=False SchedulingGated). The update that removes the last gate queues the pod and
  wakes the loop;
- **nodes**: every node, parsed once per change into `NodeInfo` for the core's `NodeTable`;
- **bound**: non-terminated pods with a node (`status.phase!=Succeeded,status.phase!=Failed,
  spec.nodeName!=`) — the usage ledger (requests per node) the resource filter needs. Pods
  other schedulers placed count like ours. (`spec.nodeName!=` keeps pending pods, which use
  nothing yet, off this watch.)

The **assume cache** (kube-scheduler's AssumePod / FinishBinding): a pod this scheduler binds
is counted on its node at once (`assume`, before the bind call), so the next pod of the same
cycle cannot take the same capacity. The capacity stays taken until the cluster tells what
became of the pod — never by a timer (kube-scheduler dropped its expiry too: with the bound
watch down for longer than the timer, the next bind would overcommit the node). It is released
or moved by:

- the bound watch's event for the pod (same ledger key, the uid: it replaces the assumption, on
  whatever node it shows) or its DELETED;
- a relist of bound pods started after the bind call returned (`finish_binding`) and not
  showing the pod (it is gone);
- a pending-watch event showing the pod being deleted, still without a node: the API never
  binds such a pod, so a bind whose answer was lost did not happen;
- the bind call failing for sure (an API error status; 409/404: `drop`).

The bind itself moves the pod off the pending selector, whose DELETED (with the previous object)
usually comes before the bound watch shows the pod: that releases nothing. A bound pod is also
tombstoned in the queue until the pending watch reports it gone, so a late event from before
the bind cannot queue it again. A pod requeued after a lost answer keeps its assumption, and is
evaluated without it (`table(pod)`), so it does not compete with itself for what it holds.

Reads (`pending`, `table`) are snapshots under one lock; the NodeTable is rebuilt lazily after
node changes and updated incrementally after usage changes. `on_change` is called when something
may have made a pending pod schedulable (a pod queued or changed, a node changed, capacity
freed), to wake the loop.

**Node changes** for the loop's requeue of backed-off pods (`take_node_changes`): the names of the
nodes that changed in a way that may let a pod fit since the loop last asked — a node added, a
node whose parsed `NodeInfo` differs (allocatable, labels, hard taints, Ready, cordon; not a
heartbeat), capacity freed by a bound pod leaving (deleted, terminated, gone from a relist) or by
an assumption released — and whether one of them is a node the cache did not know (new).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from scheduler.core import backoff
from scheduler.core.filters import NodeInfo, NodeTable, NodeUsage, node_info
from scheduler.core.pods import (
    ONE_POD,
    TERMINATED_PHASES,
    Resources,
    being_deleted,
    gated,
    node_name,
    pod_key,
    pod_requests,
    usage_key,
)
from scheduler.core.quantity import QuantityError
from scheduler.kube import NODES, PODS, ErrorLog, Kube, WatchStream

log = logging.getLogger(__name__)

PENDING, NODE, BOUND = "pending", "nodes", "bound"
BOUND_SELECTOR = ",".join([*(f"status.phase!={phase}" for phase in TERMINATED_PHASES), "spec.nodeName!="])


def pending_selector(scheduler_name: str) -> str:
    return f"spec.schedulerName={scheduler_name},spec.nodeName="


@dataclass(frozen=True, slots=True)
class Assumed:
    node: str
    requests: Resources
    at: float = math.inf  # monotonic time the bind call returned; +inf while it is in flight


class ClusterCache:
    """Pending pods, nodes and per-node usage (module docstring). Thread-safe."""

    def __init__(self, *, on_change: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic):
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, dict] = {}
        self._tombstones: set[str] = set()  # uids we bound that the pending watch still shows
        self._infos: dict[str, NodeInfo] = {}
        self._usage: dict[str, NodeUsage] = {}
        self._placed: dict[str, tuple[str, Resources]] = {}  # uid -> (node, requests) seen bound
        self._assumed: dict[str, Assumed] = {}
        self._table: NodeTable | None = None  # None: rebuild on the next read
        self._synced: set[str] = set()
        self._changed: set[str] = set()  # nodes changed in a way that may help, since take_node_changes
        self._added = False  # one of them is new

    # --- reads -------------------------------------------------------------------------------
    def synced(self) -> bool:
        """True once all three lists succeeded: before that usage is incomplete (overcommit)."""
        with self._lock:
            return self._synced == {PENDING, NODE, BOUND}

    def pending(self) -> list[dict]:
        with self._lock:
            return list(self._pending.values())

    def table(self, pod: Mapping[str, Any] | None = None) -> NodeTable:
        """Every node with what is counted on it; with `pod`, as that pod sees it: without its
        own assumption (left by a bind whose answer was lost, now retried)."""
        with self._lock:
            if self._table is None:
                self._table = NodeTable.build(
                    replace(info, requested=self._total(name)) for name, info in self._infos.items()
                )
            uid = usage_key(pod) if pod is not None else ""
            own = self._assumed.get(uid)
            if own is None or uid in self._placed or own.node not in self._usage:
                return self._table
            return self._table.with_requested(own.node, self._usage[own.node].remove(uid).total)

    def assumed(self) -> dict[str, str]:
        """uid → node of the binds not yet seen on the bound watch (for tests and debugging)."""
        with self._lock:
            return {uid: a.node for uid, a in self._assumed.items()}

    def take_node_changes(self) -> tuple[frozenset[str], bool]:
        """(nodes changed in a way that may let a pending pod fit, whether one of them is new)
        since the last call (module docstring); the record starts over."""
        with self._lock:
            changed, added = frozenset(self._changed), self._added
            self._changed.clear()
            self._added = False
            return changed, added

    def _total(self, node: str) -> Resources:
        usage = self._usage.get(node)
        return usage.total if usage is not None else Resources()

    # --- the loop's writes -------------------------------------------------------------------
    def assume(self, pod: Mapping[str, Any], node: str, requests: Resources) -> None:
        """Count a pod we are about to bind on `node` and take it off the queue."""
        uid = usage_key(pod)
        with self._lock:
            self._forget_assumed(uid)
            self._assumed[uid] = Assumed(node, requests)
            self._use(node, uid, requests)
            self._dequeue(pod)

    def finish_binding(self, pod: Mapping[str, Any]) -> None:
        """The bind call for an assumed pod returned (whatever its answer): from now on a relist
        may release the assumption (module docstring)."""
        uid = usage_key(pod)
        with self._lock:
            assumed = self._assumed.get(uid)
            if assumed is not None:
                self._assumed[uid] = replace(assumed, at=self._clock())

    def requeue(self, pod: Mapping[str, Any], *, keep_assumed: bool) -> None:
        """Put a pod whose bind failed back on the queue (the loop retries it after its backoff).
        `keep_assumed` when no answer came: the bind may have happened, so the capacity stays
        taken until the watches tell, or the retry is answered (409 → `drop`)."""
        uid = usage_key(pod)
        with self._lock:
            if not keep_assumed:
                self._forget_assumed(uid)
            self._tombstones.discard(uid)
            if uid not in self._placed:
                self._pending.setdefault(pod_key(pod), dict(pod))

    def drop(self, pod: Mapping[str, Any]) -> None:
        """Take a pod off the queue until its watch reports it gone, and off the node we
        assumed (bind answered 409/404: it is elsewhere, deleted or replaced)."""
        with self._lock:
            self._forget_assumed(usage_key(pod))
            self._dequeue(pod)

    def _dequeue(self, pod: Mapping[str, Any]) -> None:
        uid = usage_key(pod)
        self._unqueue(pod_key(pod), uid)
        self._tombstones.add(uid)

    def _unqueue(self, key: str, uid: str) -> None:
        """Take `uid` off the queue, unless a newer pod with the same name replaced it there."""
        queued = self._pending.get(key)
        if queued is not None and usage_key(queued) == uid:
            del self._pending[key]

    # --- ledger helpers (lock held) ------------------------------------------------------------
    def _use(self, node: str, uid: str, requests: Resources) -> None:
        self._set_usage(node, self._usage.get(node, NodeUsage()).add(uid, requests))

    def _unuse(self, node: str, uid: str) -> None:
        if node in self._usage:
            self._set_usage(node, self._usage[node].remove(uid))

    def _set_usage(self, node: str, usage: NodeUsage) -> None:
        self._usage[node] = usage
        if self._table is not None:
            self._table = self._table.with_requested(node, usage.total)

    def _forget_assumed(self, uid: str) -> None:
        old = self._assumed.pop(uid, None)
        if old is not None and self._placed.get(uid, (None,))[0] != old.node:
            self._unuse(old.node, uid)
            self._changed.add(old.node)  # capacity freed

    # --- reflector sinks -----------------------------------------------------------------------
    def replace(self, kind: str, items: list[dict], listed_at: float) -> None:
        """A fresh list of `kind` (started at monotonic `listed_at`) replaces what we had."""
        with self._lock:
            if kind == PENDING:
                # A pod we bound that this list still shows stays off the queue.
                self._tombstones &= {usage_key(p) for p in items}
                for p in items:
                    if being_deleted(p):
                        self._forget_assumed(usage_key(p))  # never bound, and never will be
                self._pending = {pod_key(p): p for p in items
                                 if usage_key(p) not in self._tombstones and not being_deleted(p) and not gated(p)}
            elif kind == NODE:
                old, self._infos = self._infos, {}
                for node_obj in items:
                    self._put_node(node_obj, old)
                self._table = None
            else:
                listed = {usage_key(p): (node_name(p), _requests(p)) for p in items}
                self._changed.update(node for uid, (node, _) in self._placed.items() if uid not in listed)
                self._changed.update(a.node for u, a in self._assumed.items() if u not in listed and a.at < listed_at)
                self._placed = listed
                self._assumed = {u: a for u, a in self._assumed.items() if u not in self._placed and a.at >= listed_at}
                usage: dict[str, NodeUsage] = {}
                for uid, (node, req) in self._placed.items():
                    usage[node] = usage.get(node, NodeUsage()).add(uid, req)
                for uid, a in self._assumed.items():
                    usage[a.node] = usage.get(a.node, NodeUsage()).add(uid, a.requests)
                self._usage = usage
                self._table = None
            self._synced.add(kind)
        self._on_change()

    def apply(self, kind: str, etype: str, obj: dict) -> None:
        """One watch event (ADDED / MODIFIED / DELETED) of `kind`."""
        with self._lock:
            wake = {PENDING: self._apply_pending, NODE: self._apply_node, BOUND: self._apply_bound}[kind](etype, obj)
        if wake:
            self._on_change()

    def _apply_pending(self, etype: str, pod: dict) -> bool:
        uid, key = usage_key(pod), pod_key(pod)
        freed = False
        if being_deleted(pod) and uid in self._assumed:
            # Seen without a node while being deleted: the API never binds it (module docstring).
            self._forget_assumed(uid)
            freed = True
        if etype == "DELETED":
            # Deleted, or bound (by us: the assumption stays until the bound watch tells).
            self._tombstones.discard(uid)
            self._unqueue(key, uid)
            return freed
        if being_deleted(pod) or gated(pod):
            self._unqueue(key, uid)
            return freed
        if uid in self._tombstones:
            return False
        self._pending[key] = pod
        return True

    def _apply_node(self, etype: str, node: dict) -> bool:
        name = (node.get("metadata") or {}).get("name") or ""
        if etype == "DELETED":
            self._infos.pop(name, None)
            self._table = None
            return False
        self._put_node(node, self._infos)
        self._table = None
        return True

    def _put_node(self, node: dict, old: Mapping[str, NodeInfo]) -> None:
        """Parse `node` into the cache; record it as changed unless `old` (what we knew) holds it
        equal — a heartbeat or a change of what the filters do not read."""
        name = (node.get("metadata") or {}).get("name") or ""
        try:
            info = node_info(node)
            before = old.get(name)
            if info != before:
                self._changed.add(name)
                self._added |= before is None
            self._infos[name] = info
        except QuantityError as exc:
            # A node whose allocatable does not parse cannot be filtered: leave it out.
            self._infos.pop(name, None)
            log.warning("event=node_ignored node=%s reason=%r", name, str(exc))

    def _apply_bound(self, etype: str, pod: dict) -> bool:
        uid = usage_key(pod)
        old = self._placed.pop(uid, None)
        if old is not None:
            self._unuse(old[0], uid)
        assumed = self._assumed.pop(uid, None)
        if assumed is not None and (etype == "DELETED" or assumed.node != node_name(pod)):
            self._unuse(assumed.node, uid)
            self._changed.add(assumed.node)  # capacity freed
        if etype == "DELETED":
            if old is not None:
                self._changed.add(old[0])
            return True  # capacity freed
        node, req = node_name(pod), _requests(pod)
        self._placed[uid] = (node, req)
        self._use(node, uid, req)
        return False


def _requests(pod: Mapping[str, Any]) -> Resources:
    """A bound pod's requests. The API validated them, so a parse error means a quantity form
    this parser lacks: count the pod slot rather than lose the pod."""
    try:
        return pod_requests(pod)
    except QuantityError:
        return ONE_POD


class Reflector:
    """List + watch of one kind into the cache (module docstring). `run(stop)` owns the loop;
    `interrupt()` ends a blocked watch at once (called after `stop` is set); `healthy()` is false
    once it has failed for `unhealthy_after_s` without a list or a watch that worked."""

    def __init__(
        self,
        kube: Kube,
        cache: ClusterCache,
        kind: str,
        field_selector: str,
        *,
        watch_timeout_s: float = 300.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        min_interval_s: float = 1.0,
        unhealthy_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._kube = kube
        self._cache = cache
        self.kind = kind
        self._resource = NODES if kind == NODE else PODS
        self._selector = field_selector
        self._timeout = watch_timeout_s
        self._initial, self._max = backoff_initial_s, backoff_max_s
        self._min_interval = min_interval_s
        self._unhealthy_after = unhealthy_after_s
        self._clock = clock
        self._stream: WatchStream | None = None
        self._lock = threading.Lock()
        self._rv = ""  # resourceVersion to watch from; "" = list first
        self._watched_at = -math.inf  # monotonic start of the last watch
        self._errors = ErrorLog(f"list/watch {kind}", clock=clock)
        self.lists = 0  # how many times this reflector listed (1 + relists), for tests and logs

    def healthy(self) -> bool:
        return self._errors.failing_for() < self._unhealthy_after

    def interrupt(self) -> None:
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.stop()

    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                if not self._rv:
                    self._list()
                    self._errors.ok()
                if stop.wait(self._watched_at + self._min_interval - self._clock()):
                    return
                self._watch(stop)
            except Exception as exc:  # 410, a lost connection, an API error or a bug: the thread goes on
                if stop.is_set():
                    return  # our own interrupt() cut the watch
                # Events may have been missed: relist (docs/design.md#the-fuzzy-scheduler), after a growing pause.
                self._rv = ""
                failures += 1
                wait = backoff.delay(failures, self._initial, self._max)
                self._errors.failed(exc, wait)
                stop.wait(wait)
            else:
                failures = 0  # the server ended the watch (its timeout): resume from `_rv`
                self._errors.ok()

    def _list(self) -> None:
        started = self._clock()
        items, rv = self._kube.list(self._resource, self._selector)
        self._cache.replace(self.kind, items, started)
        self._rv = rv
        self.lists += 1
        if self.lists > 1:
            log.info("event=relisted kind=%s items=%d resource_version=%s", self.kind, len(items), rv)

    def _watch(self, stop: threading.Event) -> None:
        """Stream events until the server ends the watch; `_rv` follows the stream's last event
        or bookmark, so a quiet watch resumes from a recent resourceVersion."""
        self._watched_at = self._clock()
        stream = self._kube.watch(self._resource, self._selector, self._rv, timeout_s=self._timeout)
        with self._lock:
            self._stream = stream
        try:
            if stop.is_set():
                return
            for etype, obj in stream:
                if etype in ("ADDED", "MODIFIED", "DELETED"):
                    self._cache.apply(self.kind, etype, obj)
                if stop.is_set():
                    return
        finally:
            self._rv = stream.resource_version or self._rv
            with self._lock:
                self._stream = None


def reflectors(kube: Kube, cache: ClusterCache, scheduler_name: str, *, watch_timeout_s: float = 300.0,
               clock: Callable[[], float] = time.monotonic) -> list[Reflector]:
    """The three reflectors of the module docstring."""
    return [
        Reflector(kube, cache, PENDING, pending_selector(scheduler_name), watch_timeout_s=watch_timeout_s,
                  clock=clock),
        Reflector(kube, cache, NODE, "", watch_timeout_s=watch_timeout_s, clock=clock),
        Reflector(kube, cache, BOUND, BOUND_SELECTOR, watch_timeout_s=watch_timeout_s, clock=clock),
    ]

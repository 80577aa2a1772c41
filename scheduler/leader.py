"""Leader election between scheduler replicas on a coordination.k8s.io/v1 Lease: only the leader binds.

`LeaderElector` is written here rather than taken from `kubernetes.leaderelection`: that module
sleeps with `time.sleep` (no clean stop), never releases the lease on shutdown, and cannot be
given a clock. Semantics follow client-go's `leaderelection` with a `LeaseLock`: optimistic
concurrency on the Lease's resourceVersion, expiry judged by how long the *observed* record has
not changed on our own monotonic clock (no cross-host clock comparison), a renew deadline
shorter than the lease so a cut-off leader stops binding before anyone else may start, and a
release on shutdown (holder cleared, duration 1 s) so the other replica takes over at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from common import names as n
from scheduler.kube import ErrorLog, Kube, KubeError

log = logging.getLogger(__name__)


def micro_time(wall: float) -> str:
    """Unix seconds → metav1.MicroTime (`2024-05-01T12:00:00.123456Z`)."""
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Leader election on a coordination.k8s.io/v1 Lease (module docstring).

    `run(stop)` tries to acquire, then renews, every `retry_period_s` until `stop` is set, then
    releases the lease if it holds it; a failed attempt (API error or bug) is logged by `ErrorLog`
    and retried, never ends the thread. `is_leader()` is true only while the last successful
    renewal is younger than `renew_deadline_s`, judged at the moment of the call, so a leader
    whose renewals fail stops binding on time even if this thread is stuck in a slow request;
    `remaining()` is the leadership time left, which caps every bind's timeout (a bind is never
    awaited past the renew deadline, so it cannot overlap the next leader's binds, who starts no
    sooner than `lease_duration_s` after our last renewal: the difference is the margin for the
    API server's own latency). `healthy()` is false once attempts have failed for
    `unhealthy_after_s`. `on_change(leading)` is called on every transition (to wake the
    scheduling loop)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        identity: str,
        *,
        name: str = n.LEASE_NAME,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        on_change: Callable[[bool], None] = lambda leading: None,
        unhealthy_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self._kube = kube
        self.namespace, self.name, self.identity = namespace, name, identity
        self._duration = lease_duration_s
        self._deadline = renew_deadline_s
        self._retry = retry_period_s
        self._on_change = on_change
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._renewed_at: float | None = None  # monotonic start of the last successful renewal
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0  # monotonic time our GET returned the record first seen as `_observed`
        self._announced = False
        self._errors = ErrorLog(f"lease {namespace}/{name}", clock=clock)
        self._unhealthy_after = unhealthy_after_s

    def remaining(self) -> float:
        """Seconds until the renew deadline of the last successful renewal; 0 when not leading."""
        with self._lock:
            if self._renewed_at is None:
                return 0.0
            return max(0.0, self._renewed_at + self._deadline - self._clock())

    def is_leader(self) -> bool:
        return self.remaining() > 0

    def healthy(self) -> bool:
        return self._errors.failing_for() < self._unhealthy_after

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.try_acquire_or_renew()
            stop.wait(self._retry)
        self.release()

    def _announce(self) -> None:
        leading = self.is_leader()
        if leading != self._announced:
            self._announced = leading
            log.info("event=leadership leader=%d lease=%s/%s identity=%s", int(leading), self.namespace, self.name,
                     self.identity)
            self._on_change(leading)

    def _spec(self, now_wall: float, old: Mapping[str, Any] | None) -> dict[str, Any]:
        old = old or {}
        ours = old.get("holderIdentity") == self.identity
        transitions = int(old.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self._duration)),
            "acquireTime": old.get("acquireTime") if ours and old.get("acquireTime") else micro_time(now_wall),
            "renewTime": micro_time(now_wall),
            "leaseTransitions": transitions if ours else transitions + (1 if old.get("holderIdentity") else 0),
        }

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the lease afterwards."""
        started = self._clock()
        try:
            ok = self._attempt(started)
        except Exception as exc:  # an API error or a bug: this thread must go on (or stop leading on time)
            self._errors.failed(exc, self._retry)
            ok = False
        else:
            self._errors.ok()
        if ok:
            with self._lock:
                self._renewed_at = started
        self._announce()
        return ok

    def _attempt(self, started: float) -> bool:
        now_wall = self._wall()
        try:
            lease = self._kube.get_lease(self.namespace, self.name)
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(now_wall, None)}
            try:
                self._kube.create_lease(self.namespace, body)
            except KubeError as create_exc:
                if create_exc.status == 409:  # another replica created it first
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
        if record != self._observed:
            # Seen when the answer came (client-go's observedTime), not when the GET was sent: a
            # slow read must not make the holder's renewal look older than it is.
            self._observed, self._observed_at = record, self._clock()
        duration = float(spec.get("leaseDurationSeconds") or self._duration)
        if holder and holder != self.identity and started < self._observed_at + duration:
            return False  # held by another replica, and renewed recently as far as we have seen
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": lease["metadata"],
                "spec": self._spec(now_wall, spec)}
        try:
            self._kube.replace_lease(self.namespace, self.name, body)
        except KubeError as exc:
            if exc.status == 409:  # written by someone else since our read: not ours this round
                return False
            raise
        return True

    def release(self) -> None:
        """Stop leading at once, then hand the lease over: holder cleared and duration 1 s, so
        the other replica acquires it on its next attempt instead of waiting for expiry."""
        with self._lock:
            was_leader = self._renewed_at is not None
            self._renewed_at = None
        self._announce()
        if not was_leader:
            return
        try:
            lease = self._kube.get_lease(self.namespace, self.name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = micro_time(self._wall())
            released = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": now,
                        "acquireTime": now}
            self._kube.replace_lease(self.namespace, self.name, {**lease, "spec": released})
            log.info("event=lease_released lease=%s/%s", self.namespace, self.name)
        except KubeError as exc:
            log.warning("event=lease_release_failed lease=%s/%s error=%r effect='the other replica waits for expiry'",
                        self.namespace, self.name, str(exc))

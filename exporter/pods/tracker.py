"""The pod tracker: keeps the kernel's cgroup -> pod table in step with the pod cgroups on the
node, and turns each tick's per-pod counters into CSV rows and the exposed top-K series.

Runs in the sampler's thread, once per tick, after the node's reading (exporter/sources/ebpf.py).
Rescans the hierarchy every `rescan_s` (new pods and new containers of a known pod are
attributed from the next rescan on), and at once when a known pod's directory is gone; such a
pod leaves the table and its counter row is
zeroed before its slot can be reused, so no kernel entry outlives its pod. The exposed series
are cumulative; the `other` series is a running sum of the interval deltas of every pod outside
the top-K, so it only grows however the top-K changes (a pod entering the top-K starts a
series of its own, as any new series does).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from common.core.csvrow import format_number, format_time
from common.names import LEVEL_POD, POD_UID_OTHER
from exporter.bpf import loader
from exporter.core import pods as core
from exporter.core.psi import node_psi
from exporter.pods import discovery

log = logging.getLogger(__name__)

#: Half-life (s) of the recent wait that ranks pods for the top-K: long enough that the exposed
#: set does not flap from one scrape to the next, short enough that today's aggressor is there.
RANK_HALF_LIFE_S = 300.0

class NameLookup(Protocol):
    """uid -> (namespace, name) (exporter/pods/kubenames.py), and whether it is in step with the API."""

    def get(self, uid: str) -> tuple[str, str] | None: ...

    @property
    def available(self) -> bool: ...


@dataclass
class _Pod:
    cgroup: discovery.PodCgroup
    slot: int
    row: np.ndarray | None = None
    usage: discovery.CgroupUsage | None = None
    t: float | None = None
    rank: float = 0.0
    psi: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass
class _Other:
    wait_ns: int = 0
    waits: int = 0
    dstate_ns: int = 0
    dstate: int = 0
    buckets: np.ndarray = field(default_factory=lambda: np.zeros(loader.POD_NBUCKETS, dtype=np.uint64))
    cpu_usec: int = 0


class PodTracker:
    def __init__(
        self,
        probe: loader.Probe,
        root: Path,
        *,
        node: str,
        top_k: int,
        rescan_s: float = 10.0,
        names: NameLookup | None = None,
        cpus: int | None = None,
    ):
        assert probe.pods is not None
        self._probe = probe
        self._root = root
        self._node = node
        self._top_k = top_k
        self._rescan_s = rescan_s
        self._names = names
        self._cpus = cpus or os.cpu_count() or 1
        self._table = core.PodTable(probe.pod_keys(), probe.pods.pods, probe.pods.probes)
        self._pods: dict[str, _Pod] = {}
        self._other = _Other()
        self._scanned_at: float | None = None

    @property
    def table(self) -> core.PodTable:
        return self._table

    def rescan(self) -> None:
        """Bring the table in step with the hierarchy (pods gone out first, so their slots free)."""
        found = discovery.scan(self._root)
        for uid in sorted((set(self._pods) | set(self._table.tracked())) - set(found)):
            self._pods.pop(uid, None)
            slot = self._table.remove(uid)
            if slot is not None:
                self._probe.clear_pod_row(slot)
                log.info("event=pod_gone uid=%s", uid)
        for uid, cgroup in sorted(found.items()):
            new = uid not in self._table.slot_of
            slot = self._table.sync(uid, cgroup.subtree_ids)
            if slot is None:
                continue
            if new:
                self._probe.clear_pod_row(slot)
                self._pods[uid] = _Pod(cgroup, slot)
            else:
                self._pods[uid].cgroup = cgroup

    def tick(self, now: float, wall: datetime) -> core.PodsReport:
        # A pod directory gone between rescans (its cpu.stat unreadable) forces one now: a
        # removed pod leaves within a tick, not a rescan period.
        gone = any(not p.cgroup.path.is_dir() for p in self._pods.values())
        if gone or self._scanned_at is None or now - self._scanned_at >= self._rescan_s:
            self.rescan()
            self._scanned_at = now
        rows = self._probe.read_pods()
        decay = 0.5 ** (1.0 / RANK_HALF_LIFE_S)
        csv_rows, deltas = [], {}
        for uid, pod in sorted(self._pods.items()):
            cur = rows[pod.slot]
            usage = discovery.usage(pod.cgroup.path)
            prev = pod.row if pod.row is not None else np.zeros_like(cur)
            delta = cur - prev
            dt = now - pod.t if pod.t is not None else math.nan
            cpu_util, psi = self._cpu_and_psi(pod.usage, usage, dt)
            pod.rank = pod.rank * decay ** (dt if math.isfinite(dt) else 1.0) + int(delta[loader.POD_RUNQ_SUM_NS])
            deltas[uid] = (delta, pod.usage, usage)
            pod.row, pod.usage, pod.t, pod.psi = cur, usage, now, psi
            csv_rows.append(self._csv_row(wall, uid, pod, delta, cpu_util))
        top, rest = core.top_k({uid: p.rank for uid, p in self._pods.items()}, self._top_k)
        for uid in rest:
            delta, before, after = deltas[uid]
            self._add_other(delta, before, after)
        series = [self._series(uid, self._pods[uid]) for uid in top]
        if rest or self._other.waits or self._other.cpu_usec:
            series.append(self._other_series())
        return core.PodsReport(
            series=tuple(series),
            rows=tuple(tuple(r) for r in csv_rows),
            tracked=len(self._table.slot_of),
            capacity=self._table.capacity,
            overflows=self._table.overflows,
            cgroup_entries=self._table.entries(),
            cgroup_capacity=len(self._probe.pod_keys()),
            names_available=self._names is not None and self._names.available,
        )

    def _cpu_and_psi(self, before, after, dt) -> tuple[float, dict[tuple[str, str], float]]:
        if before is None or not (dt > 0):
            return math.nan, {}
        cpu = math.nan
        if before.cpu_usec is not None and after.cpu_usec is not None and after.cpu_usec >= before.cpu_usec:
            cpu = min(100.0, (after.cpu_usec - before.cpu_usec) / 1e6 / dt / self._cpus * 100.0)
        psi = {}
        for key, total in after.pressure.items():
            old = before.pressure.get(key)
            if old is not None and total >= old:
                psi[key] = min(1.0, (total - old) / 1e6 / dt)
        return cpu, psi

    def _label_names(self, uid: str) -> tuple[str, str]:
        return (self._names.get(uid) if self._names is not None else None) or ("", "")

    def _csv_row(self, wall: datetime, uid: str, pod: _Pod, delta: np.ndarray, cpu_util: float) -> list[str]:
        stats = core.wait_stats(
            int(delta[loader.POD_RUNQ_SUM_NS]), int(delta[loader.POD_RUNQ_COUNT]), delta[loader.POD_BUCKETS :]
        )
        namespace, name = self._label_names(uid)
        return [
            LEVEL_POD, format_time(wall), self._node, namespace, name, uid, str(pod.cgroup.cgroup_id),
            format_number(stats.total_ms, 2), format_number(stats.avg_ms, 4), format_number(stats.p95_ms, 4),
            format_number(stats.p99_ms, 4), format_number(stats.max_ms, 4), str(stats.count),
            # The kernel loses no per-pod sample of its own: a lost timestamp is the node's
            # SchedLat_Dropped. Softirq time is not a task's: not attributed (empty).
            "0", format_number(int(delta[loader.POD_DSTATE_SUM_NS]) / 1e6, 2), str(int(delta[loader.POD_DSTATE_COUNT])),
            "", "", format_number(cpu_util, 6),
            format_number(node_psi({r: v * 100 for (r, k), v in pod.psi.items() if k == "some"}), 6),
        ]

    def _series(self, uid: str, pod: _Pod) -> core.PodSeries:
        row = pod.row
        namespace, name = self._label_names(uid)
        cpu = pod.usage.cpu_usec if pod.usage is not None and pod.usage.cpu_usec is not None else None
        return core.PodSeries(
            uid=uid, namespace=namespace, name=name,
            wait_seconds=int(row[loader.POD_RUNQ_SUM_NS]) / 1e9, waits=int(row[loader.POD_RUNQ_COUNT]),
            dstate_seconds=int(row[loader.POD_DSTATE_SUM_NS]) / 1e9, dstate_episodes=int(row[loader.POD_DSTATE_COUNT]),
            wait_buckets=core.export_buckets(row[loader.POD_BUCKETS :]),
            cpu_seconds=math.nan if cpu is None else cpu / 1e6,
            pressure=dict(pod.psi),
        )

    def _add_other(self, delta, before, after) -> None:
        o = self._other
        o.wait_ns += int(delta[loader.POD_RUNQ_SUM_NS])
        o.waits += int(delta[loader.POD_RUNQ_COUNT])
        o.dstate_ns += int(delta[loader.POD_DSTATE_SUM_NS])
        o.dstate += int(delta[loader.POD_DSTATE_COUNT])
        o.buckets += delta[loader.POD_BUCKETS :]
        if before is not None and before.cpu_usec is not None and after.cpu_usec is not None:
            o.cpu_usec += max(0, after.cpu_usec - before.cpu_usec)

    def _other_series(self) -> core.PodSeries:
        o = self._other
        return core.PodSeries(
            uid=POD_UID_OTHER, namespace="", name="", wait_seconds=o.wait_ns / 1e9, waits=o.waits,
            dstate_seconds=o.dstate_ns / 1e9, dstate_episodes=o.dstate, wait_buckets=core.export_buckets(o.buckets),
            cpu_seconds=o.cpu_usec / 1e6, pressure={},
        )

    def close(self) -> None:
        """Empty the kernel's table (the probe is closed by its owner)."""
        for uid in list(self._table.slot_of):
            self._table.remove(uid)

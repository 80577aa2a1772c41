"""The default source: kernel signals from the eBPF programs, CPU and PSI from /proc.

Once per tick it copies the cumulative kernel counters (exporter/bpf/loader.py), takes the
delta to the previous copy, and turns it into one Reading: the CSV's raw columns
(core/histogram.interval_stats) and the Prometheus telemetry (cumulative histograms, map fill,
program run time). The first tick after attach covers a partial window and only warms the
delta state (docs/design.md#one-interval).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from common import names
from common.core.model import RawInterval
from common.ticker import ticks
from exporter.bpf import loader
from exporter.core import histogram
from exporter.core.model import MapStats, ProgramStats, Reading, Telemetry
from exporter.core.pods import PodsReport
from exporter.pods import discovery
from exporter.pods.tracker import NameLookup, PodTracker

log = logging.getLogger(__name__)


class ProcSample(Protocol):
    """What the /proc sampler reports for one tick (exporter/sources/procstat.py)."""

    cpu_util: float
    psi: float
    pressure: Mapping[tuple[str, str], float]
    pressure_available: Mapping[str, bool]


class ProcSampler(Protocol):
    def sample(self, now_mono: float) -> ProcSample: ...


#: Seconds of partial window after attach that only warm the deltas (see `readings`).
WARM_WINDOW_S = 0.2

# Which kernel histogram row feeds which exported family.
_FAMILIES = (
    (loader.HIST_RUNQ, names.RUNQUEUE_LATENCY.name),
    (loader.HIST_DSTATE, names.DSTATE_DURATION.name),
    (loader.HIST_SOFTIRQ, names.SOFTIRQ_NET_RX_DURATION.name),
)


class EbpfSource:
    """An attached ebpf source; see `open`."""

    name = names.SOURCE_EBPF
    missing_columns: tuple[str, ...] = ()

    def __init__(
        self,
        probe: loader.Probe,
        proc_sampler: ProcSampler,
        interval_s: float,
        clock: Callable[[], float],
        wall: Callable[[], datetime],
        pods: PodTracker | None = None,
    ):
        self._probe = probe
        self._pods = pods
        self._proc = proc_sampler
        self._interval_s = interval_s
        self._clock = clock
        self._wall = wall

    @property
    def pods_on(self) -> bool:
        """Whether per-pod accounting runs (asked for, and a cgroup v2 hierarchy was found)."""
        return self._pods is not None

    @property
    def attached(self) -> Mapping[str, bool]:
        return self._probe.attached

    @property
    def attach_errors(self) -> Mapping[str, str]:
        return self._probe.errors

    def readings(self, stop: threading.Event) -> Iterator[Reading]:
        """One Reading per tick until `stop` is set.

        The window right after attach is partial (tasks already runnable then carry no
        timestamp), so it only warms the deltas (docs/design.md#one-interval). It is kept short: tasks queued at
        attach are switched in within a few milliseconds, and a short warm window brings the
        first whole-interval row that much sooner.
        """
        if stop.wait(min(self._interval_s, WARM_WINDOW_S)):
            return
        previous = self._probe.read()
        self._proc.sample(self._clock())
        for now in ticks(self._interval_s, stop, clock=self._clock):
            current = self._probe.read()
            proc = self._proc.sample(now)
            yield self._reading(previous, current, now, proc)
            previous = current

    def _reading(self, previous: loader.Counters, current: loader.Counters, now: float, proc: ProcSample) -> Reading:
        # Kernel counters only grow, so uint64 differences are exact.
        delta = current.hists - previous.hists
        runq = histogram.interval_stats(
            delta[loader.HIST_RUNQ, loader.BUCKETS :], int(delta[loader.HIST_RUNQ, loader.SUM_NS])
        )
        dstate = histogram.interval_stats(
            delta[loader.HIST_DSTATE, loader.BUCKETS :], int(delta[loader.HIST_DSTATE, loader.SUM_NS])
        )
        softirq = histogram.interval_stats(
            delta[loader.HIST_SOFTIRQ, loader.BUCKETS :], int(delta[loader.HIST_SOFTIRQ, loader.SUM_NS])
        )
        raw = RawInterval(
            time=self._wall(),
            t=now,
            sched_total_ms=runq.total_ms,
            sched_avg_ms=runq.avg_ms,
            sched_p95_ms=runq.p95_ms,
            sched_p99_ms=runq.p99_ms,
            sched_max_ms=runq.max_ms,
            sched_count=runq.count,
            sched_dropped=int(delta[loader.HIST_RUNQ, loader.DROPPED]),
            dstate_total_ms=dstate.total_ms,
            dstate_count=dstate.count,
            softirq_total_ms=softirq.total_ms,
            softirq_count=softirq.count,
            cpu_util=proc.cpu_util,
            psi=proc.psi,
        )
        report = self._pods.tick(now, raw.time) if self._pods is not None else None
        return Reading(raw=raw, telemetry=self._telemetry(current, runq.max_ms, proc, report), pods=report)

    def _telemetry(
        self, current: loader.Counters, max_ms: float, proc: ProcSample, pods: PodsReport | None
    ) -> Telemetry:
        hists = current.hists
        maps = {
            "runq_ts": MapStats(
                entries=current.runq_entries,
                capacity=self._probe.slots,
                update_failures=int(hists[loader.HIST_RUNQ, loader.UPDATE_FAILURES]),
            ),
            "dstate_ts": MapStats(
                entries=current.dstate_entries,
                capacity=self._probe.slots,
                update_failures=int(hists[loader.HIST_DSTATE, loader.UPDATE_FAILURES]),
            ),
        }
        if pods is not None:
            # The cgroup -> pod table: its refusals are ksense_pods_untracked_total.
            maps["pod_keys"] = MapStats(entries=pods.cgroup_entries, capacity=pods.cgroup_capacity, update_failures=0)
        return Telemetry(
            histograms={
                family: histogram.to_export(hists[row, loader.BUCKETS :], int(hists[row, loader.SUM_NS]))
                for row, family in _FAMILIES
            },
            runqueue_max_seconds=max_ms / 1000 if math.isfinite(max_ms) else math.nan,
            runqueue_dropped_total=int(hists[loader.HIST_RUNQ, loader.DROPPED]),
            pressure=dict(proc.pressure),
            pressure_available=dict(proc.pressure_available),
            attached=dict(self._probe.attached),
            programs={
                label: ProgramStats(run_seconds=run_ns / 1e9, runs=runs)
                for label, (run_ns, runs) in self._probe.program_stats().items()
            },
            maps=maps,
        )

    def close(self) -> None:
        """Detach the programs and unmap the counters; idempotent."""
        if self._pods is not None:
            self._pods.close()
            self._pods = None
        self._probe.close()


# Shadows the builtin on purpose: every source module exposes open(); callers say ebpf.open(...).
def open(
    *,
    proc_sampler: ProcSampler,
    interval_s: float,
    slots: int = 65536,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], datetime] = datetime.now,
    attach_as: Mapping[str, str] | None = None,
    pods: PodOptions | None = None,
) -> EbpfSource:
    """Compile and attach the programs; raises SourceUnavailable with the reason.

    `slots` sizes each timestamp table (power of two); `attach_as` is the loader's test hook
    (attach a tracepoint under another name to make it fail); `pods` turns per-pod accounting
    on (left off, with a warning, when no cgroup v2 hierarchy is found).
    """
    root = None
    if pods is not None:
        root = pods.cgroup_root or discovery.find_root()
        if root is None:
            log.warning("event=pod_metrics_off reason='no cgroup v2 hierarchy at %s'",
                        " or ".join(str(p) for p in discovery.CGROUP2_CANDIDATES))
    maps = loader.PodMaps(pods=pods.max_pods, cgroup_slots=pods.cgroup_slots) if root is not None else None
    probe = loader.load(slots=slots, attach_as=attach_as, pods=maps)
    for tracepoint, reason in probe.errors.items():
        log.warning("event=bpf_attach_failed tracepoint=%s reason=%r", tracepoint, reason)
    tracker = None
    if root is not None:
        tracker = PodTracker(probe, root, node=pods.node, top_k=pods.top_k, names=pods.names)
        log.info("event=pod_metrics_on root=%s max_pods=%d top_k=%d", root, pods.max_pods, pods.top_k)
    return EbpfSource(probe, proc_sampler, interval_s, clock, wall, pods=tracker)


@dataclass(frozen=True)
class PodOptions:
    """Per-pod accounting's settings (exporter/config.py): the bound, the exposed top-K, where
    the cgroup v2 hierarchy is (None: found), the node label and the optional name lookup."""

    node: str
    max_pods: int
    top_k: int
    cgroup_root: Path | None = None
    names: NameLookup | None = None

    @property
    def cgroup_slots(self) -> int:
        """Entries of the cgroup -> pod table: room for 8 cgroups per pod at most half full, so
        that a lookup's few probes find a free entry."""
        want = 16 * self.max_pods
        return 1 << (want - 1).bit_length()

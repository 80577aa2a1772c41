"""The procfs source: runs without root or eBPF, from /proc alone (docs/design.md#sources).

Run-queue wait comes from per-task schedstat run_delay deltas (core/schedstat.py): the total
and average are honest, but p95/p99/max and dropped cannot be known, and D-state durations and
NET_RX softirq time have no /proc counterpart (`procs_blocked` is a count, not a duration), so
those columns stay empty. `missing_columns` says so at start-up.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from common.core.model import RawInterval
from common.names import SOURCE_PROCFS
from common.ticker import ticks
from exporter.core import schedstat
from exporter.core.model import Reading, Telemetry
from exporter.sources import SourceUnavailable
from exporter.sources.procstat import ProcSampler

MISSING_COLUMNS = (
    "SchedLat_P95_ms",
    "SchedLat_P99_ms",
    "SchedLat_Max_ms",
    "SchedLat_Dropped",
    "DState_Total_ms",
    "DState_Count",
    "SoftIRQ_Total_ms",
    "SoftIRQ_Count",
)


def scan_tasks(proc_root: Path) -> dict[int, schedstat.TaskSched]:
    """Read every thread's schedstat under `proc_root`; tasks that vanish mid-scan are skipped."""
    tasks: dict[int, schedstat.TaskSched] = {}
    for pid in os.listdir(proc_root):
        if not pid.isdigit():
            continue
        task_dir = proc_root / pid / "task"
        try:
            tids = os.listdir(task_dir)
        except OSError:
            continue
        for tid in tids:
            try:
                tasks[int(tid)] = schedstat.parse_schedstat((task_dir / tid / "schedstat").read_text())
            except (OSError, ValueError):
                continue
    return tasks


class ProcfsSource:
    name = SOURCE_PROCFS
    missing_columns = MISSING_COLUMNS

    def __init__(
        self,
        proc_root: Path,
        proc_sampler: ProcSampler,
        interval_s: float,
        clock: Callable[[], float],
        wall: Callable[[], datetime],
    ):
        self._root = proc_root
        self._proc = proc_sampler
        self._interval = interval_s
        self._clock = clock
        self._wall = wall

    def readings(self, stop: threading.Event) -> Iterator[Reading]:
        # The first scan only warms the delta state: its window is partial (docs/design.md#one-interval).
        prev_tasks = scan_tasks(self._root)
        self._proc.sample(self._clock())
        for now in ticks(self._interval, stop, clock=self._clock):
            tasks = scan_tasks(self._root)
            total_ms, events = schedstat.interval_delay(prev_tasks, tasks)
            prev_tasks = tasks
            proc = self._proc.sample(now)
            raw = RawInterval(
                time=self._wall(),
                t=now,
                sched_total_ms=total_ms,
                sched_avg_ms=total_ms / events if events else 0.0,
                sched_count=events,
                cpu_util=proc.cpu_util,
                psi=proc.psi,
            )
            yield Reading(
                raw=raw,
                telemetry=Telemetry(pressure=proc.pressure, pressure_available=proc.pressure_available),
            )

    def close(self) -> None:
        """Nothing to release: the source holds no file descriptors between ticks."""


def open(
    *,
    proc_root: str | Path = "/proc",
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], datetime] = datetime.now,
) -> ProcfsSource:
    root = Path(proc_root)
    if not (root / "stat").exists():
        raise SourceUnavailable(f"{root}/stat not found: is {root} a procfs mount?")
    return ProcfsSource(root, ProcSampler(root), interval_s, clock, wall)

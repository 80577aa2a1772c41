"""CPU and PSI sampling from /proc (docs/design.md#one-interval): the part every live source shares.

Thin fetch here, pure parse in core/cpu.py and core/psi.py. The proc root is injectable
(`/host/proc` in the DaemonSet). A PSI file that is missing or unreadable (kernel booted with
psi=0, old kernel) is a reported condition: `pressure_available[resource] = False` and one
log line, never an exception.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from common.names import PSI_KINDS, PSI_RESOURCES
from exporter.core import cpu, psi

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcSample:
    """CPUUtil and PSI (percent, NaN when unknown) plus the per-resource detail."""

    cpu_util: float = math.nan
    psi: float = math.nan
    #: (resource, kind) -> ratio 0-1 over the last interval
    pressure: dict[tuple[str, str], float] = field(default_factory=dict)
    pressure_available: dict[str, bool] = field(default_factory=dict)


class ProcSampler:
    """Keeps the previous /proc/stat and PSI readings; `sample(now)` returns the deltas."""

    def __init__(self, proc_root: str | Path = "/proc"):
        self._root = Path(proc_root)
        self._cpu_prev: cpu.CpuTimes | None = None
        self._psi_prev: dict[str, dict[str, int]] = {}
        self._t_prev: float | None = None
        self._reported_missing: set[str] = set()

    def _read(self, rel: str) -> str:
        return (self._root / rel).read_text()

    def sample(self, now: float) -> ProcSample:
        """Read /proc/stat and /proc/pressure/{cpu,memory,io} at monotonic time `now`."""
        try:
            cur_cpu = cpu.parse_stat(self._read("stat"))
        except (OSError, ValueError) as exc:
            if "stat" not in self._reported_missing:
                log.warning("event=proc_stat_unreadable path=%s error=%r", self._root / "stat", str(exc))
                self._reported_missing.add("stat")
            cur_cpu = None
        util = cpu.utilization(self._cpu_prev, cur_cpu) if cur_cpu is not None else math.nan
        self._cpu_prev = cur_cpu

        dt = now - self._t_prev if self._t_prev is not None else 0.0
        pressure: dict[tuple[str, str], float] = {}
        available: dict[str, bool] = {}
        some: dict[str, float] = {}
        for resource in PSI_RESOURCES:
            try:
                totals = psi.parse_pressure(self._read(f"pressure/{resource}"))
            except (OSError, ValueError) as exc:
                available[resource] = False
                self._psi_prev.pop(resource, None)
                if resource not in self._reported_missing:
                    log.warning(
                        "event=psi_unavailable resource=%s path=%s error=%r "
                        "hint='PSI needs CONFIG_PSI and no psi=0 on the kernel command line'",
                        resource, self._root / "pressure" / resource, str(exc),
                    )
                    self._reported_missing.add(resource)
                continue
            available[resource] = True
            before = self._psi_prev.get(resource)
            if before is not None:
                for kind in PSI_KINDS:
                    if kind in totals and kind in before:
                        share = psi.share_percent(before[kind], totals[kind], dt)
                        if math.isfinite(share):
                            pressure[(resource, kind)] = share / 100.0
                            if kind == "some":
                                some[resource] = share
            self._psi_prev[resource] = totals
        self._t_prev = now
        return ProcSample(cpu_util=util, psi=psi.node_psi(some), pressure=pressure, pressure_available=available)

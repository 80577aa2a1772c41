"""The values that cross component boundaries: one kernel_metrics.csv row and a histogram.

Why here: the exporter writes kernel_metrics.csv rows, and the scorer's replay and export tools,
the lab and the tests read and write the same rows; every component exports duration histograms.
Keeping these frozen dataclasses in `common` lets each component use them without importing
another component. Pure data, no behaviour; the exporter's own values (telemetry, readings,
snapshots) stay in exporter/core/model.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

NAN = math.nan


@dataclass(frozen=True)
class RawInterval:
    """One interval's measured columns of kernel_metrics.csv (everything before BaselineMode).

    `t` is seconds on the source's clock: the monotonic clock for live sources, the recorded
    `Time` for replay; the derive step uses it for warm-up and dF/dt. Unknown values are NaN
    (floats) or None (counts); the CSV writes both as empty cells.
    """

    time: datetime
    t: float
    sched_total_ms: float = NAN
    sched_avg_ms: float = NAN
    sched_p95_ms: float = NAN
    sched_p99_ms: float = NAN
    sched_max_ms: float = NAN
    sched_count: int | None = None
    sched_dropped: int | None = None
    dstate_total_ms: float = NAN
    dstate_count: int | None = None
    softirq_total_ms: float = NAN
    softirq_count: int | None = None
    cpu_util: float = NAN
    psi: float = NAN


@dataclass(frozen=True)
class Derived:
    """The derived columns of kernel_metrics.csv (BaselineMode onwards), docs/design.md#baseline."""

    frozen: bool
    samples: int
    warmup_remaining_s: float
    friction: float = NAN
    direction: float = NAN
    df_dt: float = NAN
    energy: float = NAN
    energy_w: int = 40
    energy_vol: float = 0.0
    energy_k: float = 1.0


@dataclass(frozen=True)
class ExportHistogram:
    """A cumulative (since source start) histogram in Prometheus form.

    `buckets` are (upper bound in seconds, cumulative count) pairs in increasing order, the
    last one `(inf, count)`; `sum_seconds` is the exact sum of all observations.
    """

    buckets: tuple[tuple[float, int], ...]
    sum_seconds: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0

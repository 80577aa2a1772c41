"""CPU utilisation from two readings of /proc/stat (docs/design.md#one-interval), pure."""

from __future__ import annotations

import math
from typing import NamedTuple


class CpuTimes(NamedTuple):
    """Aggregate jiffies of the first `cpu` line: idle (idle + iowait) and total (all fields)."""

    idle: int
    total: int


def parse_stat(text: str) -> CpuTimes:
    """Parse /proc/stat; only the first line (`cpu  user nice system idle iowait ...`) counts.

    idle = idle + iowait (fields 4 and 5); total = sum of every field on the line.
    """
    first = text.split("\n", 1)[0].split()
    if not first or first[0] != "cpu":
        raise ValueError("first line of /proc/stat is not the aggregate 'cpu' line")
    values = [int(v) for v in first[1:]]
    if len(values) < 4:
        raise ValueError("aggregate 'cpu' line has fewer than 4 fields")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return CpuTimes(idle=idle, total=sum(values))


def utilization(prev: CpuTimes | None, cur: CpuTimes) -> float:
    """CPUUtil in percent: (1 − Δidle/Δtotal) × 100 clamped to [0, 100].

    NaN on the first sample (no `prev`) or when Δtotal ≤ 0 (counter reset, no time passed).
    """
    if prev is None:
        return math.nan
    d_total = cur.total - prev.total
    if d_total <= 0:
        return math.nan
    util = (1.0 - (cur.idle - prev.idle) / d_total) * 100.0
    return min(100.0, max(0.0, util))

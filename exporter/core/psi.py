"""Pressure-stall information from two readings of /proc/pressure/* (docs/design.md#one-interval), pure."""

from __future__ import annotations

import math
from collections.abc import Mapping


def parse_pressure(text: str) -> dict[str, int]:
    """Parse one /proc/pressure/<resource> file into {kind: total_us} for `some` and `full`.

    Lines look like `some avg10=0.00 avg60=0.00 avg300=0.00 total=12345`; kinds without a
    `total=` field are left out.
    """
    totals: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        for field in parts[1:]:
            if field.startswith("total="):
                totals[parts[0]] = int(field[len("total=") :])
    return totals


def share_percent(prev_total_us: int, cur_total_us: int, dt_s: float) -> float:
    """Stall share of the interval in percent: Δtotal / 1e6 / Δt × 100, clamped to [0, 100].

    NaN when Δt ≤ 0 or the counter went backwards.
    """
    delta = cur_total_us - prev_total_us
    if dt_s <= 0 or delta < 0:
        return math.nan
    return min(100.0, max(0.0, delta / 1e6 / dt_s * 100.0))


def node_psi(some_percent: Mapping[str, float]) -> float:
    """PSI column = max over resources of the `some` share (NaN when no resource has one)."""
    finite = [v for v in some_percent.values() if math.isfinite(v)]
    return max(finite) if finite else math.nan

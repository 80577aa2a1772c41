"""The feature vector of one interval and whether it may join the baseline (docs/design.md#baseline).

Friction compares each interval with the node's own normal, so both the baseline and the
friction step must see the same four numbers; this module is the one place that picks them
out of a RawInterval.
"""

from __future__ import annotations

import math

from common.core.model import RawInterval

#: Names of the feature vector's elements, in order (for messages and the persisted baseline).
FEATURES = ("SchedLat_P99_ms", "SchedLat_Avg_ms", "DState_avg_ms", "SoftIRQ_avg_ms")
D = len(FEATURES)


def per_event_ms(total_ms: float, count: int | None) -> float:
    """Average duration of one event: `total / max(count, 1)` when `total > 0`, else 0.

    An unknown total or count (NaN / None: a source that cannot measure it) stays unknown
    (NaN) instead of becoming a fake 0, so such an interval is neither accepted into the
    baseline nor scored against it.
    """
    if count is None or math.isnan(total_ms):
        return math.nan
    return total_ms / max(count, 1) if total_ms > 0 else 0.0


def feature_vector(raw: RawInterval) -> tuple[float, float, float, float]:
    """`x = [SchedLat_P99_ms, SchedLat_Avg_ms, DState_avg_ms, SoftIRQ_avg_ms]` with
    `DState_avg_ms = per_event_ms(DState_Total_ms, DState_Count)` and likewise for SoftIRQ."""
    return (
        raw.sched_p99_ms,
        raw.sched_avg_ms,
        per_event_ms(raw.dstate_total_ms, raw.dstate_count),
        per_event_ms(raw.softirq_total_ms, raw.softirq_count),
    )


def is_finite(x: tuple[float, ...]) -> bool:
    """True when every element of x is a finite number."""
    return all(math.isfinite(v) for v in x)


def accepted(x: tuple[float, ...], sched_count: int | None, min_count: int) -> bool:
    """A baseline sample needs every element of x finite and `SchedLat_Count ≥ min_count`
    (an interval with few scheduling events has a meaningless average and p99)."""
    return sched_count is not None and sched_count >= min_count and is_finite(x)

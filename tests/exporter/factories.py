"""A realistic interval of the reference recording's shape, for tests that need one."""

from __future__ import annotations

from datetime import datetime

from common.core.model import RawInterval

TYPICAL = dict(
    time=datetime(2026, 2, 17, 13, 29, 13),
    t=0.0,
    sched_total_ms=360.0,
    sched_avg_ms=0.018,
    sched_p95_ms=0.015,
    sched_p99_ms=0.015,
    sched_max_ms=3.0,
    sched_count=20000,
    sched_dropped=0,
    dstate_total_ms=43.59,
    dstate_count=169,
    softirq_total_ms=15.13,
    softirq_count=649,
)


def raw_interval(**overrides) -> RawInterval:
    """TYPICAL with `overrides` applied."""
    return RawInterval(**{**TYPICAL, **overrides})

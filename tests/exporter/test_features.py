"""Feature vector and baseline acceptance (docs/design.md#baseline), as named tables."""

from __future__ import annotations

import math

import pytest

from exporter.core.features import accepted, feature_vector, per_event_ms
from tests.exporter.factories import raw_interval

NAN = math.nan


@pytest.mark.parametrize(
    ("name", "total", "count", "expected"),
    [
        ("normal", 43.59, 169, 43.59 / 169),
        ("zero total is 0 whatever the count", 0.0, 5, 0.0),
        ("negative total (clock glitch) is 0", -1.0, 5, 0.0),
        ("positive total with zero count divides by 1", 2.5, 0, 2.5),
        ("unknown total stays unknown", NAN, 5, NAN),
        ("unknown count stays unknown", 2.5, None, NAN),
    ],
)
def test_per_event_ms(name, total, count, expected):
    got = per_event_ms(total, count)
    if math.isnan(expected):
        assert math.isnan(got), name
    else:
        assert got == pytest.approx(expected, rel=1e-12), name


def test_feature_vector_order_and_values():
    x = feature_vector(raw_interval())
    assert x == pytest.approx((0.015, 0.018, 43.59 / 169, 15.13 / 649), rel=1e-12)


@pytest.mark.parametrize(
    ("name", "kw", "min_count", "expected"),
    [
        ("normal interval", {}, 50, True),
        ("count exactly the minimum", {"sched_count": 50}, 50, True),
        ("count below the minimum", {"sched_count": 49}, 50, False),
        ("count unknown", {"sched_count": None}, 50, False),
        ("non-finite input: p99 empty (procfs)", {"sched_p99_ms": NAN}, 50, False),
        ("non-finite input: infinite average", {"sched_avg_ms": math.inf}, 50, False),
        ("non-finite input: D-state total unknown", {"dstate_total_ms": NAN}, 50, False),
        ("zero D-state is a valid 0", {"dstate_total_ms": 0.0, "dstate_count": 0}, 50, True),
        ("configurable minimum", {"sched_count": 20}, 10, True),
    ],
)
def test_accepted(name, kw, min_count, expected):
    r = raw_interval(**kw)
    assert accepted(feature_vector(r), r.sched_count, min_count) is expected, name

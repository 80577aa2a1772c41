"""The derive state machine: warm-up on the source clock, freeze, and the order of things
after it (docs/design.md#baseline)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from common.core.model import RawInterval
from exporter.core.baseline import freeze
from exporter.core.derive import Calibration, DeriveParams, calibration_changed, initial_state, step
from exporter.core.energy import EnergyParams
from exporter.core.features import feature_vector
from exporter.core.friction import friction

T0 = datetime(2026, 2, 17, 13, 29, 13)
SMALL = DeriveParams(warmup_s=10, baseline_win=8, min_samples=6, fcal_n=3, energy=EnergyParams(k_min_kept=4))


def interval(i: int, *, t: float | None = None, count: int = 100, avg: float | None = None) -> RawInterval:
    """A deterministic, varied interval i (1 s apart unless t is given)."""
    t = float(i) if t is None else t
    return RawInterval(
        time=T0 + timedelta(seconds=t),
        t=t,
        sched_total_ms=10.0,
        sched_avg_ms=0.02 + 0.001 * ((i * 7) % 5) if avg is None else avg,
        sched_p99_ms=0.015 + 0.0001 * ((i * 3) % 4),
        sched_count=count,
        dstate_total_ms=1.0 + (i * 5) % 7,
        dstate_count=10,
        softirq_total_ms=2.0 + (i * 11) % 3,
        softirq_count=50,
    )


def run(params, raws, state=None):
    s = state or initial_state(params)
    out = []
    for r in raws:
        s, d = step(s, r)
        out.append(d)
    return s, out


def test_defaults_are_the_spec():
    p = DeriveParams()
    assert (p.warmup_s, p.baseline_win, p.min_count, p.min_samples, p.fcal_n) == (600, 300, 50, 20, 60)


def test_invalid_params_are_reported_together():
    with pytest.raises(ValueError, match=r"warmup_s >= 0.*fcal_n >= 1"):
        DeriveParams(warmup_s=-1, fcal_n=0)


def test_calibrating_then_frozen_on_the_source_clock():
    _, out = run(SMALL, [interval(i) for i in range(15)])
    assert [d.frozen for d in out] == [False] * 10 + [True] * 5
    # Warm-up measured from the first interval: 10 s elapse at i = 10.
    assert [d.warmup_remaining_s for d in out[:11]] == [10.0 - i for i in range(11)]
    assert all(d.warmup_remaining_s == 0.0 for d in out[10:])
    # The window keeps the newest 8 accepted samples.
    assert [d.samples for d in out] == [1, 2, 3, 4, 5, 6, 7, 8] + [8] * 7
    for d in out[:11]:  # calibrating and the freezing interval itself: no friction yet
        assert math.isnan(d.friction) and math.isnan(d.energy) and math.isnan(d.df_dt)
        assert (d.energy_w, d.energy_vol, d.energy_k) == (40, 0.0, 1.0)
    assert math.isfinite(out[11].friction)
    assert out[11].energy == 0.0 and math.isnan(out[11].df_dt)
    assert out[12].df_dt == pytest.approx(out[12].friction - out[11].friction)


def test_freezing_interval_sample_is_part_of_the_baseline():
    s, _ = run(SMALL, [interval(i) for i in range(11)])
    X = np.array([[*feature_vector(interval(i))] for i in range(3, 11)])
    np.testing.assert_array_equal(s.calibration.baseline.X, X)


def test_warmup_follows_time_not_interval_count():
    # Intervals 2 s apart: the 10 s warm-up is over after 6 intervals, not 11.
    _, out = run(SMALL, [interval(i, t=2.0 * i) for i in range(8)])
    assert [d.frozen for d in out] == [False] * 5 + [True] * 3


def test_freeze_waits_for_enough_accepted_samples():
    # Every third interval accepted: the 6th accepted sample arrives at i = 15, after warm-up.
    raws = [interval(i, count=100 if i % 3 == 0 else 10) for i in range(18)]
    _, out = run(SMALL, raws)
    assert [d.frozen for d in out].index(True) == 15
    assert out[15].samples == 6


def test_no_freeze_without_accepted_samples():
    _, out = run(SMALL, [interval(i, count=10) for i in range(30)])
    assert not any(d.frozen for d in out)
    assert all(d.samples == 0 for d in out)
    assert out[-1].warmup_remaining_s == 0.0


def test_dt_uses_real_elapsed_time():
    raws = [interval(i) for i in range(12)] + [interval(12, t=13.5)]
    _, out = run(SMALL, raws)
    assert out[12].df_dt == pytest.approx((out[12].friction - out[11].friction) / 2.5)


def test_direction_after_fcal_n_finite_frictions():
    _, out = run(SMALL, [interval(i) for i in range(20)])
    frictions = [d.friction for d in out[11:]]
    fcal = sum(frictions[:3]) / 3
    dirs = [d.direction for d in out[11:]]
    assert all(math.isnan(d) for d in dirs[:3])
    assert dirs[3:] == [float(np.sign(f - fcal)) for f in frictions[3:]]


def test_non_finite_interval_after_freeze():
    raws = [interval(i) for i in range(14)] + [interval(14, avg=math.nan), interval(15)]
    _, out = run(SMALL, raws)
    bad, after = out[14], out[15]
    assert math.isnan(bad.friction) and math.isnan(bad.energy) and math.isnan(bad.direction)
    assert bad.frozen
    assert (bad.energy_w, bad.energy_vol) == (out[13].energy_w, out[13].energy_vol)
    assert math.isnan(after.df_dt)  # previous friction was NaN


def test_calibration_changes_exactly_at_freeze_k_and_fcal():
    s = initial_state(SMALL)
    events = []
    for i in range(25):
        old = s
        s, _ = step(s, interval(i))
        cal = calibration_changed(old, s)
        if cal is not None:
            events.append((i, cal.k, cal.fcal))
    # Freeze at i = 10; friction from i = 11; k after 4 frictions (i = 14); Fcal after 3
    # (i = 13).
    assert [e[0] for e in events] == [10, 13, 14]
    assert events[0][1:] == (None, None)
    assert events[1][1] is None and events[1][2] is not None
    assert events[2][1] is not None and events[2][2] == events[1][2]


def test_restored_baseline_starts_frozen_without_warmup():
    X = np.array([[*feature_vector(interval(i))] for i in range(3, 11)])
    restored = Calibration(baseline=freeze(X, SMALL.min_samples), k=0.25, fcal=0.5)
    s, out = run(SMALL, [interval(100 + i) for i in range(3)], initial_state(SMALL, restored))
    first = out[0]
    assert first.frozen and first.samples == 8 and first.warmup_remaining_s == 0.0
    assert first.friction == pytest.approx(friction(restored.baseline, feature_vector(interval(100))))
    assert first.direction == float(np.sign(first.friction - 0.5))  # Fcal restored
    assert first.energy_k == 0.25  # k restored
    assert s.calibration.baseline is restored.baseline


def test_restored_baseline_without_k_and_fcal_computes_them():
    X = np.array([[*feature_vector(interval(i))] for i in range(3, 11)])
    restored = Calibration(baseline=freeze(X, SMALL.min_samples))
    s, out = run(SMALL, [interval(100 + i) for i in range(6)], initial_state(SMALL, restored))
    assert math.isnan(out[0].direction)
    assert s.calibration.k is not None and s.calibration.fcal is not None

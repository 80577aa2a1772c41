"""Energy, its adaptive window and the k calibration (docs/design.md#baseline), as named tables."""

from __future__ import annotations

import math

import pytest

from exporter.core import energy
from exporter.core.energy import EnergyParams, calibrate_k, mean_abs_diff, window

NAN = math.nan
P = EnergyParams()


def run(frictions, params=P, state=None):
    s = state or energy.initial(params)
    outs = []
    for f in frictions:
        s, e = energy.step(s, f, params)
        outs.append((e, s.w, s.vol, s.k))
    return s, outs


def test_defaults_are_the_spec():
    assert (P.w_min, P.w_max, P.alpha, P.eps) == (5, 40, 0.10, 1e-6)
    assert P.target_window == 22.5
    assert P.buffer_len == 45
    s = energy.initial(P)
    assert (s.w, s.vol, s.k, s.buffer) == (40, 0.0, 1.0, ())


@pytest.mark.parametrize(
    ("name", "k", "vol", "expected"),
    [
        ("no volatility: widest window", 1.0, 0.0, 40),
        ("k / (vol + eps) truncated", 1.0, 0.036875965, 27),
        ("very volatile: narrowest window", 1.0, 10.0, 5),
        ("calibrated k", 2.881749, 0.130803, 22),
        ("tiny k: int(1e-6 / 1e-6) = 1 clamped up", 1e-6, 0.0, 5),
    ],
)
def test_window(name, k, vol, expected):
    assert window(k, vol, P) == expected, name


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("empty", (), 0.0),
        ("one value", (0.3,), 0.0),
        ("two values", (0.2, 0.5), 0.3),
        ("up and down", (0.237792, 0.409997, 0.405683, 0.180292), (0.172205 + 0.004314 + 0.225391) / 3),
        ("constant", (1.0, 1.0, 1.0), 0.0),
    ],
)
def test_mean_abs_diff(name, values, expected):
    assert mean_abs_diff(values) == pytest.approx(expected, abs=1e-12), name


@pytest.mark.parametrize(
    ("name", "frictions", "expected"),
    [
        # |diffs| = 1, 2, 1, 2, ... (19 of them: ten 1s, nine 2s): median 1.
        (
            "median of |diff| times 22.5",
            (0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22, 24, 25, 27, 28),
            22.5,
        ),
        ("constant friction: floor at 1e-6", (0.5,) * 20, 1e-6),
        (
            "k stays 1.0 with < 10 finite diffs",
            (0.1, 0.5, NAN, 0.2, NAN, 0.4, 0.9, NAN, 1.0, 2.0, NAN, 3.0, 5.0, NAN, 1.0, 0.0),
            1.0,
        ),
        ("exactly 10 finite diffs", tuple(float(i) for i in range(11)), 22.5),
    ],
)
def test_calibrate_k(name, frictions, expected):
    assert calibrate_k(frictions, 22.5, 10) == pytest.approx(expected, rel=1e-12), name


def test_first_steps_by_hand():
    # The reference recording's first four frictions after the freeze.
    _, outs = run([0.237792, 0.409997, 0.405683, 0.180292])
    vol2 = 0.1 * 0.172205
    vol3 = 0.1 * 0.004314 + 0.9 * vol2
    vol4 = 0.1 * 0.225391 + 0.9 * vol3
    want = [
        (0.0, 40, 0.0),  # one value: Energy 0, vol untouched, W = clamp(1/1e-6) = 40
        (0.172205, 40, vol2),
        ((0.172205 + 0.004314) / 2, 40, vol3),
        ((0.172205 + 0.004314 + 0.225391) / 3, 27, vol4),
    ]
    for (e, w, vol, k), (we, ww, wvol) in zip(outs, want, strict=True):
        assert e == pytest.approx(we, abs=1e-12)
        assert w == ww
        assert vol == pytest.approx(wvol, abs=1e-12)
        assert k == 1.0


def test_nan_friction_leaves_energy_state_untouched():
    s, _ = run([0.2, 0.5, 0.3])
    s2, e = energy.step(s, NAN, P)
    assert math.isnan(e)
    assert s2 is s


def test_energy_uses_last_w_values_and_buffer_is_bounded():
    s, outs = run([float(i % 2) for i in range(100)])
    assert len(s.buffer) == P.buffer_len
    e, w, _, _ = outs[-1]
    assert e == pytest.approx(1.0)  # every |diff| is 1 whatever the window
    assert P.w_min <= w <= P.w_max


def test_k_calibrated_once_before_that_intervals_energy_update():
    frictions = [0.3 + (0.01 if i % 2 else 0.0) for i in range(25)]
    _, outs = run(frictions)
    ks = [k for *_, k in outs]
    assert ks[:19] == [1.0] * 19
    assert ks[19] == pytest.approx(0.01 * 22.5)  # on the 20th finite friction
    assert set(ks[19:]) == {ks[19]}
    # The 20th interval's window already uses the new k.
    _, w20, vol20, _ = outs[19]
    assert w20 == window(ks[19], vol20, P)


def test_k_calibration_ignores_nan_frictions():
    frictions = [NAN, 0.3, NAN] + [0.3 + (0.02 if i % 2 else 0.0) for i in range(19)]
    s, outs = run(frictions)
    assert outs[-1][3] == pytest.approx(0.02 * 22.5)
    assert s.k_done and s.k_history == ()


def test_k_stays_1_with_fewer_than_10_finite_diffs_and_is_not_retried():
    params = EnergyParams(k_min_kept=5)
    s, outs = run([0.1, 0.4, 0.2, 0.9, 0.5, 0.6, 0.7], params)
    assert [k for *_, k in outs] == [1.0] * 7
    assert s.k_done


def test_restored_k_is_not_recalibrated():
    s = energy.initial(P, k=2.5)
    s, outs = run([0.1, 0.2] * 20, state=s)
    assert {k for *_, k in outs} == {2.5}

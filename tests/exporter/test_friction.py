"""Baseline freeze, friction, dF/dt and direction (docs/design.md#baseline), as named tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from exporter.core.baseline import freeze, min_rows
from exporter.core.friction import DirectionState, direction_step, friction, rate

NAN = math.nan
rng = np.random.default_rng(20260217)
#: A realistic, full-rank baseline: 300 samples of 4 correlated features.
X_FULL = np.abs(rng.normal([0.015, 0.02, 0.3, 0.03], [0.001, 0.004, 0.2, 0.01], size=(300, 4)))
X_FULL[:, 1] += 0.5 * X_FULL[:, 0]


def reference_friction(X: np.ndarray, x) -> float:
    """The formula of docs/design.md#friction-direction-and-dfdt written out independently (explicit
    inverse, no Cholesky)."""
    mu = X.mean(axis=0)
    cov = np.cov(X, rowvar=False, ddof=1)
    reg = 1e-9 + 1e-3 * max(np.mean(np.diag(cov)), 0.0)
    d = np.asarray(x) - mu
    return math.sqrt(max(d @ np.linalg.inv(cov + reg * np.eye(4)) @ d, 0.0))


def alternating(n: int) -> np.ndarray:
    """n × 4 with only the last column varying: +1, −1, ... (mean 0 for even n)."""
    X = np.zeros((n, 4))
    X[:, 3] = [1.0 if i % 2 == 0 else -1.0 for i in range(n)]
    return X


@pytest.mark.parametrize(
    ("name", "X", "x", "expected"),
    [
        ("at the mean", X_FULL, tuple(X_FULL.mean(axis=0)), 0.0),
        (
            "full-rank baseline",
            X_FULL,
            (0.02, 0.05, 1.0, 0.05),
            reference_friction(X_FULL, (0.02, 0.05, 1.0, 0.05)),
        ),
        # Σ = 0, reg = 1e-9: F = |x − μ| / sqrt(1e-9).
        (
            "singular covariance: all rows equal",
            np.full((20, 4), 0.015),
            (0.015, 0.015, 0.015, 0.016),
            1e-3 / math.sqrt(1e-9),
        ),
        # Σ = diag(0, 0, 0, 20/19), reg = 1e-9 + 1e-3 × (20/19)/4 (a stuck column, like the
        # reference recording's constant p99).
        (
            "singular covariance: constant columns",
            alternating(20),
            (0.0, 0.0, 0.0, 2.0),
            2.0 / math.sqrt(20 / 19 + 1e-9 + 1e-3 * (20 / 19) / 4),
        ),
        (
            "constant column off its value",
            alternating(20),
            (1e-3, 0.0, 0.0, 0.0),
            1e-3 / math.sqrt(1e-9 + 1e-3 * (20 / 19) / 4),
        ),
    ],
)
def test_friction_values(name, X, x, expected):
    got = friction(freeze(X), x)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize(
    ("name", "x"),
    [
        ("non-finite input: NaN", (NAN, 0.02, 0.3, 0.03)),
        ("non-finite input: +inf", (0.015, math.inf, 0.3, 0.03)),
        ("non-finite input: -inf", (0.015, 0.02, 0.3, -math.inf)),
    ],
)
def test_friction_nan_for_non_finite_input(name, x):
    assert math.isnan(friction(freeze(X_FULL), x)), name


@pytest.mark.parametrize(
    ("name", "rows", "min_samples", "usable"),
    [
        ("fewer samples than the default 20", 19, 20, False),
        ("exactly 20", 20, 20, True),
        ("fewer samples than d+2 (min_samples lowered to 1)", 5, 1, False),
        ("d+2 samples (min_samples lowered to 1)", 6, 1, True),
        ("no samples at all", 0, 1, False),
    ],
)
def test_too_few_rows(name, rows, min_samples, usable):
    b = freeze(X_FULL[:rows], min_samples)
    assert b.usable is usable, name
    assert math.isnan(friction(b, tuple(X_FULL[0]))) is not usable, name
    assert min_rows(min_samples) == max(min_samples, 6)


def test_non_finite_baseline_is_unusable_not_an_error():
    X = X_FULL[:30].copy()
    X[3, 2] = np.inf
    b = freeze(X)
    assert not b.usable
    assert math.isnan(friction(b, tuple(X_FULL[0])))


def test_freeze_computes_everything_once_and_read_only():
    b = freeze(X_FULL)
    cov = np.cov(X_FULL, rowvar=False, ddof=1)
    reg = 1e-9 + 1e-3 * np.mean(np.diag(cov))
    np.testing.assert_allclose(b.mu, X_FULL.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(b.cov, cov, rtol=1e-12)
    assert b.reg == pytest.approx(reg, rel=1e-12)
    np.testing.assert_allclose(b.chol @ b.chol.T, cov + reg * np.eye(4), rtol=1e-10, atol=1e-15)
    assert np.allclose(np.triu(b.chol, 1), 0.0)
    for a in (b.X, b.mu, b.cov, b.chol, b.whiten):
        assert not a.flags.writeable
    # Frozen means frozen: changing the caller's array later does not move the baseline.
    X = X_FULL.copy()
    b2 = freeze(X)
    X[:] = 0
    assert b2.mu == pytest.approx(b.mu)


def test_friction_matches_reference_on_many_points():
    b = freeze(X_FULL)
    points = rng.normal(X_FULL.mean(axis=0), X_FULL.std(axis=0) * 5, size=(200, 4))
    got = np.array([friction(b, tuple(p)) for p in points])
    want = np.array([reference_friction(X_FULL, p) for p in points])
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize(
    ("name", "f", "f_prev", "dt", "expected"),
    [
        ("one second", 0.409997, 0.237792, 1.0, 0.172205),
        ("real elapsed time is used", 1.0, 0.0, 2.0, 0.5),
        ("jittered interval", 1.0, 0.5, 0.981, 0.5 / 0.981),
        ("falling", 0.2, 0.4, 1.0, -0.2),
        ("previous NaN (first friction after the freeze)", 0.3, NAN, 1.0, NAN),
        ("current NaN", NAN, 0.3, 1.0, NAN),
        ("clock stood still", 0.3, 0.2, 0.0, NAN),
        ("clock went backwards", 0.3, 0.2, -1.0, NAN),
    ],
)
def test_rate(name, f, f_prev, dt, expected):
    got = rate(f, f_prev, dt)
    if math.isnan(expected):
        assert math.isnan(got), name
    else:
        assert got == pytest.approx(expected, rel=1e-9), name


def test_direction_fcal_from_first_n_finite_frictions():
    s = DirectionState()
    seq = [1.0, 3.0, NAN, 2.0]  # Fcal = mean(1, 3, 2) = 2 with fcal_n = 3
    outs = []
    for f in seq:
        s, d = direction_step(s, f, 3)
        outs.append(d)
    # No direction until Fcal exists, including on the interval that completes it.
    assert all(math.isnan(d) for d in outs)
    assert s.fcal == pytest.approx(2.0)
    for f, want in [(2.5, 1.0), (1.5, -1.0), (2.0, 0.0)]:
        s, d = direction_step(s, f, 3)
        assert d == want
    s2, d = direction_step(s, NAN, 3)
    assert math.isnan(d) and s2 is s
    assert s.fcal == pytest.approx(2.0)  # computed once, never updated


def test_nan_friction_does_not_count_towards_fcal():
    s = DirectionState()
    s, _ = direction_step(s, NAN, 1)
    assert s.fcal is None
    s, _ = direction_step(s, 4.0, 1)
    assert s.fcal == 4.0

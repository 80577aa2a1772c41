"""The node's own normal: warm-up, the window of accepted samples, and the freeze (docs/design.md#baseline).

Friction is a distance from "how this node usually looks", so the exporter first watches the
node for a warm-up period, keeps the newest accepted feature vectors, and then freezes them
into a FrozenBaseline. Everything friction needs from the baseline (μ, Σ', its Cholesky
factor) is computed once, at the freeze, not on every interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from exporter.core.features import D


@dataclass(frozen=True)
class Accumulator:
    """The calibrating baseline: when the first interval was seen (source clock, seconds)
    and the newest accepted samples, oldest first."""

    t_first: float | None = None
    samples: tuple[tuple[float, ...], ...] = ()


def observe(acc: Accumulator, t: float, x: tuple[float, ...], ok: bool, win: int) -> Accumulator:
    """Start the warm-up clock at the first interval; append x when `ok` (accepted),
    keeping only the newest `win` samples."""
    t_first = t if acc.t_first is None else acc.t_first
    samples = (*acc.samples, x)[-win:] if ok else acc.samples
    return Accumulator(t_first=t_first, samples=samples)


def warmup_remaining(acc: Accumulator, t: float, warmup_s: float) -> float:
    """`max(0, warmup_s − (t − t_first))`, and at most warmup_s if the clock went backwards."""
    if acc.t_first is None:
        return warmup_s
    elapsed = max(t - acc.t_first, 0.0)
    return max(warmup_s - elapsed, 0.0)


def ready_to_freeze(acc: Accumulator, t: float, warmup_s: float, min_samples: int) -> bool:
    """Freeze once the warm-up has elapsed (`t − t_first ≥ warmup_s`) and at least
    `min_samples` samples were accepted."""
    return warmup_remaining(acc, t, warmup_s) <= 0.0 and len(acc.samples) >= min_samples


def min_rows(min_samples: int, d: int = D) -> int:
    """Fewest baseline rows friction is defined for: `max(min_samples, d + 2)` (20 by default;
    below d + 2 rows the sample covariance of d features is rank-deficient by construction)."""
    return max(min_samples, d + 2)


@dataclass(frozen=True, eq=False)
class FrozenBaseline:
    """The fixed baseline and everything derived from it once.

    `X` (n × d) holds the samples, `mu` and `cov` their mean and sample covariance, `reg` the
    ridge added to the diagonal, `chol` the lower-triangular L with `L Lᵀ = Σ'` (None when the
    baseline is unusable: too few rows, or Σ' not positive definite), and `whiten` = L⁻¹, so
    that friction costs one small matrix-vector product. Arrays are read-only.
    """

    X: np.ndarray
    mu: np.ndarray
    cov: np.ndarray
    reg: float
    chol: np.ndarray | None
    whiten: np.ndarray | None = field(repr=False)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def usable(self) -> bool:
        return self.whiten is not None


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def freeze(samples: ArrayLike, min_samples: int = 20) -> FrozenBaseline:
    """Fix the baseline matrix X (n × d) and compute, once:

    - `μ = mean of the columns of X`
    - `Σ = (X − μ)ᵀ (X − μ) / (n − 1)` (sample covariance)
    - `reg = 1e-9 + 1e-3 × max(mean(diag Σ), 0)` (keeps Σ' invertible when a feature is
      constant, e.g. a stuck p99 column: a singular Σ is the normal case, not an error)
    - `Σ' = Σ + reg·I` and its Cholesky factor L (`L Lᵀ = Σ'`), plus L⁻¹.

    With fewer than `min_rows(min_samples, d)` rows, a non-finite element, or Σ' not
    positive definite, the baseline is kept but unusable: friction is NaN against it.
    """
    X = _readonly(np.array(samples, dtype=float).reshape(-1, D))
    n, d = X.shape
    mu = _readonly(X.mean(axis=0) if n else np.full(d, np.nan))
    if n < min_rows(min_samples, d) or not np.all(np.isfinite(X)):
        return FrozenBaseline(X, mu, _readonly(np.full((d, d), np.nan)), np.nan, None, None)
    cov = np.cov(X, rowvar=False, ddof=1).reshape(d, d)
    reg = 1e-9 + 1e-3 * max(float(np.mean(np.diag(cov))), 0.0)
    try:
        chol = np.linalg.cholesky(cov + reg * np.eye(d))
        whiten = np.linalg.inv(chol)
    except np.linalg.LinAlgError:
        return FrozenBaseline(X, mu, _readonly(cov), reg, None, None)
    if not (np.all(np.isfinite(chol)) and np.all(np.isfinite(whiten))):
        return FrozenBaseline(X, mu, _readonly(cov), reg, None, None)
    return FrozenBaseline(X, mu, _readonly(cov), reg, _readonly(chol), _readonly(whiten))

"""Friction, its rate and its direction (docs/design.md#baseline).

Friction says how far this interval is from the node's frozen normal, in units the baseline's
own spread defines (a regularised Mahalanobis distance), so one threshold means the same on
a quiet node and on a busy one. Direction says whether the node is now above or below the
friction it showed right after the freeze.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from exporter.core.baseline import FrozenBaseline
from exporter.core.features import is_finite


def friction(baseline: FrozenBaseline, x: tuple[float, ...]) -> float:
    """`F = sqrt(max((x − μ)ᵀ Σ'⁻¹ (x − μ), 0))`, evaluated as `‖L⁻¹ (x − μ)‖` with the
    Cholesky factor L of Σ' fixed at the freeze (baseline.freeze defines μ and Σ').

    NaN when x has a non-finite element or the baseline is unusable (fewer than
    max(20, d + 2) rows, or Σ' not positive definite).
    """
    if baseline.whiten is None or not is_finite(x):
        return math.nan
    z = baseline.whiten @ (np.asarray(x, dtype=float) - baseline.mu)
    return math.sqrt(max(float(z @ z), 0.0))


def rate(f: float, f_prev: float, dt: float) -> float:
    """`dF_dt = (F_t − F_{t−1}) / Δt` with the real elapsed Δt (seconds); NaN when either
    friction is NaN or Δt ≤ 0 (a clock that stood still or went backwards has no rate)."""
    if math.isnan(f) or math.isnan(f_prev) or not dt > 0:
        return math.nan
    return (f - f_prev) / dt


@dataclass(frozen=True)
class DirectionState:
    """Fcal once known; until then the finite frictions seen since the freeze."""

    fcal: float | None = None
    first: tuple[float, ...] = ()


def direction_step(state: DirectionState, f: float, fcal_n: int) -> tuple[DirectionState, float]:
    """Direction of this interval, then the Fcal bookkeeping.

    - `Direction = sign(F − Fcal)`: +1.0 if F > Fcal, −1.0 if F < Fcal, 0.0 if equal; NaN
      when F is NaN or Fcal does not exist yet.
    - `Fcal = mean of the first fcal_n (60) finite frictions after the freeze`, computed once,
      after the interval that brings the fcal_n-th finite friction: that interval itself has
      no Direction yet (the reference recording shows the first Direction on friction 61).
    """
    if math.isnan(f):
        return state, math.nan
    if state.fcal is not None:
        return state, float(np.sign(f - state.fcal))
    first = (*state.first, f)
    if len(first) >= fcal_n:
        return DirectionState(fcal=math.fsum(first) / len(first)), math.nan
    return DirectionState(first=first), math.nan

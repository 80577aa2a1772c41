"""Energy: how restless friction is, over a window that adapts to its volatility (docs/design.md#baseline).

A steady friction, high or low, is not the same as one that jumps around; Energy measures
the jumping. The window shrinks when friction gets volatile (react fast) and grows when it
is calm (smooth out noise); k scales the window so that the node's own post-freeze noise
maps to the middle of [W_MIN, W_MAX].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np


@dataclass(frozen=True)
class EnergyParams:
    """docs/design.md#baseline defaults. `k_history`, `k_min_kept` and `k_min_diffs` are the k calibration's
    60 kept frictions, 20 needed, and 10 finite differences needed."""

    w_min: int = 5
    w_max: int = 40
    alpha: float = 0.10
    eps: float = 1e-6
    k_history: int = 60
    k_min_kept: int = 20
    k_min_diffs: int = 10

    @property
    def target_window(self) -> float:
        """`(W_MIN + W_MAX) / 2` = 22.5: the window the calibrated k aims for."""
        return (self.w_min + self.w_max) / 2

    @property
    def buffer_len(self) -> int:
        """`W_MAX + 5` buffered frictions: enough for the widest window."""
        return self.w_max + 5


@dataclass(frozen=True)
class EnergyState:
    """`buffer`: the last buffer_len finite frictions; `vol`: the EWMA volatility; `w`: the
    last window (W_MAX before any friction); `k`; `k_history`: the finite frictions kept for
    the k calibration, dropped once `k_done`."""

    w: int
    buffer: tuple[float, ...] = ()
    vol: float = 0.0
    k: float = 1.0
    k_done: bool = False
    k_history: tuple[float, ...] = ()


def initial(params: EnergyParams, k: float | None = None) -> EnergyState:
    """Fresh state; a k restored from a saved baseline counts as already calibrated."""
    if k is None:
        return EnergyState(w=params.w_max)
    return EnergyState(w=params.w_max, k=k, k_done=True)


def calibrate_k(frictions: tuple[float, ...], target_window: float, min_diffs: int) -> float:
    """`k = max(1e-6, median(|F_i − F_{i−1}|) × target_window)` over the finite first
    differences of `frictions`; 1.0 when fewer than `min_diffs` of them are finite."""
    diffs = np.abs(np.diff(np.asarray(frictions, dtype=float)))
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size < min_diffs:
        return 1.0
    return max(1e-6, float(np.median(diffs)) * target_window)


def window(k: float, vol: float, params: EnergyParams) -> int:
    """`W = clamp(int(k / (vol + ε)), W_MIN, W_MAX)`."""
    return min(max(int(k / (vol + params.eps)), params.w_min), params.w_max)


def mean_abs_diff(values: tuple[float, ...]) -> float:
    """Mean of |first differences| of `values`; 0 with fewer than 2 values."""
    if len(values) < 2:
        return 0.0
    return math.fsum(abs(b - a) for a, b in pairwise(values)) / (len(values) - 1)


def step(state: EnergyState, f: float, params: EnergyParams) -> tuple[EnergyState, float]:
    """One interval's friction F in, (new state, Energy) out.

    NaN F: state untouched, Energy NaN. Otherwise, in this order:
    1. k calibration (once): append F to the last `k_history` finite frictions; on the first
       interval with ≥ `k_min_kept` of them, `k = calibrate_k(kept, (W_MIN + W_MAX) / 2,
       k_min_diffs)`.
    2. append F to the buffer (last W_MAX + 5 finite frictions); with ≥ 2 buffered values
       `vol ← α·|F_t − F_{t−1}| + (1 − α)·vol`.
    3. `W = clamp(int(k / (vol + ε)), W_MIN, W_MAX)` (see `window`).
    4. `Energy = mean |first differences| of the last min(len, W) buffered values`
       (0 with fewer than 2 values).

    Only frictions after the freeze reach this (friction is NaN before), so the k
    calibration sees post-freeze frictions only.
    """
    if math.isnan(f):
        return state, math.nan
    k, k_done, k_history = state.k, state.k_done, state.k_history
    if not k_done:
        k_history = (*k_history, f)[-params.k_history :]
        if len(k_history) >= params.k_min_kept:
            k = calibrate_k(k_history, params.target_window, params.k_min_diffs)
            k_done, k_history = True, ()
    buffer = (*state.buffer, f)[-params.buffer_len :]
    vol = state.vol
    if len(buffer) >= 2:
        vol = params.alpha * abs(buffer[-1] - buffer[-2]) + (1 - params.alpha) * vol
    w = window(k, vol, params)
    energy = mean_abs_diff(buffer[-w:])
    return EnergyState(w=w, buffer=buffer, vol=vol, k=k, k_done=k_done, k_history=k_history), energy

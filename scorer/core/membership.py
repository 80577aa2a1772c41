"""Fuzzy membership functions of the controller (docs/design.md#fuzzy-controller), vectorised with numpy.

They exist apart from the rule base and the inference so that the exact edge semantics of the
controller (shoulders where a = b or c = d, closed plateaus, open feet) live in one tested place;
the inference evaluates every set of every variable through `evaluate`, over all nodes at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Parameter counts per function kind; the rule-base validation and `evaluate` share them.
ARITY = {"trap": 4, "tri": 3, "gauss": 2}


def trap(x: ArrayLike, a: float, b: float, c: float, d: float) -> NDArray[np.float64]:
    """Trapezoid, a ≤ b ≤ c ≤ d:

        trap(x) = 0                  if x < a or x > d
                  1                  if b ≤ x ≤ c
                  (x − a) / (b − a)  if a ≤ x < b    (never reached when a = b: the rise is 1)
                  (d − x) / (d − c)  if c < x ≤ d    (never reached when c = d: the fall is 1)

    The interval tests decide which branch applies, so a degenerate shoulder never divides by
    zero and x = a = b is on the plateau (1), as docs/design.md requires for `trap(−150, −150, 0, 25)`
    at the clamp edge.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    out[(x >= b) & (x <= c)] = 1.0
    rising = (x >= a) & (x < b)
    out[rising] = (x[rising] - a) / (b - a)
    falling = (x > c) & (x <= d)
    out[falling] = (d - x[falling]) / (d - c)
    return out


def tri(x: ArrayLike, a: float, b: float, c: float) -> NDArray[np.float64]:
    """Triangle, a < b < c:

        tri(x) = 0                  if x ≤ a or x ≥ c
                 (x − a) / (b − a)  if a < x ≤ b     (1 at x = b)
                 (c − x) / (c − b)  if b < x < c
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    rising = (x > a) & (x <= b)
    out[rising] = (x[rising] - a) / (b - a)
    falling = (x > b) & (x < c)
    out[falling] = (c - x[falling]) / (c - b)
    return out


def gauss(x: ArrayLike, m: float, sigma: float) -> NDArray[np.float64]:
    """Gaussian bell, σ > 0:  gauss(x) = exp(−(x − m)² / (2σ²))."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-((x - m) ** 2) / (2.0 * sigma * sigma))


_FUNCTIONS: dict[str, Callable[..., NDArray[np.float64]]] = {"trap": trap, "tri": tri, "gauss": gauss}


def evaluate(kind: str, params: Sequence[float], x: ArrayLike) -> NDArray[np.float64]:
    """μ(x) of the set `kind(params)`, `kind` one of ARITY (dispatch only; formulas above)."""
    return _FUNCTIONS[kind](x, *params)

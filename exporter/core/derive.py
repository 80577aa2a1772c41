"""The derive step: one RawInterval in, the derived CSV columns out (docs/design.md#baseline).

A pure state machine so that live sources, replay at any speed, and tests all compute the
same numbers from the same raw columns: time comes only from `RawInterval.t` (the source's
clock), never from a wall clock read here. The sampler owns the state:

    state = initial_state(params, restored)      # restored: a Calibration from baseline_store
    state, derived = step(state, reading.raw)    # once per interval
    if (cal := calibration_changed(old, state)) is not None:
        store.save(cal)                          # at the freeze, and when k / Fcal appear
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from common.core.model import Derived, RawInterval
from exporter.core import energy as energy_mod
from exporter.core.baseline import (
    Accumulator,
    FrozenBaseline,
    freeze,
    observe,
    ready_to_freeze,
    warmup_remaining,
)
from exporter.core.energy import EnergyParams, EnergyState
from exporter.core.features import accepted, feature_vector
from exporter.core.friction import DirectionState, direction_step, friction, rate


@dataclass(frozen=True)
class DeriveParams:
    """Everything that shapes the baseline, friction and energy; docs/design.md#baseline defaults.

    `warmup_s`: seconds of source clock before the freeze may happen (KSENSE_WARMUP_S).
    `baseline_win`: accepted samples kept, newest first (KSENSE_BASELINE_WIN_S divided by the
    interval: 300 at 1 s). `min_count`: SchedLat_Count an interval needs to be accepted
    (KSENSE_BASELINE_MIN_COUNT). `min_samples`: accepted samples needed to freeze, and the
    fewest baseline rows friction is defined for. `fcal_n`: finite frictions averaged into Fcal.
    """

    warmup_s: float = 600.0
    baseline_win: int = 300
    min_count: int = 50
    min_samples: int = 20
    fcal_n: int = 60
    energy: EnergyParams = field(default_factory=EnergyParams)

    def __post_init__(self) -> None:
        e = self.energy
        problems = [
            name
            for name, ok in (
                ("warmup_s >= 0", self.warmup_s >= 0),
                ("baseline_win >= 1", self.baseline_win >= 1),
                ("min_count >= 0", self.min_count >= 0),
                ("1 <= min_samples <= baseline_win", 1 <= self.min_samples <= self.baseline_win),
                ("fcal_n >= 1", self.fcal_n >= 1),
                ("1 <= w_min <= w_max", 1 <= e.w_min <= e.w_max),
                ("0 < alpha <= 1", 0 < e.alpha <= 1),
                ("eps > 0", e.eps > 0),
                ("2 <= k_min_kept <= k_history", 2 <= e.k_min_kept <= e.k_history),
            )
            if not ok
        ]
        if problems:
            raise ValueError("invalid derive parameters, need: " + ", ".join(problems))


@dataclass(frozen=True)
class Calibration:
    """What a restart must not lose: the frozen baseline, and k and Fcal once computed
    (they come after the freeze; None until then)."""

    baseline: FrozenBaseline
    k: float | None = None
    fcal: float | None = None


@dataclass(frozen=True)
class DeriveState:
    """Opaque to callers except `calibration` (None while calibrating)."""

    params: DeriveParams
    acc: Accumulator
    calibration: Calibration | None
    direction: DirectionState
    energy: EnergyState
    t_prev: float | None = None
    f_prev: float = math.nan


def initial_state(params: DeriveParams, restored: Calibration | None = None) -> DeriveState:
    """A fresh state; with `restored`, it starts FROZEN on that baseline (no new warm-up),
    friction from the first interval, and k / Fcal reused when the calibration has them."""
    fcal = restored.fcal if restored is not None else None
    k = restored.k if restored is not None else None
    return DeriveState(
        params=params,
        acc=Accumulator(),
        calibration=restored,
        direction=DirectionState(fcal=fcal),
        energy=energy_mod.initial(params.energy, k),
    )


def step(state: DeriveState, raw: RawInterval) -> tuple[DeriveState, Derived]:
    """One interval. While calibrating: accept x into the window (features.accepted), and
    freeze when baseline.ready_to_freeze; the freezing interval's own sample is part of X
    and it is reported FROZEN without friction (friction starts on the next interval, as in
    the reference recording). Once frozen: F (friction.friction), dF_dt (friction.rate with
    Δt = t − t_prev), Direction (friction.direction_step) and Energy (energy.step)."""
    p = state.params
    x = feature_vector(raw)
    cal = state.calibration
    if cal is None:
        acc = observe(state.acc, raw.t, x, accepted(x, raw.sched_count, p.min_count), p.baseline_win)
        remaining = warmup_remaining(acc, raw.t, p.warmup_s)
        if ready_to_freeze(acc, raw.t, p.warmup_s, p.min_samples):
            cal = Calibration(baseline=freeze(acc.samples, p.min_samples))
        new = replace(state, acc=acc, calibration=cal, t_prev=raw.t, f_prev=math.nan)
        return new, _derived(new, len(acc.samples), remaining, math.nan, math.nan, math.nan, math.nan)

    f = friction(cal.baseline, x)
    df_dt = rate(f, state.f_prev, raw.t - state.t_prev) if state.t_prev is not None else math.nan
    direction_state, direction = direction_step(state.direction, f, p.fcal_n)
    energy_state, energy = energy_mod.step(state.energy, f, p.energy)
    if direction_state.fcal is not None and cal.fcal is None:
        cal = replace(cal, fcal=direction_state.fcal)
    if energy_state.k_done and cal.k is None:
        cal = replace(cal, k=energy_state.k)
    new = replace(
        state, calibration=cal, direction=direction_state, energy=energy_state, t_prev=raw.t, f_prev=f
    )
    return new, _derived(new, cal.baseline.n, 0.0, f, direction, df_dt, energy)


def _derived(
    state: DeriveState,
    samples: int,
    remaining: float,
    f: float,
    direction: float,
    df_dt: float,
    energy: float,
) -> Derived:
    return Derived(
        frozen=state.calibration is not None,
        samples=samples,
        warmup_remaining_s=remaining,
        friction=f,
        direction=direction,
        df_dt=df_dt,
        energy=energy,
        energy_w=state.energy.w,
        energy_vol=state.energy.vol,
        energy_k=state.energy.k,
    )


def calibration_changed(old: DeriveState, new: DeriveState) -> Calibration | None:
    """The calibration to persist when this step froze the baseline or computed k or Fcal;
    None otherwise (at most three saves per baseline)."""
    if new.calibration is not None and new.calibration is not old.calibration:
        return new.calibration
    return None

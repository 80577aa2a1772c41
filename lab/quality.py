"""`python -m lab quality`: how often a deny means the tenant hurts, per policy, per stress phase.

For each recording: the SLO (given, or K × the median p99 of its calm phases), the hurt and
pain seconds (lab.core.metrics), and each policy's decisions (lab.policies). Seconds are
evaluated where the baseline is frozen and the tenant measured (the scorer cannot decide
while calibrating). Figures are pooled over the recordings; single thresholds are reported as
a sweep, with the in-sample best flagged as such unless thresholds chosen on other data are
given (`--thresholds`, written by `lab tune`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lab import policies
from lab.core import metrics
from lab.core.schedule import CALM
from lab.recording import Recording, RecordingError
from lab.stress import label
from scorer.core.decision import DecisionParams
from scorer.core.rules import RuleBase

DEFAULT_HORIZON_S = 10
DEFAULT_SLO_FACTOR = 2.0
ALWAYS, NEVER = "always-deny", "never-deny"


@dataclass(frozen=True)
class Slo:
    """What hurts: the tenant's p99 (its rolling median over `smooth_s` seconds, 1 = each
    second on its own) above a fixed SLO in ms, or above a factor of each recording's calm
    median p99."""

    ms: float | None = None
    factor: float = DEFAULT_SLO_FACTOR
    smooth_s: int = 1

    def of(self, rec: Recording) -> float:
        return self.ms if self.ms is not None else self.factor * rec.calm_p99_ms()


@dataclass(frozen=True)
class Labelled:
    """One recording with its SLO, hurt seconds and evaluated seconds."""

    rec: Recording
    slo_ms: float
    hurt: NDArray[np.bool_]
    pain: NDArray[np.bool_]
    evaluated: NDArray[np.bool_]

    @classmethod
    def of(cls, rec: Recording, slo: Slo, horizon_s: int) -> Labelled:
        slo_ms = slo.of(rec)
        hurt = metrics.hurt(metrics.rolling_median(rec.p99_ms, slo.smooth_s), rec.errors, slo_ms)
        evaluated = rec.frozen & np.isfinite(rec.p99_ms)
        if not evaluated.any():
            raise RecordingError(f"{rec.path}: no second with a frozen baseline and tenant data to evaluate "
                                 "(is the recording shorter than its warm-up?)")
        return cls(rec, slo_ms, hurt, metrics.pain(hurt, horizon_s), evaluated)


Decider = Callable[[Recording], NDArray[np.bool_]]


def families(rec: Recording) -> list[str]:
    """Per second, the phase's name in the per-phase table (lab.stress.label; '' outside phases)."""
    cpus = int(rec.meta.get("cpus") or os.cpu_count() or 1)
    names: dict[tuple[str, float], str] = {}
    out = []
    for p, i in zip(rec.phase, rec.intensity.tolist(), strict=True):
        key = (p, i)
        if key not in names:
            names[key] = label(p, i, cpus) if p else ""
        out.append(names[key])
    return out


def evaluate(data: Sequence[Labelled], deciders: dict[str, Decider], horizon_s: int) -> dict:
    """Pooled and per-recording figures of every policy, and the per-phase table."""
    denies = {name: [decide(d.rec) for d in data] for name, decide in deciders.items()}
    out: dict = {"policies": {}, "recordings": [], "phases": {}}
    for name, ds in denies.items():
        out["policies"][name] = metrics.pooled(
            [(deny, d.hurt, d.evaluated) for deny, d in zip(ds, data, strict=True)], horizon_s).as_dict()
    for k, d in enumerate(data):
        out["recordings"].append({
            "name": d.rec.name, "path": str(d.rec.path), "seconds": len(d.rec.time_s),
            "evaluated": int(d.evaluated.sum()), "slo_ms": d.slo_ms,
            "pain_share": float(d.pain[d.evaluated].mean()),
            "policies": {name: metrics.quality(ds[k], d.hurt, d.evaluated, horizon_s).as_dict()
                         for name, ds in denies.items()},
        })
    per_second = [np.array(families(d.rec)) for d in data]
    names = sorted({f for fs in per_second for f in fs.tolist()} - {""}, key=lambda f: (f not in CALM, f))
    for fam in names:
        masks = [d.evaluated & (fs == fam) for d, fs in zip(data, per_second, strict=True)]
        n = int(sum(m.sum() for m in masks))
        if n == 0:
            continue

        def pooled_median(values: list[NDArray[np.float64]], masks=masks) -> float:
            v = np.concatenate([x[m] for x, m in zip(values, masks, strict=True)])
            v = v[np.isfinite(v)]
            return float(np.median(v)) if v.size else math.nan

        out["phases"][fam] = {
            "seconds": n,
            "pain_share": float(sum(d.pain[m].sum() for d, m in zip(data, masks, strict=True)) / n),
            "hurt_share": float(sum(d.hurt[m].sum() for d, m in zip(data, masks, strict=True)) / n),
            "p99_ms": pooled_median([d.rec.p99_ms for d in data]),
            "cpu": pooled_median([d.rec.features["cpu"] for d in data]),
            "psi": pooled_median([d.rec.features["psi"] for d in data]),
            "friction": pooled_median([d.rec.features["friction"] for d in data]),
            "deny_share": {name: float(sum(x[m].sum() for x, m in zip(ds, masks, strict=True)) / n)
                           for name, ds in denies.items()},
        }
    return out


def since_phase_start(rec: Recording) -> NDArray[np.int_]:
    """Per second, the seconds since its phase began."""
    starts = np.r_[True, np.array(rec.phase[1:]) != np.array(rec.phase[:-1])] if rec.phase else np.zeros(0, bool)
    idx = np.arange(len(rec.phase))
    return idx - np.maximum.accumulate(np.where(starts, idx, 0))


def calm_pain_sources(data: Sequence[Labelled], horizon_s: int) -> dict[str, int]:
    """lab.core.metrics.calm_pain_sources over the calm phases of every recording, summed (of
    those, only quiet phases are evaluated: the warm-up calibrates)."""
    total: dict[str, int] = {}
    for d in data:
        part = metrics.calm_pain_sources(d.hurt, d.rec.calm, since_phase_start(d.rec), d.evaluated, horizon_s)
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    return total


def sweeps(data: Sequence[Labelled], points: int = 200) -> dict[str, list[dict[str, float]]]:
    """Per threshold signal, precision/recall/F1 over candidate thresholds (quantiles of the
    pooled evaluated values), over all recordings at once."""
    out = {}
    for signal in policies.THRESHOLD_SIGNALS:
        values = np.concatenate([d.rec.features[signal][d.evaluated] for d in data])
        pain_s = np.concatenate([d.pain[d.evaluated] for d in data])
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            continue
        candidates = np.unique(np.quantile(finite, np.linspace(0, 1, points)))
        out[signal] = metrics.threshold_sweep(values, pain_s, np.ones(len(values), dtype=bool), candidates)
    return out


def deciders(rules: dict[str, tuple[RuleBase, DecisionParams]], thresholds: dict[str, float],
             suffix: str = "") -> dict[str, Decider]:
    """ksense policies by name, single-threshold policies at the given thresholds (named
    `signal ≥ θ` + suffix, e.g. how θ was chosen), and the two constant policies."""
    out: dict[str, Decider] = {}
    for name, (rb, params) in rules.items():
        out[name] = lambda rec, rb=rb, params=params: policies.ksense(rec, rb, params)[0]
    for signal, theta in thresholds.items():
        out[f"{signal} ≥ {theta:.4g}{suffix}"] = lambda rec, s=signal, t=theta: policies.threshold(rec, s, t)
    out[ALWAYS] = lambda rec: np.ones(len(rec.time_s), dtype=bool)
    out[NEVER] = lambda rec: np.zeros(len(rec.time_s), dtype=bool)
    return out


_COLUMNS = ("precision", "recall", "f1", "deny_share", "flips_per_hour", "onset_to_deny_s", "end_to_allow_s")


def fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def policy_table(result: dict) -> str:
    """Markdown: one row per policy."""
    lines = ["| policy | precision | recall | F1 | deny share | flips/h | onset→deny s | end→allow s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, q in result["policies"].items():
        cells = [fmt(q[c], 0 if c == "flips_per_hour" else (1 if c.endswith("_s") else 2)) for c in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def phase_table(result: dict, names: Sequence[str]) -> str:
    """Markdown: one row per stress family, its pain share, its hurt share (seconds whose own p99
    is over the SLO: pain without the look-ahead) and the deny share of `names`."""
    head = ("| phase | seconds | tenant p99 ms | pain share | hurt share | CPU % | PSI % | Friction | "
            + " | ".join(f"deny: {n}" for n in names) + " |")
    lines = [head, "|" + "---|" * (8 + len(names))]
    for fam, p in result["phases"].items():
        cells = [fam, str(p["seconds"]), fmt(p["p99_ms"]), fmt(p["pain_share"]), fmt(p["hurt_share"]),
                 fmt(p["cpu"], 0),
                 fmt(p["psi"], 1), fmt(p["friction"], 1), *(fmt(p["deny_share"][n]) for n in names)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

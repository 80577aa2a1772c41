"""The lab's pictures: one timeline per recording, and the precision–recall chart.

A timeline lets a reader see *why* a policy scored as it did: the tenant's p99 against the
SLO with pain shaded, each ksense policy's score and deny spans, CPU and PSI, and the stress
phases named along the top. matplotlib's object API and the Agg canvas (as scorer.plot).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.names import LEVEL_HIGH
from lab import policies
from lab.core.schedule import CALM
from lab.quality import Labelled
from scorer.core.decision import DecisionParams
from scorer.core.rules import RuleBase

_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def timeline(d: Labelled, rules: dict[str, tuple[RuleBase, DecisionParams]], path: Path) -> None:
    """Tenant p99 vs SLO (pain shaded), scores and denies per ksense policy, CPU and PSI."""
    rec = d.rec
    x = (rec.time_s - rec.time_s[0]) / 60.0
    fig = _figure(14, 8)
    ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 3, 2]})
    for a, b in _spans(d.pain & d.evaluated):
        ax1.axvspan(x[a], x[b - 1], color="tab:red", alpha=0.12, lw=0)
    ax1.plot(x, rec.p99_ms, color="black", lw=0.7, label="tenant p99")
    ax1.axhline(d.slo_ms, color="tab:red", ls="--", lw=1, label=f"SLO {d.slo_ms:.2f} ms")
    ax1.set_yscale("log")
    ax1.set_ylabel("ms")
    ax1.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{rec.name}: tenant p99 (pain shaded), ksense score and denies, CPU and PSI", fontsize=10)
    # Phase names along the top, at each phase's start.
    starts = [i for i in range(len(rec.phase)) if i == 0 or rec.phase[i] != rec.phase[i - 1]]
    for i in starts:
        if rec.phase[i]:
            ax1.axvline(x[i], color="grey", lw=0.5)
            ax1.text(x[i], 0.02, " " + rec.phase[i], transform=ax1.get_xaxis_transform(), rotation=90, fontsize=6,
                     va="bottom", color="grey" if rec.phase[i] in CALM else "black")
    for k, (name, (rb, params)) in enumerate(rules.items()):
        deny, score = policies.ksense(rec, rb, params)
        colour = _COLOURS[k % len(_COLOURS)]
        ax2.plot(x, score, color=colour, lw=0.7, label=name)
        for a, b in _spans(deny):
            ax2.plot([x[a], x[b - 1]], [102 + 4 * k] * 2, color=colour, lw=3, solid_capstyle="butt")
    ax2.axhline(LEVEL_HIGH, color="grey", ls=":", lw=0.8)
    ax2.set_ylim(0, 110 + 4 * len(rules))
    ax2.set_ylabel("score (bars: deny)")
    ax2.legend(loc="upper left", fontsize=8)
    ax3.plot(x, rec.features["cpu"], color="tab:orange", lw=0.7, label="CPU %")
    ax3.plot(x, rec.features["psi"], color="tab:brown", lw=0.7, label="PSI %")
    ax3.set_ylim(0, 105)
    ax3.set_ylabel("%")
    ax3.set_xlabel("minutes since the recording's start")
    ax3.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def precision_recall(result: dict, path: Path) -> None:
    """Each single-threshold sweep as a curve, each other policy as a point."""
    fig = _figure(7, 6)
    ax = fig.subplots()
    for signal, sweep in result.get("sweeps", {}).items():
        r = [e["recall"] for e in sweep]
        p = [e["precision"] for e in sweep]
        ax.plot(r, p, lw=1, label=f"threshold on {policies.THRESHOLD_SIGNALS[signal]}")
    for k, (name, q) in enumerate(result["policies"].items()):
        if q["precision"] is not None and q["recall"] is not None and np.isfinite([q["precision"], q["recall"]]).all():
            ax.plot(q["recall"], q["precision"], "o", ms=7, color=_COLOURS[k % len(_COLOURS)] if k < 2 else "grey",
                    label=name if k < 2 or "deny" in name else None)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall = P(deny | pain)")
    ax.set_ylabel("precision = P(pain | deny)")
    ax.set_title("Decision quality: policies against the tenant's pain", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)

"""The policies the lab compares, each turning one recording into a deny per second.

ksense: the scorer's own controller and decision state machine over the recorded inputs
(`scorer.replay.replay`, the code `python -m scorer.replay` runs). `fast_ksense` is the same
score and the same transitions without building per-tick reports (for the tuner's thousands
of evaluations); a test holds the two equal. Single-threshold policies deny when one signal is
at or above a threshold; always-deny and never-deny bound the table.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from common.names import DECISION_DENY, RQ_P99
from lab.recording import Recording
from scorer.core import decision, inference
from scorer.core.decision import DecisionParams, NodeState
from scorer.core.rules import RuleBase
from scorer.replay import replay

#: Signals a single-threshold policy can use: recording feature -> label.
THRESHOLD_SIGNALS = {"cpu": "CPU %", "psi": "PSI %", RQ_P99: "run-queue p99 ms"}


def ksense(rec: Recording, rb: RuleBase, params: DecisionParams) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """(deny, score) per second, through scorer.replay."""
    reports = list(replay(rb, params, rec.inputs))
    return (np.array([r.decision == DECISION_DENY for r in reports], dtype=bool),
            np.array([r.score for r in reports]))


def scorable(rec: Recording) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """(scored, inputs) as the scorer plans them (allow_on_missing off): a second is scored when
    its baseline is frozen and friction and energy are finite; inputs are the columns
    (friction_signed, energy, cpu, psi, rq_p99_ms) with a missing CPU, PSI or run-queue p99
    counted as 0 (the last column is used only by a rule base with that input)."""
    f = rec.features
    scored = rec.frozen & np.isfinite(f["friction_signed"]) & np.isfinite(f["energy"])
    cols = np.stack([f["friction_signed"], f["energy"], np.nan_to_num(f["cpu"]), np.nan_to_num(f["psi"]),
                     np.nan_to_num(f[RQ_P99])], axis=1)
    return scored, np.where(scored[:, None], cols, 0.0)


def decide(scores: NDArray[np.float64], scored: NDArray[np.bool_], params: DecisionParams) -> NDArray[np.bool_]:
    """Deny per second from scores: decision.step where scored, decision.missing elsewhere."""
    state = NodeState()
    deny = np.empty(len(scores), dtype=bool)
    for i, (s, ok) in enumerate(zip(scores.tolist(), scored.tolist(), strict=True)):
        state, verdict = decision.step(state, s, params) if ok else decision.missing(state)
        deny[i] = verdict == DECISION_DENY
    return deny


def fast_ksense(rb: RuleBase, params: DecisionParams, scored: NDArray[np.bool_],
                cols: NDArray[np.float64]) -> NDArray[np.bool_]:
    """`ksense`'s deny from `scorable`'s columns, without reports."""
    scores = np.full(len(scored), 100.0)
    if scored.any():
        x = cols[scored]
        scores[scored] = inference.score(rb, *x[:, :4].T, rq_p99_ms=x[:, 4] if rb.inputs else None)
    return decide(scores, scored, params)


def threshold(rec: Recording, signal: str, theta: float) -> NDArray[np.bool_]:
    """Deny while `signal` ≥ theta (a missing value allows)."""
    with np.errstate(invalid="ignore"):
        return rec.features[signal] >= theta

"""Mamdani max–min inference with a centroid over the integers, vectorised over nodes (docs/design.md#fuzzy-controller).

The inputs are the four of every rule base, plus `rq_p99_ms` (run-queue p99, ms) for a rule
base that declares it (RuleBase.inputs); it is required exactly then. A cluster tick scores
every node in one `score` call (5,000 nodes in a few milliseconds), and
the replay tool scores a whole recording in one call: the score of a tick depends only on its
inputs, never on the decision state. `explain` shows one node's memberships and fired rules
for `GET /score?explain=1`, computed by the same code as the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from common.names import LEVEL_HIGH, LEVEL_MEDIUM, RQ_P99
from scorer.core.membership import evaluate
from scorer.core.rules import RuleBase

# Rows scored per pass. The work buffers (rows × 72 rule strengths, rows × 101 aggregate) are
# allocated once per call and reused; at 256 rows they stay in a core's L2 cache, which makes
# a pass several times faster than with whole-batch temporaries, and the memory of a replay
# of a day of data or a rebuild over thousands of nodes stays that of one pass.
_CHUNK = 256


def _inputs(rb: RuleBase, friction_signed: ArrayLike, energy: ArrayLike, cpu: ArrayLike,
            psi: ArrayLike, rq_p99_ms: ArrayLike | None) -> dict[str, NDArray[np.float64]]:
    """The inputs as clamped 1-D float arrays keyed like rb.antecedents; ValueError when
    they differ in length, any value is not finite (missing values are the caller's to
    substitute, docs/design.md#decisions), or rq_p99_ms is given to a rule base without it or
    missing for one with it."""
    raw = {"cpu": cpu, "psi": psi, "friction": friction_signed, "energy": energy}
    if (rq_p99_ms is not None) != (RQ_P99 in rb.inputs):
        raise ValueError(f"{RQ_P99}: the rule base {'uses' if RQ_P99 in rb.inputs else 'does not use'} this input")
    if rq_p99_ms is not None:
        raw[RQ_P99] = rq_p99_ms
    arrays = {name: np.asarray(value, dtype=np.float64) for name, value in raw.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"inputs must be 1-D arrays of one length, got shapes {sorted(shapes)}")
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: inputs must be finite (substitute missing values first)")
    return {name: np.clip(arrays[name], *rb.ranges[name]) for name in rb.antecedents}


def _memberships(rb: RuleBase, x: NDArray[np.float64], variable: str) -> NDArray[np.float64]:
    """(n, sets) memberships of `variable`'s sets at x."""
    return np.stack([evaluate(s.kind, s.params, x) for s in rb.sets(variable).values()], axis=1)


def _rule_cells(rb: RuleBase, rules: NDArray[np.intp]) -> NDArray[np.intp]:
    """Flat indices of the given rules' cells in the set grid of rb.antecedents."""
    dims = tuple(len(rb.sets(v)) for v in rb.antecedents)
    cells: NDArray[np.intp] = np.ravel_multi_index(tuple(rb.rule_sets[rules].T), dims)
    return cells


def _rule_strengths(memberships: list[NDArray[np.float64]], cells: NDArray[np.intp], grid: NDArray[np.float64],
                    out: NDArray[np.float64]) -> NDArray[np.float64]:
    """out[i, j] = strength of the rule in grid cell cells[j] for row i: the min of its
    antecedent memberships. Every cell of the set grid is computed by broadcasting (cpu × psi
    pairs, friction × energy pairs, then all pairs of pairs, then × each further input's sets),
    then the rules' cells gathered."""
    cpu, psi, friction, energy, *more = memberships
    m = cpu.shape[0]
    first = np.minimum(cpu[:, :, None], psi[:, None, :]).reshape(m, -1, 1)
    second = np.minimum(friction[:, :, None], energy[:, None, :]).reshape(m, 1, -1)
    if not more:
        np.minimum(first, second, out=grid.reshape(m, first.shape[1], second.shape[2]))
    else:
        partial = np.minimum(first, second).reshape(m, -1)
        for extra in more[:-1]:
            partial = np.minimum(partial[:, :, None], extra[:, None, :]).reshape(m, -1)
        np.minimum(partial[:, :, None], more[-1][:, None, :], out=grid.reshape(m, partial.shape[1], -1))
    return np.take(grid, cells, axis=1, out=out)


def score(rb: RuleBase, friction_signed: ArrayLike, energy: ArrayLike, cpu: ArrayLike,
          psi: ArrayLike, rq_p99_ms: ArrayLike | None = None) -> NDArray[np.float64]:
    """Fuzzy scores 0..100 of n nodes (1-D finite inputs of length n; raw, clamped here;
    rq_p99_ms given exactly when rb uses it).

        clamp     cpu, psi, friction_signed, energy to rb.ranges (docs/design.md: [0,100], [0,100],
                  [−150,150], [0,100]), rq_p99_ms to its declared range
        rule r    w_r = min(μ_cpu,r(cpu), μ_psi,r(psi), μ_friction,r(friction), μ_energy,r(energy)
                            [, μ_rq_p99_ms,r(rq_p99_ms)])
        output k  s_k = max{w_r : rule r concludes k}   (0 when no rule concludes k)
        aggregate μ(x) = max_k min(s_k, μ_k(x))          for x in the universe 0, 1, …, 100
        score     Σ x·μ(x) / Σ μ(x),  0 when Σ μ(x) = 0
    """
    clamped = _inputs(rb, friction_signed, energy, cpu, psi, rq_p99_ms)
    n = len(clamped["cpu"])
    out = np.empty(n, dtype=np.float64)
    # Rules grouped by output set, so that each s_k is a max over one contiguous column slice.
    rules = np.argsort(rb.rule_output, kind="stable")
    bounds = np.searchsorted(rb.rule_output[rules], np.arange(len(rb.output) + 1))
    cells = _rule_cells(rb, rules)
    memberships = [_memberships(rb, clamped[v], v) for v in rb.antecedents]
    rows = min(n, _CHUNK)
    grid_size = int(np.prod([mu.shape[1] for mu in memberships]))
    grid, strength = np.empty((rows, grid_size)), np.empty((rows, rules.size))
    aggregate, clipped = np.empty((rows, rb.universe.size)), np.empty((rows, rb.universe.size))
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        w = _rule_strengths([mu[start:start + m] for mu in memberships], cells, grid[:m], strength[:m])
        agg, clip = aggregate[:m], clipped[:m]
        agg.fill(0.0)
        for k in range(len(rb.output)):
            if bounds[k] < bounds[k + 1]:
                s_k = w[:, bounds[k]:bounds[k + 1]].max(axis=1)
                np.minimum(s_k[:, None], rb.output_curves[k], out=clip)
                np.maximum(agg, clip, out=agg)
        mass = agg.sum(axis=1)
        moment = agg @ rb.universe
        out[start:start + m] = np.divide(moment, mass, out=np.zeros(m), where=mass > 0)
    return out


def level(score: float) -> str:
    """"high" if score ≥ 70, "medium" if score ≥ 45, else "low"."""
    if score >= LEVEL_HIGH:
        return LEVELS[2]
    if score >= LEVEL_MEDIUM:
        return LEVELS[1]
    return LEVELS[0]


LEVELS = ("low", "medium", "high")


def levels(scores: NDArray[np.float64]) -> list[str]:
    """`level` of each score, for a whole tick at once."""
    index = (scores >= LEVEL_MEDIUM).astype(np.intp) + (scores >= LEVEL_HIGH)
    return [LEVELS[i] for i in index.tolist()]


def explain(rb: RuleBase, friction_signed: float, energy: float, cpu: float, psi: float,
            rq_p99_ms: float | None = None) -> dict[str, Any]:
    """One node's trace (docs/api.md): every set's membership at the clamped inputs (of every
    input rb uses, rq_p99_ms included), and the rules with strength > 0, strongest first (ties
    in rule-table order), each with its sets and output set. `score` of the same inputs is the
    centroid of these strengths clipped per output set.
    """
    clamped = _inputs(rb, [friction_signed], [energy], [cpu], [psi], None if rq_p99_ms is None else [rq_p99_ms])
    mus = [_memberships(rb, clamped[v], v) for v in rb.antecedents]
    memberships = {
        v: {name: float(m) for name, m in zip(rb.sets(v), mu[0], strict=True)}
        for v, mu in zip(rb.antecedents, mus, strict=True)
    }
    cells = _rule_cells(rb, np.arange(len(rb.rule_output)))
    grid_size = int(np.prod([mu.shape[1] for mu in mus]))
    strength = _rule_strengths(mus, cells, np.empty((1, grid_size)), np.empty((1, cells.size)))[0]
    fired = sorted(np.flatnonzero(strength > 0), key=lambda r: (-strength[r], r))
    rules = [{**rb.rule_names(int(r)), "strength": float(strength[r])} for r in fired]
    return {"memberships": memberships, "rules": rules}

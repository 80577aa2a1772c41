"""Learning the controller from data: Wang–Mendel rule generation over a scaled rule base.

Wang and Mendel's method (1992) builds a fuzzy rule table from examples: each example falls
in the cell of the sets it belongs to most, and votes for that cell's conclusion with its
degree (the product of those memberships); conflicting votes are settled by degree. Here an
example is one recorded second, its inputs (cpu, psi, signed friction, energy and, for a rule
base with that input, the run-queue p99) and whether the tenant was in pain. Each class's
votes are weighted by the inverse of its frequency (class-balanced voting, `vote`), so the
table follows what the inputs say about pain rather than how much pain the training schedule
happened to contain. A cell's pain share of the votes picks its output set (`cuts`: below the
first → under, … above the last → long), so a cell where pain and calm seconds mix gets a
middle output and the decision state machine's medium bands handle it. A cell no example
reached keeps the rule it had.

The membership sets are the bundled ones scaled per input (`scale_document`): the shapes and
the names the explanations use stay, only where they sit moves. The run-queue p99 input has no
bundled sets: `with_rq` adds its three sets at given breakpoints and copies every bundled rule
across them, so a cell no example reaches keeps the four-input rule it refines. Pure: documents in,
documents out; `scorer.core.rules.parse_rulebase` validates the result like any rule file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from common.names import RQ_P99
from scorer.core.membership import evaluate
from scorer.core.rules import OUTPUT, SET_NAMES, RuleBase

#: Output sets by rising severity, for the pain-share cuts.
OUTPUTS = SET_NAMES[OUTPUT]
DEFAULT_CUTS = (0.2, 0.45, 0.7)
#: The run-queue p99 input's clamp range, ms: above the worst p99 of the committed recordings
#: (~70 ms under hackbench), where every set is flat anyway.
RQ_RANGE = (0.0, 100.0)


def with_rq(doc: Mapping[str, Any], breakpoints: Sequence[float]) -> dict[str, Any]:
    """A copy of four-input document `doc` with the rq_p99_ms input: breakpoints a < b < c (ms)
    give low = trap(0, 0, a, b), med = tri(a, b, c), high = trap(b, c, top, top), and every
    rule row is copied for each rq_p99_ms set with its outputs unchanged."""
    a, b, c = (round(float(v), 4) for v in breakpoints)
    lo, top = RQ_RANGE
    if not lo < a < b < c < top:
        raise ValueError(f"{RQ_P99} breakpoints must rise inside {RQ_RANGE}, got {list(breakpoints)}")
    out = copy.deepcopy(dict(doc))
    out["variables"] = {**out["variables"], RQ_P99: {"range": [lo, top], "sets": {
        "low": {"fn": "trap", "params": [lo, lo, a, b]},
        "med": {"fn": "tri", "params": [a, b, c]},
        "high": {"fn": "trap", "params": [b, c, top, top]},
    }}}
    out["rules"] = [{**row, RQ_P99: r} for row in out["rules"] for r in SET_NAMES[RQ_P99]]
    return out


def scale_document(doc: Mapping[str, Any], scales: Mapping[str, float]) -> dict[str, Any]:
    """A copy of rule-base document `doc` with each input variable's set parameters multiplied
    by its scale (gauss: mean and sigma), except parameters at the variable's range ends (the
    shoulders stay anchored), clipped to the range."""
    out = copy.deepcopy(dict(doc))
    for var, s in scales.items():
        if s <= 0:
            raise ValueError(f"scale of {var} must be > 0, got {s}")
        spec = out["variables"][var]
        lo, hi = spec["range"]
        for set_spec in spec["sets"].values():
            params = set_spec["params"]
            scaled = [p if p in (lo, hi) else round(min(hi, max(lo, p * s)), 4) for p in params]
            if set_spec["fn"] == "tri" and not scaled[0] < scaled[1] < scaled[2]:
                raise ValueError(f"{var}: scale {s} collapses a triangle {params} -> {scaled}")
            set_spec["params"] = scaled
    return out


def cells(rb: RuleBase, x: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """For rows of x (columns cpu, psi, friction_signed, energy[, rq_p99_ms]: rb.antecedents,
    further columns ignored; clamped here), the flat index of each row's highest-membership
    cell in the rule grid and its degree (the product of the winning memberships)."""
    idx, degree = [], np.ones(len(x))
    for j, var in enumerate(rb.antecedents):
        v = np.clip(x[:, j], *rb.ranges[var])
        mu = np.stack([evaluate(s.kind, s.params, v) for s in rb.sets(var).values()], axis=1)
        idx.append(mu.argmax(axis=1))
        degree *= mu.max(axis=1)
    dims = tuple(len(rb.sets(v)) for v in rb.antecedents)
    return np.ravel_multi_index(tuple(idx), dims), degree


def vote(rb: RuleBase, x: NDArray[np.float64], pain: NDArray[np.bool_],
         balanced: bool = True) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per rule-grid cell (flat, in rule-table order): the summed degree of pain seconds and
    of calm seconds. `balanced` weighs each vote by the inverse of its class's share of the
    examples, so both classes cast the same total weight: a cell's pain share of the votes is
    then how much likelier its inputs are under pain than under calm, not how common pain was
    in the data (a training set that is 85 % pain would otherwise push every cell where
    calm and pain meet towards a deny, whatever its inputs say)."""
    flat, degree = cells(rb, x)
    size = int(np.prod([len(rb.sets(v)) for v in rb.antecedents]))
    pain = np.asarray(pain, dtype=bool)
    w_pain = w_calm = 1.0
    if balanced:
        n_pain = int(pain.sum())
        n_calm = len(pain) - n_pain
        w_pain = len(pain) / (2 * n_pain) if n_pain else 0.0
        w_calm = len(pain) / (2 * n_calm) if n_calm else 0.0
    pain_w = np.bincount(flat, weights=degree * pain * w_pain, minlength=size)
    calm_w = np.bincount(flat, weights=degree * ~pain * w_calm, minlength=size)
    # Weighted bincounts are float64 (the stubs say intp): no copy is made.
    return pain_w.astype(np.float64, copy=False), calm_w.astype(np.float64, copy=False)


def outputs(pain_w: NDArray[np.float64], calm_w: NDArray[np.float64], fallback: NDArray[np.intp],
            cuts: Sequence[float] = DEFAULT_CUTS, min_weight: float = 1e-9) -> NDArray[np.intp]:
    """Output-set index per cell from its votes: the pain share cut at `cuts` (3 rising cut
    points, one fewer than OUTPUTS); a cell with less than `min_weight` of votes keeps
    `fallback`."""
    if len(cuts) != len(OUTPUTS) - 1 or list(cuts) != sorted(cuts):
        raise ValueError(f"cuts must be {len(OUTPUTS) - 1} rising shares, got {list(cuts)}")
    total = pain_w + calm_w
    share = np.divide(pain_w, total, out=np.zeros_like(total), where=total > 0)
    learned = np.searchsorted(np.asarray(cuts), share, side="right")
    return np.where(total >= min_weight, learned, fallback).astype(np.intp)


def rules_document(doc: Mapping[str, Any], rb: RuleBase, cell_outputs: NDArray[np.intp]) -> dict[str, Any]:
    """`doc` with its rule rows rewritten to `cell_outputs` (indexed like the rule grid; `rb`
    is `doc` parsed, for the set order)."""
    out = copy.deepcopy(dict(doc))
    names = {v: tuple(rb.sets(v)) for v in rb.antecedents}
    dims = tuple(len(names[v]) for v in rb.antecedents)
    row_keys = tuple(v for v in rb.antecedents if v != "energy")
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for flat, o in enumerate(cell_outputs.tolist()):
        chosen = {v: names[v][int(i)] for v, i in zip(rb.antecedents, np.unravel_index(flat, dims), strict=True)}
        rows.setdefault(tuple(chosen[v] for v in row_keys), {})[chosen["energy"]] = OUTPUTS[o]
    out["rules"] = [{**dict(zip(row_keys, key, strict=True)), "energy": energy} for key, energy in rows.items()]
    return out


def grid_outputs(rb: RuleBase) -> NDArray[np.intp]:
    """The rule base's output-set index per cell of the rule grid (flat, rule-table order)."""
    dims = tuple(len(rb.sets(v)) for v in rb.antecedents)
    out = np.empty(int(np.prod(dims)), dtype=np.intp)
    out[np.ravel_multi_index(tuple(rb.rule_sets.T), dims)] = rb.rule_output
    return out

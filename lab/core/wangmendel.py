"""Learning the controller from data: Wang–Mendel rule generation over a scaled rule base.

Wang and Mendel's method (1992) builds a fuzzy rule table from examples: each example falls
in the cell of the sets it belongs to most, and votes for that cell's conclusion with its
degree (the product of those memberships); conflicting votes are settled by degree. Here an
example is one recorded second, its inputs (cpu, psi, signed friction, energy) and whether the
tenant was in pain. A cell's pain share of the votes picks its output set (`cuts`: below the
first → under, … above the last → long), so a cell where pain and calm seconds mix gets a
middle output and the decision state machine's medium bands handle it. A cell no example
reached keeps the rule it had.

The membership sets are the bundled ones scaled per input (`scale_document`): the shapes and
the names the explanations use stay, only where they sit moves. Pure: documents in,
documents out; `scorer.core.rules.parse_rulebase` validates the result like any rule file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scorer.core.membership import evaluate
from scorer.core.rules import ANTECEDENTS, OUTPUT, SET_NAMES, RuleBase

#: Output sets by rising severity, for the pain-share cuts.
OUTPUTS = SET_NAMES[OUTPUT]
DEFAULT_CUTS = (0.2, 0.45, 0.7)


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
    """For rows of x (columns cpu, psi, friction_signed, energy, clamped here), the flat index
    of each row's highest-membership cell in the rule grid and its degree (the product of the
    four winning memberships)."""
    idx, degree = [], np.ones(len(x))
    for j, var in enumerate(ANTECEDENTS):
        v = np.clip(x[:, j], *rb.ranges[var])
        mu = np.stack([evaluate(s.kind, s.params, v) for s in rb.sets(var).values()], axis=1)
        idx.append(mu.argmax(axis=1))
        degree *= mu.max(axis=1)
    dims = tuple(len(rb.sets(v)) for v in ANTECEDENTS)
    return np.ravel_multi_index(tuple(idx), dims), degree


def vote(rb: RuleBase, x: NDArray[np.float64],
         pain: NDArray[np.bool_]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per rule-grid cell (flat, in rule-table order): the summed degree of pain seconds and
    of calm seconds."""
    flat, degree = cells(rb, x)
    size = int(np.prod([len(rb.sets(v)) for v in ANTECEDENTS]))
    pain_w = np.bincount(flat, weights=degree * pain, minlength=size)
    calm_w = np.bincount(flat, weights=degree * ~pain, minlength=size)
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
    names = {v: tuple(rb.sets(v)) for v in ANTECEDENTS}
    dims = tuple(len(names[v]) for v in ANTECEDENTS)
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for flat, o in enumerate(cell_outputs.tolist()):
        c, p, f, e = np.unravel_index(flat, dims)
        key = (names["cpu"][c], names["psi"][p], names["friction"][f])
        rows.setdefault(key, {})[names["energy"][e]] = OUTPUTS[o]
    out["rules"] = [{"cpu": c, "psi": p, "friction": f, "energy": energy} for (c, p, f), energy in rows.items()]
    return out


def grid_outputs(rb: RuleBase) -> NDArray[np.intp]:
    """The rule base's output-set index per cell of the rule grid (flat, rule-table order)."""
    dims = tuple(len(rb.sets(v)) for v in ANTECEDENTS)
    out = np.empty(int(np.prod(dims)), dtype=np.intp)
    out[np.ravel_multi_index(tuple(rb.rule_sets.T), dims)] = rb.rule_output
    return out

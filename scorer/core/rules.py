"""The fuzzy rule base as validated data: membership sets, the rules, clamp ranges (docs/design.md#fuzzy-controller).

docs/design.md makes the controller's tables data (a bundled default, overridable by a file) checked
at start. This module turns a parsed JSON document into a frozen `RuleBase`, rejecting a bad
document with a message that names the offending cell, so an operator who mistypes one rule
of an override file reads which one instead of getting a silently different controller. The
set names are docs/design.md's (the HTTP explain output and the dashboards name them); files may
change the functions, parameters, ranges and the output of every rule.

Document layout (scorer/rules_default.json is the tables of docs/design.md#fuzzy-controller in it):

    {"variables": {"cpu": {"range": [0, 100],
                           "sets": {"normal": {"fn": "trap", "params": [0, 0, 60, 80]}, ...}},
                   "psi": ..., "friction": ..., "energy": ..., "output": ...},
     "rules": [{"cpu": "normal", "psi": "low", "friction": "under",
                "energy": {"short": "under", "mod": "short", "long": "short"}}, ...]}

One rule row per (cpu, psi, friction) set triple, with its output set per energy set: the
rows and columns of the rule table of docs/design.md#fuzzy-controller.

An optional fifth input, the node's run-queue p99 in ms (`rq_p99_ms`, common.names.RQ_P99:
ksense_runqueue_latency_p99_seconds, the CSV's SchedLat_P99_ms), is used when the document
declares it under "variables" with its three sets (low, med, high) and a range; every rule row
then also names its rq_p99_ms set, and the rows cover the (cpu, psi, friction, rq_p99_ms) grid:
2 × 3 × 4 × 3 × 3 = 216 rule cells. A document without it is the four-input controller, unchanged.

An optional `"decision"` object carries decision thresholds tuned together with the rules
(`python -m lab tune` writes it): any of good_threshold, medium_low_upper, medium_mid_upper,
medium_bad_threshold. They replace the built-in defaults; an explicitly configured FUZZY_*
variable or flag still wins (scorer.core.decision.params_for).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from common.names import RQ_P99
from scorer.core.membership import ARITY, evaluate

#: The rule antecedents every rule base has, in the order of the rule table of
#: docs/design.md#fuzzy-controller (and of RuleBase.rule_sets' first columns).
ANTECEDENTS = ("cpu", "psi", "friction", "energy")
#: Inputs a rule base may add after ANTECEDENTS (in this order) by declaring the variable.
OPTIONAL = (RQ_P99,)
OUTPUT = "output"
VARIABLES = (*ANTECEDENTS, *OPTIONAL, OUTPUT)
#: The keys of a rule row that name an antecedent set directly (energy maps to outputs).
_ROW_KEYS = ("cpu", "psi", "friction", *OPTIONAL)

#: docs/design.md's set names per variable, in the order of docs/design.md#fuzzy-controller.
SET_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "cpu": ("normal", "high"),
        "psi": ("low", "med", "high"),
        "friction": ("under", "short", "mod", "long"),
        "energy": ("short", "mod", "long"),
        RQ_P99: ("low", "med", "high"),
        "output": ("under", "short", "mod", "long"),
    }
)

#: Keys of the optional "decision" object, and whether each is an integer.
DECISION_KEYS: Mapping[str, bool] = MappingProxyType(
    {"good_threshold": True, "medium_low_upper": False, "medium_mid_upper": False, "medium_bad_threshold": True}
)

#: 2 × 3 × 4 × 3 = 72 rule cells of the four-input controller.
RULE_COUNT = math.prod(len(SET_NAMES[v]) for v in ANTECEDENTS)


class RulesError(ValueError):
    """An invalid rule-base document; the message names the bad cell."""


class SetDef(NamedTuple):
    """One fuzzy set: a membership function kind (membership.ARITY) and its parameters."""

    kind: str
    params: tuple[float, ...]


@dataclass(frozen=True)
class RuleBase:
    """A validated rule base. Build it with `parse_rulebase`.

    `antecedents` are the inputs of its rules: ANTECEDENTS, then the OPTIONAL ones the document
    declared (`inputs` names those). `rule_sets[r]` holds rule r's set indices for each
    antecedent (indices into each variable's set order) and `rule_output[r]` its output-set
    index; `ranges` the clamp range
    of each input and the output's universe (the integers lo..hi, docs/design.md: 0..100).
    `universe` and `output_curves` (one row per output set: μ over the universe) are derived
    once here so that scoring never re-evaluates the output sets.
    """

    cpu: Mapping[str, SetDef]
    psi: Mapping[str, SetDef]
    friction: Mapping[str, SetDef]
    energy: Mapping[str, SetDef]
    output: Mapping[str, SetDef]
    rule_sets: NDArray[np.intp] = field(repr=False, compare=False)
    rule_output: NDArray[np.intp] = field(repr=False, compare=False)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))
    decision: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    rq_p99_ms: Mapping[str, SetDef] = field(default_factory=lambda: MappingProxyType({}))
    antecedents: tuple[str, ...] = ANTECEDENTS
    universe: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    output_curves: NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lo, hi = self.ranges[OUTPUT]
        universe = np.arange(int(lo), int(hi) + 1, dtype=np.float64)
        curves = np.stack([evaluate(s.kind, s.params, universe) for s in self.output.values()])
        for array in (self.rule_sets, self.rule_output, universe, curves):
            array.setflags(write=False)
        object.__setattr__(self, "universe", universe)
        object.__setattr__(self, "output_curves", curves)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The OPTIONAL inputs this rule base uses (a source must supply them)."""
        return self.antecedents[len(ANTECEDENTS):]

    def sets(self, variable: str) -> Mapping[str, SetDef]:
        """The sets of `variable` (one of VARIABLES), in order."""
        sets: Mapping[str, SetDef] = getattr(self, variable)
        return sets

    def rule_names(self, r: int) -> dict[str, str]:
        """Rule r by set names: {"cpu": .., "psi": .., "friction": .., "energy": ..[, "rq_p99_ms": ..],
        "output": ..}."""
        names = {v: tuple(self.sets(v))[int(i)] for v, i in zip(self.antecedents, self.rule_sets[r], strict=True)}
        names[OUTPUT] = tuple(self.output)[int(self.rule_output[r])]
        return names


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RulesError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _parse_set(spec: Any, where: str) -> SetDef:
    spec = _mapping(spec, where)
    unknown = sorted(set(spec) - {"fn", "params"})
    if unknown:
        raise RulesError(f"{where}: unknown key {unknown[0]!r} (expected 'fn' and 'params')")
    kind = spec.get("fn")
    if kind not in ARITY:
        raise RulesError(f"{where}: unknown function {kind!r} (expected one of {', '.join(ARITY)})")
    params = spec.get("params")
    if not isinstance(params, list) or len(params) != ARITY[kind]:
        raise RulesError(f"{where}: {kind} takes {ARITY[kind]} parameters, got {params!r}")
    if not all(_is_number(p) for p in params):
        raise RulesError(f"{where}: parameters must be finite numbers, got {params!r}")
    values = tuple(float(p) for p in params)
    # A triangle with a = b or b = c is ambiguous in the formula of docs/design.md#fuzzy-controller
    # (x ≤ a is 0, x = b is 1);
    # a shoulder is written as a trapezoid instead.
    if kind == "gauss":
        if values[1] <= 0:
            raise RulesError(f"{where}: sigma must be > 0 (gauss {list(values)})")
    elif not all(lo <= hi if kind == "trap" else lo < hi for lo, hi in pairwise(values)):
        raise RulesError(f"{where}: parameters not ordered ({kind} {list(values)})")
    return SetDef(kind, values)


def _parse_range(value: Any, where: str, integers: bool) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)):
        raise RulesError(f"{where}: expected [low, high] finite numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not lo < hi:
        raise RulesError(f"{where}: low must be < high, got {value!r}")
    if integers and not (lo.is_integer() and hi.is_integer()):
        raise RulesError(f"{where}: the output universe is integers, got {value!r}")
    return lo, hi


def _parse_variable(name: str, spec: Any) -> tuple[Mapping[str, SetDef], tuple[float, float]]:
    where = f"variables.{name}"
    spec = _mapping(spec, where)
    unknown = sorted(set(spec) - {"range", "sets"})
    if unknown:
        raise RulesError(f"{where}: unknown key {unknown[0]!r} (expected 'range' and 'sets')")
    if "range" not in spec:
        raise RulesError(f"{where}: missing 'range'")
    span = _parse_range(spec["range"], f"{where}.range", integers=name == OUTPUT)
    sets = _mapping(spec.get("sets"), f"{where}.sets")
    for set_name in sets:
        if set_name not in SET_NAMES[name]:
            raise RulesError(f"{where}.{set_name}: unknown set (expected {', '.join(SET_NAMES[name])})")
    parsed = {}
    for set_name in SET_NAMES[name]:
        if set_name not in sets:
            raise RulesError(f"{where}.{set_name}: missing set")
        parsed[set_name] = _parse_set(sets[set_name], f"{where}.{set_name}")
    return MappingProxyType(parsed), span


def _cell(names: Mapping[str, Any]) -> str:
    return "rules[" + ", ".join(f"{v}={names[v]}" for v in (*ANTECEDENTS, *OPTIONAL) if v in names) + "]"


def _parse_rules(rows: Any, antecedents: tuple[str, ...]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    if not isinstance(rows, list):
        raise RulesError(f"rules: expected a list of rule rows, got {type(rows).__name__}")
    index = {v: {s: i for i, s in enumerate(SET_NAMES[v])} for v in VARIABLES}
    keys_of_row = tuple(v for v in _ROW_KEYS if v in antecedents)
    cells: dict[tuple[int, ...], int] = {}
    for n, row in enumerate(rows):
        row = _mapping(row, f"rules[{n}]")
        names = {v: row[v] for v in keys_of_row if v in row}
        for v in keys_of_row:
            if v not in row:
                raise RulesError(f"{_cell(names)}: rule row {n} has no {v!r}")
            if row[v] not in index[v]:
                raise RulesError(f"{_cell(names)}: unknown {v} set {row[v]!r}")
        unknown = sorted(set(row) - set(antecedents))
        if unknown:
            undeclared = " (an input not declared under 'variables')" if unknown[0] in OPTIONAL else ""
            raise RulesError(f"{_cell(names)}: unknown key {unknown[0]!r}{undeclared}")
        outputs = _mapping(row.get("energy"), f"{_cell(names)}.energy")
        for energy, out in outputs.items():
            where = _cell({**names, "energy": energy})
            if energy not in index["energy"]:
                raise RulesError(f"{where}: unknown energy set {energy!r}")
            if out not in index[OUTPUT]:
                raise RulesError(f"{where}: unknown output set {out!r}")
            chosen = {**names, "energy": energy}
            key = tuple(index[v][chosen[v]] for v in antecedents)
            if key in cells:
                raise RulesError(f"{where}: given more than once")
            cells[key] = index[OUTPUT][out]
    grid = itertools.product(*(range(len(SET_NAMES[v])) for v in antecedents))
    missing = [key for key in grid if key not in cells]
    if missing:
        names = {v: SET_NAMES[v][i] for v, i in zip(antecedents, missing[0], strict=True)}
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise RulesError(f"{_cell(names)}: missing{more}")
    keys = sorted(cells)  # table of docs/design.md#fuzzy-controller order: cpu, psi, friction, energy[, rq_p99_ms]
    return np.array(keys, dtype=np.intp), np.array([cells[k] for k in keys], dtype=np.intp)


def _parse_decision(value: Any) -> Mapping[str, float]:
    spec = _mapping(value, "decision")
    out: dict[str, float] = {}
    for key, text in spec.items():
        if key not in DECISION_KEYS:
            raise RulesError(f"decision.{key}: unknown key (expected {', '.join(DECISION_KEYS)})")
        if DECISION_KEYS[key]:
            if not (isinstance(text, int) and not isinstance(text, bool) and text >= 1):
                raise RulesError(f"decision.{key}: expected an integer ≥ 1, got {text!r}")
            out[key] = text
        else:
            if not _is_number(text):
                raise RulesError(f"decision.{key}: expected a finite number, got {text!r}")
            out[key] = float(text)
    return MappingProxyType(out)


def parse_rulebase(data: Mapping[str, Any]) -> RuleBase:
    """Validate a rule-base document (layout in the module docstring) into a RuleBase.

    Checked: every variable and every documented set present and no unknown one; function kinds
    known; parameter counts right and finite; parameters ordered (trap a ≤ b ≤ c ≤ d, tri
    a < b < c, gauss σ > 0); ranges low < high (the output's integers); each of the
    2 × 3 × 4 × 3 rule cells (× 3 with rq_p99_ms) given exactly once, naming a known output set.
    The first problem found raises RulesError naming its cell.
    """
    data = _mapping(data, "rule base")
    unknown = sorted(set(data) - {"variables", "rules", "description", "decision"})
    if unknown:
        raise RulesError(f"{unknown[0]}: unknown key (expected 'variables', 'rules' and optionally 'decision')")
    variables = _mapping(data.get("variables"), "variables")
    for name in variables:
        if name not in VARIABLES:
            raise RulesError(f"variables.{name}: unknown variable (expected {', '.join(VARIABLES)}; "
                             f"{', '.join(OPTIONAL)} optional)")
    sets, ranges = {}, {}
    for name in VARIABLES:
        if name not in variables:
            if name in OPTIONAL:
                continue
            raise RulesError(f"variables.{name}: missing variable")
        sets[name], ranges[name] = _parse_variable(name, variables[name])
    antecedents = (*ANTECEDENTS, *(v for v in OPTIONAL if v in sets))
    rule_sets, rule_output = _parse_rules(data.get("rules"), antecedents)
    decision = _parse_decision(data["decision"]) if "decision" in data else MappingProxyType({})
    return RuleBase(**sets, rule_sets=rule_sets, rule_output=rule_output, ranges=MappingProxyType(ranges),
                    decision=decision, antecedents=antecedents)

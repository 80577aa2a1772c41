"""docs/design.md states the controller's tables and reference values; they must be the code's:
the membership and rule tables equal the bundled rule base, the reference vectors score as
written, and the decision trace is what the state machine does."""

from __future__ import annotations

import re

import pytest

from scorer.core import decision
from scorer.core.inference import level, score
from scorer.rulefile import load_rules
from tests.docs import markdown
from tests.support import REPO

DESIGN = (REPO / "docs" / "design.md").read_text()
RB = load_rules()
OUTPUT_LETTERS = {"U": "under", "S": "short", "M": "mod", "L": "long"}


def _table(heading: str, header: list[str]) -> list[list[str]]:
    for table in markdown.tables(markdown.section(DESIGN, heading)):
        if table[0] == header:
            return table[1:]
    raise AssertionError(f"no table {header} under {heading}")


def _number(text: str) -> float:
    return float(text.replace("−", "-"))


def test_membership_table_is_the_bundled_rule_base():
    rows = _table("## Fuzzy controller", ["variable", "clamp", "set", "function", "parameters"])
    documented: dict[str, dict] = {}
    variable = ""
    for var, clamp, name, fn, params in rows:
        variable = var or variable
        entry = documented.setdefault(variable, {"sets": {}})
        if clamp:
            entry["range"] = tuple(_number(x) for x in clamp.strip("[]").split(","))
        entry["sets"][name] = (fn, tuple(_number(x) for x in params.split(",")))
    bundled = {v: {"range": tuple(RB.ranges[v]), "sets": {n: (s.kind, tuple(s.params)) for n, s in RB.sets(v).items()}}
               for v in ("cpu", "psi", "friction", "energy", "output")}
    assert documented == bundled


def test_rule_table_is_the_bundled_rule_base():
    rows = _table("## Fuzzy controller", ["CPU", "PSI", "friction", "energy short", "energy mod", "energy long"])
    documented = {(c, p, f, e): OUTPUT_LETTERS[out]
                  for c, p, f, *outs in rows for e, out in zip(("short", "mod", "long"), outs, strict=True)}
    bundled = {}
    for r in range(len(RB.rule_sets)):
        n = RB.rule_names(r)
        bundled[(n["cpu"], n["psi"], n["friction"], n["energy"])] = n["output"]
    assert len(documented) == 72 and documented == bundled


def test_reference_vectors_score_as_documented():
    rows = _table("## Reference vectors", ["signed friction", "energy", "CPU %", "PSI %", "score", "level"])
    assert len(rows) == 10
    for f, e, cpu, psi, expected, expected_level in rows:
        got = score(RB, [_number(f)], [_number(e)], [_number(cpu)], [_number(psi)])[0]
        assert got == pytest.approx(_number(expected), abs=5e-5), (f, e, cpu, psi)
        assert level(got) == expected_level


def test_decision_trace_is_what_the_state_machine_does():
    text = markdown.section(DESIGN, "## Decisions")
    table = next(markdown.tables(text[text.index("\n| score |"):]))
    scores = [_number(x) for x in table[0][1:]]
    documented = table[1][1:]
    assert table[0][0] == "score" and table[1][0] == "decision" and len(scores) == len(documented) > 5
    state, params, got = decision.NodeState(), decision.DecisionParams(), []
    for s in scores:
        state, d = decision.step(state, s, params)
        got.append(d)
    assert got == documented


def test_decision_defaults_are_the_documented_ones():
    params = decision.DecisionParams()
    text = markdown.section(DESIGN, "## Decisions")
    for knob, value in (("FUZZY_MEDIUM_LOW_UPPER", params.medium_low_upper),
                        ("FUZZY_MEDIUM_MID_UPPER", params.medium_mid_upper),
                        ("FUZZY_GOOD_THRESHOLD", params.good_threshold),
                        ("FUZZY_MEDIUM_BAD_THRESHOLD", params.medium_bad_threshold)):
        assert re.search(rf"{knob}`? \({value:g}\)", text), knob

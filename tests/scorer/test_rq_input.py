"""The optional run-queue p99 input (rq_p99_ms): rule file, controller, explain, evaluation, sources.

The five-input controller is checked against an independent scalar model (the bundled rule
table of tests/scorer/test_inference.py, each rule copied per rq set, and rq "high" forced to
"long"), so a wrong grid order or a lost membership shows up as a wrong score.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from common.names import RQ_P99
from scorer.core import inputs as core
from scorer.core.decision import DecisionParams
from scorer.core.evaluate import evaluate, explain_node
from scorer.core.inference import explain, score
from scorer.core.model import Inputs, NodeInputs
from scorer.core.reports import inputs_json
from scorer.core.rules import RulesError, parse_rulebase
from scorer.sources import require
from scorer.sources.prometheus import queries
from tests.scorer.test_inference import (
    S_CPU,
    S_ENERGY,
    S_FRICTION,
    S_OUTPUT,
    S_PSI,
    S_RULES,
    _clamp,
    _s_trap,
    _s_tri,
)
from tests.support import REPO

DEFAULT = json.loads((REPO / "scorer" / "rules_default.json").read_text())
# Breakpoints a, b, c (ms) of the rq sets in these tests.
A, B, C = 0.1, 0.2, 1.0
S_RQ = {"low": lambda x: _s_trap(x, 0, 0, A, B), "med": lambda x: _s_tri(x, A, B, C),
        "high": lambda x: _s_trap(x, B, C, 50, 50)}
LONG = {"short": "long", "mod": "long", "long": "long"}


def rq_document(high: dict | None = None) -> dict:
    """The bundled document plus rq_p99_ms (range 0..50 ms): every bundled row copied for each
    rq set, the rq "high" rows concluding `high` (default: long for every energy set)."""
    doc = copy.deepcopy(DEFAULT)
    doc["variables"][RQ_P99] = {"range": [0, 50], "sets": {
        "low": {"fn": "trap", "params": [0, 0, A, B]},
        "med": {"fn": "tri", "params": [A, B, C]},
        "high": {"fn": "trap", "params": [B, C, 50, 50]},
    }}
    doc["rules"] = [{**row, RQ_P99: r, **({"energy": high or LONG} if r == "high" else {})}
                    for row in DEFAULT["rules"] for r in ("low", "med", "high")]
    return doc


RB5 = parse_rulebase(rq_document())


def _scalar_score5(f, e, cpu, psi, rq):
    f, e, cpu, psi, rq = _clamp(f, -150, 150), _clamp(e, 0, 100), _clamp(cpu, 0, 100), _clamp(psi, 0, 100), \
        _clamp(rq, 0, 50)
    strength = dict.fromkeys(S_OUTPUT, 0.0)
    for c, p, fr, en, out in S_RULES:
        for r, mu in S_RQ.items():
            w = min(S_CPU[c](cpu), S_PSI[p](psi), S_FRICTION[fr](f), S_ENERGY[en](e), mu(rq))
            o = "L" if r == "high" else out
            strength[o] = max(strength[o], w)
    num = den = 0.0
    for x in range(101):
        mu = max(min(strength[k], S_OUTPUT[k](x)) for k in S_OUTPUT)
        num += x * mu
        den += mu
    return num / den if den > 0 else 0.0


def test_a_rule_file_with_rq_parses_to_216_rules():
    assert RB5.inputs == (RQ_P99,) and RB5.antecedents[-1] == RQ_P99
    assert len(RB5.rule_output) == 216 and RB5.rule_sets.shape == (216, 5)
    assert parse_rulebase(DEFAULT).inputs == ()


# (inputs F, E, CPU, PSI, rq) -> score: an idle node whose rq is low, low/med, med/high, high.
IDLE = (0.0, 0.0, 0.0, 0.0)
UNDER_CENTROID = 17.6442  # docs/design.md#reference-vectors "all zero": the bundled rules' conclusion
LONG_CENTROID = 87.8696  # docs/design.md#reference-vectors "all max": the long set alone at strength 1


@pytest.mark.parametrize(("rq", "expected"), [
    (0.05, UNDER_CENTROID),  # low = 1: the bundled rules
    (0.15, None),  # low 0.5, med 0.5: the bundled rules, each at most 0.5 (the scalar model's value)
    (0.6, None),  # med 0.5, high 0.5: the bundled rules and long, each at most 0.5
    (30.0, LONG_CENTROID),  # high = 1: long only
])
def test_pure_table(rq, expected):
    scalar = _scalar_score5(*IDLE, rq)
    if expected is not None:
        assert scalar == pytest.approx(expected, abs=1e-4)
    assert score(RB5, *([v] for v in IDLE), rq_p99_ms=[rq])[0] == pytest.approx(scalar, abs=1e-9)


def test_agrees_with_the_scalar_model_on_random_inputs():
    rng = np.random.default_rng(5)
    n = 600
    x = np.stack([rng.uniform(-160, 160, n), rng.uniform(-5, 105, n), rng.uniform(-5, 105, n),
                  rng.uniform(-5, 105, n), np.exp(rng.uniform(np.log(0.01), np.log(80), n))], axis=1)
    got = score(RB5, *x[:, :4].T, rq_p99_ms=x[:, 4])
    want = [_scalar_score5(*row) for row in x.tolist()]
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_rq_is_required_exactly_when_the_rule_base_uses_it():
    with pytest.raises(ValueError, match="rq_p99_ms: the rule base uses"):
        score(RB5, [0], [0], [0], [0])
    with pytest.raises(ValueError, match="rq_p99_ms: the rule base does not use"):
        score(parse_rulebase(DEFAULT), [0], [0], [0], [0], rq_p99_ms=[0.1])


def test_explain_shows_the_rq_memberships_and_the_fired_rules():
    trace = explain(RB5, 0.0, 0.0, 0.0, 0.0, 0.6)
    mu = trace["memberships"]
    assert mu[RQ_P99] == pytest.approx({"low": 0.0, "med": 0.5, "high": 0.5})
    assert set(mu) == {"cpu", "psi", "friction", "energy", RQ_P99}
    top = {"cpu": "normal", "psi": "low", "friction": "under", "energy": "short"}
    assert [{k: v for k, v in r.items() if k != "strength"} for r in trace["rules"][:2]] == [
        {**top, RQ_P99: "med", "output": "under"}, {**top, RQ_P99: "high", "output": "long"}]
    assert [r["strength"] for r in trace["rules"][:2]] == pytest.approx([0.5, 0.5])
    for rule in trace["rules"]:
        assert rule["strength"] == min(mu[v][rule[v]] for v in mu) > 0
    assert all(rule[RQ_P99] != "low" for rule in trace["rules"])  # μ_low(0.6) = 0: no low rule fires


def _bad(mutate) -> dict:
    doc = rq_document()
    mutate(doc)
    return doc


@pytest.mark.parametrize(("doc", "message"), [
    (_bad(lambda d: d["variables"].update(dstate_rate=d["variables"][RQ_P99])),
     "variables.dstate_rate: unknown variable"),
    ({**DEFAULT, "rules": rq_document()["rules"]},
     "unknown key 'rq_p99_ms' (an input not declared under 'variables')"),
    (_bad(lambda d: d["rules"][0].pop(RQ_P99)), "has no 'rq_p99_ms'"),
    (_bad(lambda d: d["rules"][0].update({RQ_P99: "huge"})), "unknown rq_p99_ms set 'huge'"),
    (_bad(lambda d: d["variables"][RQ_P99]["sets"]["med"].update(params=[0.2, 0.1, 1.0])),
     "variables.rq_p99_ms.med: parameters not ordered (tri [0.2, 0.1, 1.0])"),
    (_bad(lambda d: d["variables"][RQ_P99]["sets"].pop("high")), "variables.rq_p99_ms.high: missing set"),
    (_bad(lambda d: d["rules"].pop()), "rules[cpu=high, psi=high, friction=long, energy=short, rq_p99_ms=high]: "
                                       "missing"),
])
def test_refused_rule_files_say_why(doc, message):
    with pytest.raises(RulesError) as err:
        parse_rulebase(doc)
    assert message in str(err.value)


def _node(rq: float, missing: tuple[str, ...] = ()) -> NodeInputs:
    return NodeInputs(node="n1", friction=0.0, direction=1.0, energy=0.0, cpu_pct=0.0, psi_pct=0.0, rq_p99_ms=rq,
                      missing=missing)


def _tick(node: NodeInputs) -> Inputs:
    return Inputs(time=datetime(2026, 12, 1, tzinfo=UTC), source="test", nodes={node.node: node})


def test_evaluation_uses_rq_and_counts_a_missing_one_as_zero():
    params = DecisionParams()
    _, calm = evaluate(RB5, params, {}, _tick(_node(0.05)))
    _, busy = evaluate(RB5, params, {}, _tick(_node(30.0)))
    _, lost = evaluate(RB5, params, {}, _tick(_node(math.nan, (RQ_P99,))))
    assert calm.reports["n1"].decision == "allow" and calm.reports["n1"].score == pytest.approx(UNDER_CENTROID,
                                                                                              abs=1e-4)
    assert busy.reports["n1"].decision == "deny" and busy.reports["n1"].reason == "score 87.9 ≥ 70"
    assert lost.reports["n1"].missing == (RQ_P99,) and lost.reports["n1"].decision == "allow"
    # The four-input rule base ignores the value: same score either way.
    four = parse_rulebase(DEFAULT)
    assert evaluate(four, params, {}, _tick(_node(30.0)))[1].reports["n1"].score == pytest.approx(UNDER_CENTROID,
                                                                                                  abs=1e-4)
    trace = explain_node(RB5, params, _node(30.0))
    assert trace["memberships"][RQ_P99]["high"] == 1.0 and trace["rules"][0][RQ_P99] == "high"
    assert inputs_json(_node(30.0))[RQ_P99] == 30.0
    assert RQ_P99 not in inputs_json(_node(math.nan))
    assert inputs_json(_node(math.nan, (RQ_P99,)))[RQ_P99] is None


def test_sources_read_rq_only_when_asked():
    assert RQ_P99 not in queries("")
    assert "ksense_runqueue_latency_p99_seconds" in queries("", (RQ_P99,))[RQ_P99]
    vectors = {core.CPU: {"n1": core.Sample(0.5, 100.0)}, RQ_P99: {"n1": core.Sample(0.00012, 100.0)}}
    asked = core.node_inputs("n1", vectors, {}, now=100.0, long_win_s=60.0, optional=(RQ_P99,))
    assert asked.rq_p99_ms == pytest.approx(0.12) and RQ_P99 not in asked.missing
    assert math.isnan(core.node_inputs("n1", vectors, {}, now=100.0, long_win_s=60.0).rq_p99_ms)
    absent = core.node_inputs("n1", {core.CPU: vectors[core.CPU]}, {}, now=100.0, long_win_s=60.0,
                              optional=(RQ_P99,))
    assert RQ_P99 in absent.missing and absent.why[RQ_P99] == "absent"


def test_a_source_without_the_input_is_refused():
    require((), "replay", frozenset())
    require((RQ_P99,), "prometheus", frozenset({RQ_P99}))
    with pytest.raises(RulesError, match=r"uses input rq_p99_ms, which the recording x\.csv source cannot provide"):
        require((RQ_P99,), "recording x.csv", frozenset())

"""One evaluation of all nodes (docs/design.md#decisions): missing inputs, calibrating nodes, reasons, states."""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timedelta

import pytest

from scorer.core.decision import DecisionParams, NodeState
from scorer.core.evaluate import evaluate, evaluate_series, explain_node
from scorer.core.inference import explain, score
from scorer.core.model import Inputs, NodeInputs, PodRef
from scorer.rulefile import load_rules

RB = load_rules()
DEFAULT = DecisionParams()
T0 = datetime(2026, 11, 28, 16, 0, 1)
NAN = math.nan


def _inputs(*nodes: NodeInputs, t: datetime = T0, source: str = "local") -> Inputs:
    return Inputs(time=t, source=source, nodes={n.node: n for n in nodes})


def _node(name="w1", friction=0.237792, direction=1.0, energy=0.0, cpu=2.413911, psi=0.24796, **kw) -> NodeInputs:
    return NodeInputs(node=name, friction=friction, direction=direction, energy=energy, cpu_pct=cpu, psi_pct=psi,
                      **kw)


def _one(node: NodeInputs, params=DEFAULT, states=None):
    states, results = evaluate(RB, params, states or {}, _inputs(node))
    return states[node.node], results.reports[node.node]


def test_healthy_node_report_matches_contract_example():
    state, report = _one(_node())
    assert report.score == pytest.approx(17.886, abs=1e-3)
    assert (report.level, report.decision, report.medium_band, report.reason) == ("low", "allow", None, None)
    assert (report.missing, report.bad_count, report.good_count) == ((), 0, 1)
    assert report.inputs == _node() and report.time == T0
    assert state == NodeState(0, 1, "allow")


# name: (node, params, expected missing, expected reason, scored?)
MISSING = {
    "friction and energy missing": (_node(friction=NAN, energy=NAN), DEFAULT, ("friction", "energy"),
                                    "missing metrics: friction, energy", False),
    "energy missing": (_node(energy=NAN), DEFAULT, ("energy",), "missing metrics: energy", False),
    "listed missing although a value is there": (_node(missing=("friction",)), DEFAULT, ("friction",),
                                                 "missing metrics: friction", False),
    "infinite friction": (_node(friction=math.inf), DEFAULT, ("friction",), "missing metrics: friction", False),
    "calibrating with time left": (_node(friction=NAN, energy=NAN, calibrating=True, warmup_remaining_s=122.2),
                                   DEFAULT, ("friction", "energy"), "calibrating (warm-up 123 s left)", False),
    "calibrating, time unknown": (_node(friction=NAN, energy=NAN, calibrating=True), DEFAULT,
                                  ("friction", "energy"), "calibrating", False),
    "calibrating, warm-up over": (_node(friction=NAN, energy=NAN, calibrating=True, warmup_remaining_s=0.0),
                                  DEFAULT, ("friction", "energy"), "calibrating", False),
    "procfs source: no baseline, ever": (
        _node(friction=NAN, energy=NAN, calibrating=True, baseline_unavailable=True, warmup_remaining_s=122.2),
        DEFAULT, ("friction", "energy"), "baseline unavailable (procfs source has no p99)", False),
    "everything missing": (_node(friction=NAN, energy=NAN, cpu=NAN, psi=NAN), DEFAULT,
                           ("friction", "energy", "cpu", "psi"), "missing metrics: friction, energy", False),
}


@pytest.mark.parametrize("case", MISSING)
def test_missing_critical_input_denies_with_score_100(case):
    node, params, expected_missing, expected_reason, _ = MISSING[case]
    state, report = _one(node, params, {node.node: NodeState(bad=1, good=5, last="allow")})
    assert (report.score, report.level, report.decision) == (100.0, "high", "deny")
    assert report.reason == expected_reason
    assert report.missing == expected_missing
    assert report.medium_band is None
    assert state == NodeState(bad=1, good=0, last="deny")
    assert report.inputs is node


@pytest.mark.parametrize(
    ("why", "expected"),
    [
        (
            {"friction": "prometheus down", "energy": "prometheus down"},
            "missing metrics: friction, energy (prometheus down)",
        ),
        ({"friction": "stale 75s", "energy": "absent"}, "missing metrics: friction (stale 75s), energy (absent)"),
        ({"energy": "http 503"}, "missing metrics: friction, energy (http 503)"),
    ],
)
def test_missing_reason_names_what_the_source_said(why, expected):
    node = _node(friction=NAN, energy=NAN, why=why)
    _, report = _one(node)
    assert report.reason == expected


def test_calibrating_counts_friction_and_energy_as_missing_even_with_values():
    _, report = _one(_node(calibrating=True))
    assert report.missing == ("friction", "energy") and report.reason == "calibrating"


def test_missing_cpu_and_psi_count_as_zero_and_stay_listed():
    _, report = _one(_node(friction=5, energy=5, cpu=NAN, psi=NAN))
    assert report.score == pytest.approx(score(RB, [5], [5], [0], [0])[0], abs=1e-12)
    assert report.missing == ("cpu", "psi")
    assert report.decision == "allow" and report.reason is None


def test_allow_on_missing_counts_missing_inputs_as_zero():
    params = DecisionParams(allow_on_missing=True)
    _, report = _one(_node(friction=NAN, energy=NAN, cpu=NAN, psi=NAN), params)
    assert report.score == pytest.approx(17.6442, abs=1e-4)
    assert report.missing == ("friction", "energy", "cpu", "psi")
    assert report.decision == "allow"
    _, calibrating = _one(_node(calibrating=True, friction=NAN, energy=NAN), params)
    assert calibrating.score == pytest.approx(score(RB, [0], [0], [2.413911], [0.24796])[0], abs=1e-12)


def test_unsigned_friction_when_direction_missing_and_signed_otherwise():
    _, unsigned = _one(_node(friction=50, direction=NAN, energy=10))
    _, negative = _one(_node(friction=50, direction=-1.0, energy=10))
    assert unsigned.score == pytest.approx(score(RB, [50], [10], [2.413911], [0.24796])[0], abs=1e-12)
    assert negative.score == pytest.approx(score(RB, [-50], [10], [2.413911], [0.24796])[0], abs=1e-12)


# name: (previous state, inputs (F, E, CPU, PSI), expected decision, expected reason)
REASONS = {
    "high score": (NodeState(), (62.5, 40, 70, 50), "deny", "score 73.3 ≥ 70"),
    "recovering": (NodeState(2, 0, "deny"), (0, 0, 0, 0), "deny", "recovering: good 1/2"),
    "medium-mid holding deny": (NodeState(2, 0, "deny"), (40, 30, 65, 45), "deny", "medium-mid: holding deny"),
    "allowed has no reason": (NodeState(0, 1, "deny"), (0, 0, 0, 0), "allow", None),
}


@pytest.mark.parametrize("case", REASONS)
def test_reasons(case):
    previous, (f, e, c, p), expected_decision, expected_reason = REASONS[case]
    node = _node(friction=f, energy=e, cpu=c, psi=p)
    _, report = _one(node, states={"w1": previous})
    assert (report.decision, report.reason) == (expected_decision, expected_reason)


def test_a_denys_reason_names_each_known_role_by_its_own_rate():
    """The CPU and the IO aggressor are named apart, each with its own measure; unknown roles
    are left out; an allowed node's reason stays None whatever pods it has."""
    checkout, nightly, restic = PodRef("shop", "checkout", "u-1", 0.412), PodRef("", "", "u-2", 0.981), \
        PodRef("backup", "restic", "u-3", 0.7333)
    _, report = _one(_node(friction=62.5, energy=40, cpu=70, psi=50, victim=checkout, aggressor=nightly,
                           io_aggressor=restic))
    assert report.reason == ("score 73.3 ≥ 70; victim shop/checkout (wait 0.412 s/s), aggressor uid u-2 "
                             "(cpu 0.981 s/s), io aggressor backup/restic (D-state 0.733 s/s)")
    _, report = _one(_node(friction=62.5, energy=40, cpu=70, psi=50, io_aggressor=restic))
    assert report.reason == "score 73.3 ≥ 70; io aggressor backup/restic (D-state 0.733 s/s)"
    _, report = _one(_node(victim=checkout, aggressor=nightly, io_aggressor=restic))
    assert (report.decision, report.reason) == ("allow", None)


def test_medium_high_reason_counts_up_to_b():
    params = DecisionParams(medium_low_upper=45, medium_mid_upper=45, medium_bad_threshold=2)
    node = _node(friction=25, energy=20, cpu=50, psi=30)  # 50.26: medium-high with mid = 45
    states = {}
    reasons = []
    for _ in range(4):
        states, results = evaluate(RB, params, states, _inputs(node))
        reasons.append((results.reports["w1"].decision, results.reports["w1"].reason, states["w1"].bad))
    assert reasons == [("allow", None, 1), ("deny", "medium-high 2/2", 2), ("deny", "medium-high 2/2", 3),
                       ("deny", "medium-high 2/2", 4)]


def test_nodes_sorted_first_seen_start_fresh_absent_dropped():
    states = {"gone": NodeState(3, 0, "deny"), "b": NodeState(0, 0, "deny")}
    before = dict(states)
    new_states, results = evaluate(RB, DEFAULT, states, _inputs(_node("c"), _node("a"), _node("b"),
                                                                 source="prometheus"))
    assert list(results.reports) == ["a", "b", "c"]
    assert set(new_states) == {"a", "b", "c"}
    assert new_states["a"] == NodeState(0, 1, "allow")  # fresh: last = allow
    assert new_states["b"] == NodeState(0, 1, "deny")  # continued: still needs G good ticks
    assert results.source == "prometheus" and results.time == T0
    assert states == before  # not modified


def test_many_nodes_reported_like_one_by_one():
    """The tick's columns (numpy planning, advance, levels, bands) give every node the report it
    gets alone, across ticks, odd nodes (missing, calibrating, unsigned, non-finite) included."""
    def tick(t: int) -> list[NodeInputs]:
        nodes = [_node(f"n{i:03d}", friction=(i + 13 * t) % 130 - 60.0, energy=(i + t) % 50, cpu=(3 * i) % 110,
                       psi=(7 * i + t) % 105) for i in range(200)]
        nodes[17] = _node("n017", energy=NAN)
        nodes[18] = _node("n018", cpu=NAN, missing=("cpu",), why={"cpu": "absent"})
        nodes[19] = _node("n019", calibrating=t < 2, warmup_remaining_s=30.0)
        nodes[20] = _node("n020", direction=NAN, friction=80.0, energy=40.0)
        nodes[21] = _node("n021", psi=math.inf)
        return nodes

    together_states: dict = {}
    alone_states: dict = {}
    for t in range(4):
        nodes = tick(t)
        together_states, together = evaluate(RB, DEFAULT, together_states, _inputs(*nodes))
        for node in nodes:
            previous = {node.node: alone_states[node.node]} if node.node in alone_states else {}
            states, alone = evaluate(RB, DEFAULT, previous, _inputs(node))
            alone_states[node.node] = states[node.node]
            a, b = together.reports[node.node], alone.reports[node.node]
            assert a.score == pytest.approx(b.score, abs=1e-12)
            assert a._replace(score=0) == b._replace(score=0)
        assert dict(together_states) == alone_states


def test_empty_inputs():
    states, results = evaluate(RB, DEFAULT, {"x": NodeState()}, _inputs())
    assert states == {} and dict(results.reports) == {}


def test_series_equals_tick_by_tick():
    series = []
    for t in range(40):
        nodes = [_node("a", friction=(t * 7) % 120 - 20, energy=(t * 3) % 60, cpu=t % 90, psi=(t * 5) % 70),
                 _node("b", friction=NAN if t % 9 == 0 else 30.0, energy=t, calibrating=t < 3)]
        if t % 5:
            nodes.append(_node("c", friction=70, energy=45, cpu=80, psi=60))
        series.append(_inputs(*nodes, t=T0 + timedelta(seconds=t)))
    states: dict = {}
    expected = []
    for inputs in series:
        states, results = evaluate(RB, DEFAULT, states, inputs)
        expected.append((states, results))
    got = list(evaluate_series(RB, DEFAULT, {}, series))
    assert len(got) == len(expected)
    for (s1, r1), (s2, r2) in zip(got, expected, strict=True):
        assert s1 == s2
        assert r1.time == r2.time and list(r1.reports) == list(r2.reports)
        for name in r1.reports:
            a, b = r1.reports[name], r2.reports[name]
            assert a.score == pytest.approx(b.score, abs=1e-12)
            assert (a.decision, a.reason, a.bad_count, a.good_count) == (b.decision, b.reason, b.bad_count,
                                                                         b.good_count)


def test_explain_node_uses_the_evaluated_inputs():
    node = _node(friction=40, direction=-1.0, energy=30, cpu=NAN, psi=45)
    assert explain_node(RB, DEFAULT, node) == explain(RB, -40, 30, 0, 45)
    assert explain_node(RB, DEFAULT, _node(energy=NAN)) is None
    assert explain_node(RB, DecisionParams(allow_on_missing=True), _node(energy=NAN)) == explain(
        RB, 0.237792, 0, 2.413911, 0.24796)


def test_infinite_friction_times_zero_direction_is_missing_without_a_warning():
    """inf × 0 is NaN (a missing input, as for the scalar property) and no RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = _one(_node(friction=math.inf, direction=0.0, energy=10.0))
    assert (report.decision, report.reason, report.missing) == ("deny", "missing metrics: friction", ("friction",))

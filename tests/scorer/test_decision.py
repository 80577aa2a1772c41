"""The per-node hysteresis exactly as docs/design.md#decisions, with its §9 decision trace."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.core.decision import DecisionParams, NodeState, States, advance, medium_band, medium_bands, missing, step
from scorer.core.inference import level, levels

DEFAULT = DecisionParams()


def _run(scores, params=DEFAULT, state=None):
    state = state or NodeState()
    decisions = []
    for s in scores:
        state, d = step(state, s, params)
        decisions.append(d)
    return state, decisions


def test_spec_decision_trace():
    scores = [40, 62, 62, 57, 50, 30, 75, 57, 40, 40, 65]
    expected = ["allow", "allow", "deny", "deny", "deny", "allow", "deny", "deny", "deny", "allow", "allow"]
    assert _run(scores)[1] == expected


# name: (start state, score, params, expected state, expected decision)
STEPS = {
    "high denies at once and sets bad = B": (NodeState(0, 5, "allow"), 70.0, DEFAULT, NodeState(2, 0, "deny"), "deny"),
    "high with B = 3": (NodeState(), 88.0, DecisionParams(medium_bad_threshold=3), NodeState(3, 0, "deny"), "deny"),
    "low counts good, keeps last until G": (NodeState(1, 0, "deny"), 44.9, DEFAULT, NodeState(0, 1, "deny"), "deny"),
    "low reaching G allows": (NodeState(0, 1, "deny"), 10.0, DEFAULT, NodeState(0, 2, "allow"), "allow"),
    "medium-low counts as good": (NodeState(0, 1, "deny"), 54.99, DEFAULT, NodeState(0, 2, "allow"), "allow"),
    "medium-mid at lo holds": (NodeState(1, 1, "deny"), 55.0, DEFAULT, NodeState(1, 1, "deny"), "deny"),
    "medium-mid keeps allow": (NodeState(0, 3, "allow"), 59.99, DEFAULT, NodeState(0, 3, "allow"), "allow"),
    "medium-high first tick holds": (NodeState(0, 3, "allow"), 60.0, DEFAULT, NodeState(1, 0, "allow"), "allow"),
    "medium-high reaching B denies": (NodeState(1, 0, "allow"), 69.99, DEFAULT, NodeState(2, 0, "deny"), "deny"),
    "G = 1 allows on the first good tick": (NodeState(2, 0, "deny"), 30.0, DecisionParams(good_threshold=1),
                                           NodeState(0, 1, "allow"), "allow"),
    "lo = mid leaves no medium-mid": (NodeState(0, 0, "allow"), 57.0,
                                      DecisionParams(medium_low_upper=57, medium_mid_upper=57),
                                      NodeState(1, 0, "allow"), "allow"),
}


@pytest.mark.parametrize("case", STEPS)
def test_step_table(case):
    state, score, params, expected_state, expected = STEPS[case]
    assert step(state, score, params) == (expected_state, expected)


BANDS = {
    "low": (44.99, None),
    "medium-low from 45": (45.0, "medium-low"),
    "medium-low below lo": (54.999, "medium-low"),
    "medium-mid from lo": (55.0, "medium-mid"),
    "medium-mid below mid": (59.999, "medium-mid"),
    "medium-high from mid": (60.0, "medium-high"),
    "medium-high below 70": (69.999, "medium-high"),
    "high": (70.0, None),
}


@pytest.mark.parametrize("case", BANDS)
def test_medium_bands(case):
    score, expected = BANDS[case]
    assert medium_band(score, DEFAULT) == expected


def test_medium_bands_follow_params():
    params = DecisionParams(medium_low_upper=50, medium_mid_upper=65)
    assert [medium_band(s, params) for s in (49, 50, 64, 65)] == ["medium-low", "medium-mid", "medium-mid",
                                                                   "medium-high"]


def test_missing_denies_resets_good_keeps_bad():
    assert missing(NodeState(bad=1, good=7, last="allow")) == (NodeState(bad=1, good=0, last="deny"), "deny")


def test_bad_kept_by_missing_never_changes_a_later_decision():
    """The documented reason for keeping `bad`: any continuation decides the same whatever bad was."""
    continuations = [[62, 62, 40, 40, 62], [30, 62], [57, 62, 30, 30, 61, 61], [40, 40, 65]]
    for scores in continuations:
        outcomes = {tuple(_run(scores, state=missing(NodeState(bad=b))[0])[1]) for b in range(5)}
        assert len(outcomes) == 1, scores


def test_step_rejects_non_finite_score():
    with pytest.raises(ValueError):
        step(NodeState(), float("nan"), DEFAULT)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"good_threshold": 0}, "good_threshold must be an integer ≥ 1"),
        ({"medium_bad_threshold": 1.5}, "medium_bad_threshold must be an integer ≥ 1"),
        ({"medium_low_upper": 44}, "medium_low_upper ≤ medium_mid_upper"),
        ({"medium_low_upper": 61}, "medium_low_upper ≤ medium_mid_upper"),
        ({"medium_mid_upper": 71}, "medium_low_upper ≤ medium_mid_upper"),
        ({"good_threshold": True}, "good_threshold"),
    ],
)
def test_params_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecisionParams(**kwargs)


def test_params_report_every_problem_together():
    with pytest.raises(ValueError) as err:
        DecisionParams(good_threshold=0, medium_bad_threshold=0, medium_mid_upper=80)
    assert str(err.value).count(";") == 2


def test_defaults():
    assert DecisionParams() == DecisionParams(2, 55, 60, 2, False)
    assert NodeState() == NodeState(0, 0, "allow")


# --- the columnar tick: advance / States / medium_bands equal the scalar transitions ------------

_PARAMS = st.builds(
    lambda g, b, lo, extra: DecisionParams(good_threshold=g, medium_bad_threshold=b, medium_low_upper=lo,
                                           medium_mid_upper=min(lo + extra, 70.0)),
    st.integers(1, 4), st.integers(1, 4), st.floats(45, 70), st.floats(0, 25),
)
# Scores on and around every threshold, plus anything in 0..100; None = a missing tick.
_SCORE = st.one_of(st.sampled_from([0.0, 44.99, 45.0, 54.99, 55.0, 59.99, 60.0, 69.99, 70.0, 100.0]),
                   st.floats(0, 100), st.none())
_STATE = st.builds(NodeState, st.integers(0, 5), st.integers(0, 5), st.sampled_from(["allow", "deny"]))


@settings(max_examples=300, deadline=None)
@given(params=_PARAMS, start=st.lists(_STATE, min_size=1, max_size=6),
       ticks=st.lists(st.lists(_SCORE, min_size=6, max_size=6), min_size=1, max_size=8))
def test_advance_equals_step_and_missing_node_for_node(params, start, ticks):
    names = [f"n{i}" for i in range(len(start))]
    expected = dict(zip(names, start, strict=True))
    states = States.of(expected, names)
    for row in ticks:
        row = row[:len(names)]
        scored = np.array([s is not None for s in row])
        scores = np.array([math.nan if s is None else s for s in row])
        states = advance(states, scores, scored, params)
        expected = {n: (missing(expected[n]) if s is None else step(expected[n], s, params))[0]
                    for n, s in zip(names, row, strict=True)}
        assert dict(states) == expected


def test_states_read_as_a_mapping_and_are_immutable():
    states = States.of({"b": NodeState(1, 0, "deny")}, ["a", "b"])
    assert list(states) == ["a", "b"] and len(states) == 2
    assert states["a"] == NodeState() and states["b"] == NodeState(1, 0, "deny")
    assert states.get("c") is None
    assert States.of(states, ["a", "b"]) is states  # a steady tick converts nothing
    assert dict(States.of(states, ["b", "c"])) == {"b": NodeState(1, 0, "deny"), "c": NodeState()}
    with pytest.raises(ValueError):
        states.bad[0] = 7


def test_advance_rejects_a_non_finite_score_of_a_scored_node():
    states = States.of({}, ["a", "b"])
    with pytest.raises(ValueError, match="finite"):
        advance(states, np.array([math.nan, 10.0]), np.array([True, True]), DEFAULT)
    # A NaN where the node is not scored is the missing rule, not an error.
    assert advance(states, np.array([math.nan, 10.0]), np.array([False, True]), DEFAULT)["a"].last == "deny"


@settings(max_examples=200, deadline=None)
@given(params=_PARAMS, scores=st.lists(st.one_of(st.floats(-10, 110), _SCORE.filter(bool)), max_size=20))
def test_bands_and_levels_of_a_tick_equal_the_scalar_ones(params, scores):
    array = np.array(scores, dtype=np.float64)
    assert medium_bands(array, params) == [medium_band(s, params) for s in scores]
    assert levels(array) == [level(s) for s in scores]

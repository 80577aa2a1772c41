"""The fuzzy controller against docs/design.md#reference-vectors's reference table and an independent scalar model.

`_scalar_score` below is written from docs/design.md#fuzzy-controller alone, with plain Python loops, its own
membership functions and its own copy of the rule table; it imports nothing from scorer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from scorer.core.inference import explain, level, score
from scorer.rulefile import load_rules

# --- independent scalar model (docs/design.md#fuzzy-controller) ------------------------------------------------------


def _s_trap(x, a, b, c, d):
    if x < a or x > d:
        return 0.0
    if b <= x <= c:
        return 1.0
    if x < b:
        return (x - a) / (b - a)
    return (d - x) / (d - c)


def _s_tri(x, a, b, c):
    if x <= a or x >= c:
        return 0.0
    if x == b:
        return 1.0
    return (x - a) / (b - a) if x < b else (c - x) / (c - b)


def _s_gauss(x, m, s):
    return math.exp(-((x - m) ** 2) / (2 * s * s))


S_CPU = {"normal": lambda x: _s_trap(x, 0, 0, 60, 80), "high": lambda x: _s_trap(x, 60, 80, 100, 100)}
S_PSI = {"low": lambda x: _s_trap(x, 0, 0, 20, 40), "med": lambda x: _s_tri(x, 20, 50, 80),
         "high": lambda x: _s_trap(x, 60, 80, 100, 100)}
S_FRICTION = {"under": lambda x: _s_trap(x, -150, -150, 0, 25), "short": lambda x: _s_gauss(x, 25, 12.5),
              "mod": lambda x: _s_gauss(x, 62.5, 20), "long": lambda x: _s_trap(x, 50, 100, 150, 150)}
S_ENERGY = {"short": lambda x: _s_trap(x, 0, 0, 20, 40), "mod": lambda x: _s_gauss(x, 40, 15),
            "long": lambda x: _s_trap(x, 30, 50, 100, 100)}
S_OUTPUT = {"U": lambda x: _s_trap(x, 0, 0, 15, 30), "S": lambda x: _s_tri(x, 15, 40, 65),
            "M": lambda x: _s_tri(x, 40, 65, 90), "L": lambda x: _s_trap(x, 65, 90, 100, 100)}

# rule table of docs/design.md#fuzzy-controller: (cpu, psi, friction) -> outputs for energy short / mod / long.
S_TABLE = """
normal low under U S S
normal low short S S M
normal low mod S M M
normal low long M L L
normal med under S S M
normal med short S M M
normal med mod M M L
normal med long M L L
normal high under M M L
normal high short M L L
normal high mod L L L
normal high long L L L
high low under S S S
high low short S M M
high low mod M L L
high low long L L L
high med under S S M
high med short M M M
high med mod M L L
high med long L L L
high high under L L L
high high short L L L
high high mod L L L
high high long L L L
"""
S_RULES = [
    (cpu, psi, fr, en, out)
    for cpu, psi, fr, *outs in (line.split() for line in S_TABLE.strip().splitlines())
    for en, out in zip(("short", "mod", "long"), outs, strict=True)
]


def _clamp(x, lo, hi):
    return min(max(x, lo), hi)


def _scalar_score(f, e, cpu, psi):
    f, e = _clamp(f, -150, 150), _clamp(e, 0, 100)
    cpu, psi = _clamp(cpu, 0, 100), _clamp(psi, 0, 100)
    strength = {k: 0.0 for k in S_OUTPUT}
    for c, p, fr, en, out in S_RULES:
        w = min(S_CPU[c](cpu), S_PSI[p](psi), S_FRICTION[fr](f), S_ENERGY[en](e))
        strength[out] = max(strength[out], w)
    num = den = 0.0
    for x in range(101):
        mu = max(min(strength[k], S_OUTPUT[k](x)) for k in S_OUTPUT)
        num += x * mu
        den += mu
    return num / den if den > 0 else 0.0


# --- tests -------------------------------------------------------------------------------------

RB = load_rules()

# docs/design.md#reference-vectors: (F, E, CPU, PSI) -> (score, level)
REFERENCE = {
    "all zero": ((0, 0, 0, 0), 17.6442, "low"),
    "real row 602": ((0.237792, 0, 2.413911, 0.247960), 17.8860, "low"),
    "real row 603": ((0.409997, 0.172205, 2.266452, 9.987982), 18.0641, "low"),
    "small": ((5, 5, 10, 5), 23.3142, "low"),
    "below baseline": ((-50, 10, 30, 10), 17.2375, "low"),
    "short friction": ((25, 20, 50, 30), 50.2561, "medium"),
    "rising": ((40, 30, 65, 45), 56.8792, "medium"),
    "moderate": ((62.5, 40, 70, 50), 73.2596, "high"),
    "long": ((100, 60, 90, 90), 87.8696, "high"),
    "all max": ((150, 100, 100, 100), 87.8696, "high"),
}


@pytest.mark.parametrize("case", REFERENCE)
def test_spec_reference_table(case):
    (f, e, c, p), expected, expected_level = REFERENCE[case]
    got = score(RB, [f], [e], [c], [p])[0]
    assert got == pytest.approx(expected, abs=1e-4)
    assert level(got) == expected_level


def test_reference_table_in_one_vectorised_call():
    inputs = np.array([v[0] for v in REFERENCE.values()], dtype=float)
    got = score(RB, inputs[:, 0], inputs[:, 1], inputs[:, 2], inputs[:, 3])
    assert got == pytest.approx([v[1] for v in REFERENCE.values()], abs=1e-4)


def _edge_inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    """n rows of (F, E, CPU, PSI): half uniform over and beyond the clamp ranges, half drawn from
    the set breakpoints (a = b points, plateau ends, peaks, means), the clamp limits and values
    just beside them."""
    uniform = np.column_stack([rng.uniform(-200, 200, n), rng.uniform(-20, 120, n),
                               rng.uniform(-20, 120, n), rng.uniform(-20, 120, n)])
    points = {
        0: [-200, -150, 0, 25, 50, 62.5, 100, 150, 151, -151, 12.5, 37.5],
        1: [-1, 0, 20, 30, 40, 50, 100, 101],
        2: [-5, 0, 60, 70, 80, 100, 105],
        3: [-5, 0, 20, 40, 50, 60, 80, 100, 105],
    }
    nudges = np.array([0.0, 0.0, 1e-9, -1e-9, 1e-6, -1e-6])
    edges = np.column_stack([rng.choice(points[i], n) + rng.choice(nudges, n) for i in range(4)])
    rows = np.concatenate([uniform, edges])
    rng.shuffle(rows)
    return rows


def test_agrees_with_independent_scalar_model_on_10000_inputs():
    rows = _edge_inputs(np.random.default_rng(20261128), 5000)
    assert len(rows) == 10_000
    got = score(RB, rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])
    expected = [_scalar_score(*row) for row in rows.tolist()]
    worst = int(np.argmax(np.abs(got - expected)))
    assert got[worst] == pytest.approx(expected[worst], abs=1e-9), f"inputs {rows[worst]}"


def test_scores_are_finite_and_within_the_universe():
    rows = _edge_inputs(np.random.default_rng(7), 2000)
    got = score(RB, rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])
    assert np.isfinite(got).all() and got.min() > 0 and got.max() < 100


def test_chunks_do_not_change_results():
    rows = _edge_inputs(np.random.default_rng(3), 1500)
    whole = score(RB, rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])
    single = [score(RB, [r[0]], [r[1]], [r[2]], [r[3]])[0] for r in rows[:50]]
    # Equal up to summation order (the centroid's dot product may group terms by batch shape).
    assert whole[:50] == pytest.approx(single, abs=1e-12)


@pytest.mark.parametrize(
    "args, message",
    [
        (([math.nan], [0], [0], [0]), "friction: inputs must be finite"),
        (([0], [0], [math.inf], [0]), "cpu: inputs must be finite"),
        (([0, 1], [0], [0], [0]), "1-D arrays of one length"),
        (([[0]], [[0]], [[0]], [[0]]), "1-D arrays of one length"),
    ],
    ids=["NaN friction", "infinite cpu", "lengths differ", "2-D"],
)
def test_rejects_bad_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        score(RB, *args)


def test_empty_batch():
    assert score(RB, [], [], [], []).shape == (0,)


LEVELS = {"0": (0.0, "low"), "44.999": (44.999, "low"), "45": (45.0, "medium"), "69.99": (69.99, "medium"),
          "70": (70.0, "high"), "100": (100.0, "high")}


@pytest.mark.parametrize("case", LEVELS)
def test_level(case):
    value, expected = LEVELS[case]
    assert level(value) == expected


def _centroid_from_explain(trace: dict) -> float:
    strength = dict.fromkeys(RB.output, 0.0)
    for rule in trace["rules"]:
        strength[rule["output"]] = max(strength[rule["output"]], rule["strength"])
    num = den = 0.0
    for i, x in enumerate(RB.universe.tolist()):
        mu = max(min(strength[k], RB.output_curves[j][i]) for j, k in enumerate(RB.output))
        num += x * mu
        den += mu
    return num / den if den else 0.0


@pytest.mark.parametrize("case", REFERENCE)
def test_explain_is_consistent_with_the_score(case):
    (f, e, c, p), _, _ = REFERENCE[case]
    trace = explain(RB, f, e, c, p)
    assert _centroid_from_explain(trace) == pytest.approx(score(RB, [f], [e], [c], [p])[0], abs=1e-9)
    strengths = [r["strength"] for r in trace["rules"]]
    assert strengths == sorted(strengths, reverse=True) and all(s > 0 for s in strengths)
    assert set(trace["memberships"]) == {"cpu", "psi", "friction", "energy"}
    for rule in trace["rules"]:
        assert list(rule) == ["cpu", "psi", "friction", "energy", "output", "strength"]
        expected_strength = min(trace["memberships"][v][rule[v]] for v in ("cpu", "psi", "friction", "energy"))
        assert rule["strength"] == expected_strength


def test_explain_shape_for_an_idle_node():
    trace = explain(RB, 0.0, 0.0, 0.0, 0.0)
    assert trace["memberships"]["cpu"] == {"normal": 1.0, "high": 0.0}
    assert trace["memberships"]["psi"] == {"low": 1.0, "med": 0.0, "high": 0.0}
    assert trace["rules"][0] == {"cpu": "normal", "psi": "low", "friction": "under", "energy": "short",
                                 "output": "under", "strength": 1.0}


def test_explain_clamps_like_score():
    assert explain(RB, 500, -3, 250, 120) == explain(RB, 150, 0, 100, 100)

"""Membership functions exactly as docs/design.md#fuzzy-controller, edges included (named tables)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scorer.core.membership import evaluate, gauss, trap, tri

TRAP_CASES = {
    # name: (x, (a, b, c, d), expected)
    "left of a": (-1.0, (0, 10, 20, 30), 0.0),
    "at a (rising starts at 0)": (0.0, (0, 10, 20, 30), 0.0),
    "rising middle": (5.0, (0, 10, 20, 30), 0.5),
    "at b": (10.0, (0, 10, 20, 30), 1.0),
    "plateau": (15.0, (0, 10, 20, 30), 1.0),
    "at c": (20.0, (0, 10, 20, 30), 1.0),
    "falling middle": (25.0, (0, 10, 20, 30), 0.5),
    "at d": (30.0, (0, 10, 20, 30), 0.0),
    "right of d": (31.0, (0, 10, 20, 30), 0.0),
    "a = b at the shoulder": (-150.0, (-150, -150, 0, 25), 1.0),
    "a = b left of it": (-150.5, (-150, -150, 0, 25), 0.0),
    "c = d at the shoulder": (100.0, (60, 80, 100, 100), 1.0),
    "c = d right of it": (100.5, (60, 80, 100, 100), 0.0),
    "cpu normal at 0": (0.0, (0, 0, 60, 80), 1.0),
    "cpu normal at 70": (70.0, (0, 0, 60, 80), 0.5),
    "cpu high at 70": (70.0, (60, 80, 100, 100), 0.5),
    "single point": (5.0, (5, 5, 5, 5), 1.0),
    "beside a single point": (5.001, (5, 5, 5, 5), 0.0),
}

TRI_CASES = {
    "at a": (20.0, (20, 50, 80), 0.0),
    "rising": (35.0, (20, 50, 80), 0.5),
    "peak": (50.0, (20, 50, 80), 1.0),
    "falling": (65.0, (20, 50, 80), 0.5),
    "at c": (80.0, (20, 50, 80), 0.0),
    "outside": (90.0, (20, 50, 80), 0.0),
    "asymmetric": (30.0, (15, 40, 65), 0.6),
}

GAUSS_CASES = {
    "at the mean": (25.0, (25, 12.5), 1.0),
    "one sigma": (37.5, (25, 12.5), math.exp(-0.5)),
    "two sigma below": (22.5, (62.5, 20), math.exp(-2.0)),
    "far away": (150.0, (25, 12.5), math.exp(-50.0)),
}


@pytest.mark.parametrize("case", TRAP_CASES)
def test_trap(case):
    x, params, expected = TRAP_CASES[case]
    assert trap(np.array([x]), *params)[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("case", TRI_CASES)
def test_tri(case):
    x, params, expected = TRI_CASES[case]
    assert tri(np.array([x]), *params)[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("case", GAUSS_CASES)
def test_gauss(case):
    x, params, expected = GAUSS_CASES[case]
    assert gauss(np.array([x]), *params)[0] == pytest.approx(expected, rel=1e-12)


def test_vectorised_matches_elementwise_and_keeps_shape():
    xs = np.linspace(-160, 160, 641)
    vector = trap(xs, -150, -150, 0, 25)
    assert vector.shape == xs.shape
    assert [trap(np.array([x]), -150, -150, 0, 25)[0] for x in xs] == vector.tolist()


def test_no_division_warning_on_degenerate_shoulders():
    with np.errstate(all="raise"):
        trap(np.array([-150.0, 0.0, 100.0, 150.0]), -150, -150, 100, 100)


def test_evaluate_dispatches_by_kind():
    x = np.array([30.0])
    assert evaluate("trap", (0, 10, 20, 40), x)[0] == trap(x, 0, 10, 20, 40)[0] == 0.5
    assert evaluate("tri", (20, 50, 80), x)[0] == tri(x, 20, 50, 80)[0]
    assert evaluate("gauss", (40, 15), x)[0] == gauss(x, 40, 15)[0]

"""The tuner's objective ranks policies by how well they separate pain from calm, whatever the
share of pain in the data: denying everything must not pay on a training set that is mostly pain."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lab import tune
from lab.core import metrics

CALM_S, PAIN_S, CYCLES = 20, 380, 9  # 95 % pain, like the mostly-stressed training recordings


def cycles() -> np.ndarray:
    """Hurt per second: CYCLES × (CALM_S calm, then PAIN_S hurt)."""
    return np.tile(np.r_[np.zeros(CALM_S, bool), np.ones(PAIN_S, bool)], CYCLES)


def realistic() -> np.ndarray:
    """Denies 2 s before each pain stretch (1 in 10 calm seconds denied) and allows again 30 s
    before it ends (recall 0.92): good, not perfect, two flips per cycle."""
    one = np.zeros(CALM_S + PAIN_S, bool)
    one[CALM_S - 2:CALM_S + PAIN_S - 30] = True
    return np.tile(one, CYCLES)


def score(deny: np.ndarray) -> float:
    hurt = cycles()
    return tune.objective(metrics.quality(deny, hurt, np.ones(len(hurt), bool), horizon_s=0))


def test_deny_all_and_deny_none_score_below_real_policies_on_mostly_pain_data():
    hurt = cycles()
    assert hurt.mean() == pytest.approx(0.95)
    perfect, good = score(hurt), score(realistic())
    always, never = score(np.ones(len(hurt), bool)), score(np.zeros(len(hurt), bool))
    assert perfect == pytest.approx(1.0)
    assert perfect > good > max(always, never), (perfect, good, always, never)
    # Not a near miss: deny-all is 95 % precise here, yet scores below zero.
    assert always < 0 < good - 0.5


def test_at_prior_is_the_precision_at_an_even_share():
    hurt = cycles()
    q = metrics.quality(realistic(), hurt, np.ones(len(hurt), bool), horizon_s=0)
    tpr, fpr = (PAIN_S - 30) / PAIN_S, 2 / CALM_S
    precision, f1 = metrics.at_prior(q, 0.5)
    assert q.precision > 0.99  # at the data's own share
    assert precision == pytest.approx(tpr / (tpr + fpr))
    assert f1 == pytest.approx(2 * precision * tpr / (precision + tpr))
    always = metrics.quality(np.ones(len(hurt), bool), hurt, np.ones(len(hurt), bool), horizon_s=0)
    assert metrics.at_prior(always, 0.5) == pytest.approx((0.5, 2 / 3))
    assert all(math.isnan(v) for v in metrics.at_prior(metrics.quality(hurt, hurt, hurt, 0), 0.5))

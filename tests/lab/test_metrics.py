"""lab.core.metrics on synthetic series whose figures are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lab.core import metrics


def b(text: str) -> np.ndarray:
    """'..##.' -> bools, # = True."""
    return np.array([c == "#" for c in text])


def test_pain_looks_ahead_over_the_horizon():
    assert metrics.pain(b("....#....."), 2).tolist() == b("..###.....").tolist()
    assert metrics.pain(b(".........#"), 3).tolist() == b("......####").tolist()
    assert metrics.pain(b(".........."), 5).tolist() == b("..........").tolist()


def test_hurt_is_p99_over_slo_or_a_lost_request():
    p99 = np.array([1.0, 3.0, np.nan, 1.0, np.nan])
    errors = np.array([0, 0, 0, 2, np.nan])
    assert metrics.hurt(p99, errors, 2.0).tolist() == [False, True, False, True, False]


def test_episodes_merge_runs_closer_than_the_gap():
    assert metrics.episodes(b("##..#......##"), 3) == [(0, 4), (11, 12)]
    assert metrics.episodes(b("##..#......##"), 2) == [(0, 1), (4, 4), (11, 12)]
    assert metrics.episodes(b("##..#......##"), 0) == [(0, 1), (4, 4), (11, 12)]
    assert metrics.episodes(b("....."), 3) == []


def test_confusion_figures_by_hand():
    # H = 0: pain = hurt. 10 evaluated seconds, 4 in pain; deny 5 of which 3 in pain.
    hurt = b("..####....")
    deny = b("...####.#.")
    q = metrics.quality(deny, hurt, np.ones(10, bool), horizon_s=0)
    assert q.seconds == 10
    assert q.pain_share == pytest.approx(0.4)
    assert q.deny_share == pytest.approx(0.5)
    assert q.precision == pytest.approx(3 / 5)
    assert q.recall == pytest.approx(3 / 4)
    assert q.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    # flips: allow->deny at 3, deny->allow at 7, allow->deny at 8, deny->allow at 9: 4 flips in 10 s.
    assert q.flips_per_hour == pytest.approx(4 * 3600 / 10)
    # one episode 2..5: first deny at 3 -> 1 s; last hurt 5, deny there, first allow at 7 -> 2 s.
    assert (q.episodes, q.onset_to_deny_s, q.end_to_allow_s) == (1, 1.0, 2.0)


def test_only_evaluated_seconds_count_and_gaps_are_not_flips():
    hurt = b("####......")
    deny = b("#.#.#.#.#.")
    evaluated = b("....######")
    q = metrics.quality(deny, hurt, evaluated, horizon_s=0)
    assert q.seconds == 6
    assert q.pain_share == 0.0
    assert q.precision == 0.0 and q.recall is not None and math.isnan(q.recall)
    assert q.flips_per_hour == pytest.approx(5 * 3600 / 6)


def test_never_denied_and_never_allowed_episodes_are_counted_apart():
    hurt = b(".##.....##")
    deny = b("........##")
    q = metrics.quality(deny, hurt, np.ones(10, bool), horizon_s=1)
    assert q.episodes == 2
    assert q.episodes_never_denied == 1  # the first episode got no deny while it lasted
    assert q.episodes_never_allowed == 1  # the second is still denied when the recording ends
    assert q.onset_to_deny_s == 0.0
    assert q.end_to_allow_s == 0.0  # the first episode ended while allowing


def test_constant_policies():
    hurt = b("..##......")
    always = metrics.quality(np.ones(10, bool), hurt, np.ones(10, bool), horizon_s=0)
    never = metrics.quality(np.zeros(10, bool), hurt, np.ones(10, bool), horizon_s=0)
    assert always.precision == pytest.approx(0.2) and always.recall == 1.0 and always.flips_per_hour == 0
    assert math.isnan(never.precision) and never.recall == 0.0 and never.f1 == 0.0


def test_pooled_keeps_recordings_apart():
    # A deny at the end of one recording and pain at the start of the next must not meet.
    a = (b("....#"), b("....."), np.ones(5, bool))
    c = (b("....."), b("#...."), np.ones(5, bool))
    q = metrics.pooled([a, c], horizon_s=3)
    assert q.precision == 0.0  # the deny saw no pain within its own recording
    assert q.seconds == 10
    assert q.flips_per_hour == pytest.approx(1 * 3600 / 10)


def test_threshold_sweep_and_best():
    values = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    pain_s = b("..##.")
    sweep = metrics.threshold_sweep(values, pain_s, np.ones(5, bool), np.array([1.0, 3.0, 5.0]))
    assert [round(e["f1"], 3) for e in sweep] == [round(2 * 0.5 * 1 / 1.5, 3), 1.0, 0.0]
    assert metrics.best_threshold(sweep)["threshold"] == 3.0


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.quality(np.ones(3, bool), np.ones(4, bool), np.ones(3, bool), 0)


def test_rolling_median_drops_blips_and_keeps_sustained_rises():
    p99 = np.array([1.0, 1.0, 9.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0, np.nan, 1.0])
    assert np.array_equal(metrics.rolling_median(p99, 1), p99, equal_nan=True)
    smooth = metrics.rolling_median(p99, 3)
    assert smooth[2] == 1.0  # the one-second blip is gone
    assert smooth[6] == 5.0 and smooth[7] == 5.0  # the lasting rise stays
    assert smooth[9] == 3.0  # NaN ignored: median of 5 and 1
    assert metrics.hurt(smooth, np.zeros(11), 2.0).tolist() == [False] * 5 + [True] * 5 + [False]
    with pytest.raises(ValueError, match="odd"):
        metrics.rolling_median(p99, 4)


def test_calm_pain_sources_attributes_each_calm_pain_second_to_the_hurt_it_looks_ahead_to():
    # 0..9 stress (hurting), 10..39 calm, 40..49 stress (hurting from 40). Calm hurt at 12
    # (2 s into calm: an after-effect) and at 30 (20 s in: a blip). H = 3, after-effects ≤ 15 s.
    calm = np.zeros(50, bool)
    calm[10:40] = True
    since = np.r_[np.arange(10), np.arange(30), np.arange(10)]
    hurt = np.zeros(50, bool)
    hurt[[*range(10), 12, 30, *range(40, 50)]] = True
    got = metrics.calm_pain_sources(hurt, calm, since, np.ones(50, bool), horizon_s=3, after_s=15)
    assert got == {"calm": 30, "pain": 10, "hurt itself": 2, "after-effect": 3, "calm blip": 4, "next phase": 3,
                   "calm hurt runs": 2, "one-second runs": 2}
    # Cut to end calm: the last windows run past the end and find no hurt.
    got = metrics.calm_pain_sources(hurt[:40], calm[:40], since[:40], np.ones(40, bool), horizon_s=3, after_s=15)
    assert (got["pain"], got["next phase"], got["calm blip"]) == (7, 0, 4)

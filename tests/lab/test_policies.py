"""The tuner's fast decisions are the scorer's decisions, on synthetic and on committed recordings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lab import commands, policies, recording
from scorer.core.decision import DecisionParams
from tests.lab.conftest import write_recording

DATA = Path(__file__).resolve().parents[2] / "data" / "lab"
COMMITTED = sorted(p for p in DATA.iterdir() if p.is_dir()) if DATA.is_dir() else []


def _both(rec, params=None):
    rb, default = commands._ruleset(None)
    params = params or default
    slow, _ = policies.ksense(rec, rb, params)
    fast = policies.fast_ksense(rb, params, *policies.scorable(rec))
    return slow, fast


@pytest.mark.parametrize("params", [None, DecisionParams(good_threshold=3, medium_bad_threshold=1,
                                                         medium_low_upper=48.0, medium_mid_upper=50.0)])
def test_fast_path_equals_the_replay_on_a_synthetic_recording(tmp_path, params):
    rec = recording.load(write_recording(tmp_path / "r", busy={"cpu": 70.0, "psi": 30.0, "friction": 50.0,
                                                               "energy": 30.0}))
    slow, fast = _both(rec, params)
    assert slow.any() and (~slow).any()
    assert np.array_equal(slow, fast)


def test_committed_recordings_are_present():
    split = json.loads((DATA / "split.json").read_text())
    named = [*split["train"], *split["test"]]
    assert split["train"] and split["test"] and not set(split["train"]) & set(split["test"])
    assert sorted(named) == [p.name for p in COMMITTED], "split.json names exactly the committed recordings"


@pytest.mark.parametrize("directory", COMMITTED, ids=lambda p: p.name)
def test_fast_path_equals_the_replay_on_committed_recordings(directory):
    rec = recording.load(directory)
    slow, fast = _both(rec)
    assert np.array_equal(slow, fast)
    assert rec.frozen.any() and np.isfinite(rec.p99_ms).mean() > 0.95

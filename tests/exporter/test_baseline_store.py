"""Persistence of the frozen baseline: round trip, and every reason to ignore a file."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime

import numpy as np
import pytest

from common.core.model import RawInterval
from exporter.baseline_store import FILE_NAME, BaselineStore
from exporter.core.baseline import freeze
from exporter.core.derive import Calibration, DeriveParams, initial_state, step
from exporter.core.energy import EnergyParams
from exporter.core.friction import friction

rng = np.random.default_rng(7)
X = np.abs(rng.normal([0.015, 0.02, 0.3, 0.03], [0.001, 0.004, 0.2, 0.01], size=(300, 4)))
PARAMS = DeriveParams()


class Clock:
    def __init__(self, t: float = 1_771_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def store(tmp_path, clock, params=PARAMS, **kw) -> BaselineStore:
    return BaselineStore(tmp_path / "state", params, now=clock, **kw)


def saved_calibration() -> Calibration:
    return Calibration(baseline=freeze(X), k=2.881749, fcal=0.34094565)


def test_no_file_is_not_a_warning(tmp_path):
    assert store(tmp_path, Clock()).load() == (None, None)


def test_round_trip(tmp_path):
    clock = Clock()
    cal = saved_calibration()
    assert store(tmp_path, clock).save(cal) is None
    clock.t += 3600
    got, warning = store(tmp_path, clock).load()
    assert warning is None
    assert (got.k, got.fcal) == (cal.k, cal.fcal)
    for name in ("X", "mu", "cov", "chol"):
        np.testing.assert_array_equal(getattr(got.baseline, name), getattr(cal.baseline, name))
    x = (0.02, 0.05, 1.0, 0.05)
    assert friction(got.baseline, x) == friction(cal.baseline, x)


def test_k_and_fcal_may_be_missing(tmp_path):
    clock = Clock()
    store(tmp_path, clock).save(Calibration(baseline=freeze(X)))
    got, warning = store(tmp_path, clock).load()
    assert warning is None and got.k is None and got.fcal is None


def test_resave_with_k_and_fcal_keeps_the_creation_time(tmp_path):
    clock = Clock()
    s = store(tmp_path, clock)
    cal = Calibration(baseline=freeze(X))
    s.save(cal)
    created = json.loads(s.path.read_text())["created"]
    clock.t += 100
    s.save(Calibration(baseline=cal.baseline, k=2.0, fcal=0.3))
    doc = json.loads(s.path.read_text())
    assert doc["created"] == created and doc["saved"] == clock.t and doc["k"] == 2.0
    # A new baseline gets a new creation time.
    s.save(Calibration(baseline=freeze(X[:100])))
    assert json.loads(s.path.read_text())["created"] == clock.t


def test_restored_baseline_keeps_its_age_when_resaved(tmp_path):
    clock = Clock()
    store(tmp_path, clock).save(Calibration(baseline=freeze(X)))
    clock.t += 80_000
    s = store(tmp_path, clock)
    cal, _ = s.load()
    s.save(Calibration(baseline=cal.baseline, k=1.5))
    clock.t += 10_000  # 90,000 s after the freeze
    assert store(tmp_path, clock).load()[0] is None


@pytest.mark.parametrize(
    ("name", "age", "usable"),
    [
        ("fresh", 0, True),
        ("just under a day", 86_399, True),
        ("too old", 86_401, False),
        ("clock stepped back a little", -30, True),
        ("from the future", -3600, False),
    ],
)
def test_age(tmp_path, name, age, usable):
    clock = Clock()
    store(tmp_path, clock).save(saved_calibration())
    clock.t += age
    got, warning = store(tmp_path, clock).load()
    assert (got is not None) is usable, name
    assert (warning is None) is usable, name
    if not usable:
        assert str(tmp_path / "state" / FILE_NAME) in warning


def test_max_age_is_configurable(tmp_path):
    clock = Clock()
    store(tmp_path, clock).save(saved_calibration())
    clock.t += 120
    got, warning = store(tmp_path, clock, max_age_s=60).load()
    assert got is None and "older than the 60 s limit" in warning


@pytest.mark.parametrize(
    ("name", "saved_with", "loaded_with", "context_saved", "context_loaded"),
    [
        ("other warm-up", DeriveParams(warmup_s=300), PARAMS, None, None),
        ("other window", PARAMS, DeriveParams(baseline_win=200), None, None),
        ("other energy params", PARAMS, DeriveParams(fcal_n=30), None, None),
        ("other context", PARAMS, PARAMS, {"source": "ebpf"}, {"source": "replay"}),
    ],
)
def test_mismatched_parameters_are_ignored(
    tmp_path, name, saved_with, loaded_with, context_saved, context_loaded
):
    clock = Clock()
    store(tmp_path, clock, saved_with, context=context_saved).save(saved_calibration())
    got, warning = store(tmp_path, clock, loaded_with, context=context_loaded).load()
    assert got is None, name
    assert "made with other" in warning, name


def _tamper(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("name", "damage", "expect"),
    [
        (
            "corrupt JSON",
            lambda p: p.write_text('{"format": "ksense-baseline", "X": [[1, 2'),
            "not valid JSON",
        ),
        ("empty file", lambda p: p.write_text(""), "not valid JSON"),
        ("not UTF-8", lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "cannot read"),
        ("another file", lambda p: p.write_text("[1, 2, 3]"), "not a ksense baseline file"),
        ("newer format", lambda p: _tamper(p, lambda d: d.update(version=99)), "format version 99"),
        ("no creation time", lambda p: _tamper(p, lambda d: d.pop("created")), "no creation time"),
        ("X rows of the wrong width", lambda p: _tamper(p, lambda d: d["X"][0].pop()), "X is not"),
        ("X too short", lambda p: _tamper(p, lambda d: d.update(X=d["X"][:5])), "X is not"),
        ("X with a string", lambda p: _tamper(p, lambda d: d["X"][3].__setitem__(1, "a")), "X is not"),
        ("mu edited", lambda p: _tamper(p, lambda d: d["mu"].__setitem__(0, 1.0)), "mu does not match"),
        ("cov missing", lambda p: _tamper(p, lambda d: d.pop("cov")), "cov does not match"),
        ("negative k", lambda p: _tamper(p, lambda d: d.update(k=-1)), "k is not a positive"),
        ("fcal a string", lambda p: _tamper(p, lambda d: d.update(fcal="x")), "fcal is not"),
    ],
)
def test_damaged_file_is_ignored_with_a_warning(tmp_path, name, damage, expect):
    clock = Clock()
    s = store(tmp_path, clock)
    s.save(saved_calibration())
    damage(s.path)
    got, warning = store(tmp_path, clock).load()
    assert got is None, name
    assert expect in warning, (name, warning)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    clock = Clock()
    s = store(tmp_path, clock)
    for k in (None, 1.0, 2.0):
        assert s.save(Calibration(baseline=freeze(X), k=k)) is None
    assert os.listdir(tmp_path / "state") == [FILE_NAME]


def test_failed_write_keeps_the_old_file_and_warns(tmp_path, monkeypatch):
    clock = Clock()
    s = store(tmp_path, clock)
    s.save(saved_calibration())
    before = s.path.read_text()

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    warning = s.save(Calibration(baseline=freeze(X[:50])))
    assert "No space left on device" in warning
    assert s.path.read_text() == before
    assert os.listdir(tmp_path / "state") == [FILE_NAME]


def test_unwritable_state_dir_warns_instead_of_raising(tmp_path):
    (tmp_path / "state").write_text("a file where the directory should be")
    assert "cannot save baseline" in store(tmp_path, Clock()).save(saved_calibration())


def test_derive_restarts_frozen_from_the_store(tmp_path):
    """End to end: freeze, save, 'restart', restore, first interval already has friction."""
    params = DeriveParams(warmup_s=5, min_samples=6, fcal_n=3, energy=EnergyParams(k_min_kept=4))
    clock = Clock()
    s = store(tmp_path, clock, params)

    def raw(i):
        return RawInterval(
            time=datetime(2026, 2, 17),
            t=float(i),
            sched_avg_ms=0.02 + 0.001 * (i % 3),
            sched_p99_ms=0.015,
            sched_count=100,
            dstate_total_ms=1.0 + i % 5,
            dstate_count=10,
            softirq_total_ms=2.0 + i % 2,
            softirq_count=50,
        )

    state = initial_state(params)
    for i in range(20):
        old = state
        state, _ = step(state, raw(i))
        if old.calibration is not state.calibration:
            assert s.save(state.calibration) is None
    assert state.calibration.k is not None and state.calibration.fcal is not None

    restored, warning = store(tmp_path, clock, params).load()
    assert warning is None
    _, d = step(initial_state(params, restored), raw(1000))
    assert d.frozen and d.warmup_remaining_s == 0 and math.isfinite(d.friction)
    assert d.energy_k == state.calibration.k and math.isfinite(d.direction)

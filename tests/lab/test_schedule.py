"""The seeded stress schedule and the explicit one, and the stressors' commands."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest

from lab.core.schedule import MIXABLE, STRESSORS, WARMUP, make_schedule, parse_schedule
from lab.stress import commands


def test_a_seed_gives_one_schedule_covering_the_recording():
    a = make_schedule(42, 1200, 600)
    assert a == make_schedule(42, 1200, 600)
    assert a != make_schedule(43, 1200, 600)
    assert a[0].stressor == WARMUP and (a[0].start, a[0].end) == (0, 600)
    assert a[-1].end == 1200
    for before, after in itertools.pairwise(a):
        assert before.end == after.start and before.stressor != after.stressor
        assert 15 <= after.end - after.start <= 90 + 15
    for p in a[1:]:
        assert p.parts == () or all(part in MIXABLE for part in p.parts)
        assert (p.intensity == 0) == (p.stressor == "quiet")


def test_over_many_seeds_every_stressor_appears():
    seen = Counter(p.stressor.split(":")[0] for seed in range(40) for p in make_schedule(seed, 1200, 600)[1:])
    assert set(seen) == set(STRESSORS)


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="longer than its warm-up"):
        make_schedule(1, 100, 600)
    with pytest.raises(ValueError, match="min phase"):
        make_schedule(1, 1200, 60, min_phase_s=90, max_phase_s=30)


def test_explicit_schedule():
    phases = parse_schedule("quiet:0:15, cpu:1.0:30, mix:cpu+io:0.5:20", 25)
    assert [(p.start, p.end, p.stressor) for p in phases] == [
        (0, 25, "warmup"), (25, 40, "quiet"), (40, 70, "cpu"), (70, 90, "mix:cpu+io")]
    assert phases[3].parts == ("cpu", "io")
    for bad, message in (("cpu:1.0", "expected STRESSOR:INTENSITY:SECONDS"), ("gpu:1:10", "unknown stressor 'gpu'"),
                         ("cpu:2:10", r"intensity must be in \[0, 1\]"), ("mix:cpu+quiet:1:10", "unknown stressor")):
        with pytest.raises(ValueError, match=message):
            parse_schedule(bad, 10)


def test_stressor_commands_scale_with_intensity():
    tmp = Path("/var/tmp/x")
    assert commands("cpu", 0.2, 2, tmp, 1)[0].argv[:4] == ("stress-ng", "-q", "--cpu", "1")
    assert commands("cpu", 1.0, 2, tmp, 1)[0].argv[:4] == ("stress-ng", "-q", "--cpu", "4")
    assert commands("cpu-partial", 0.5, 2, tmp, 1)[0].argv[-1] == "65"
    assert commands("memory", 1.0, 2, tmp, 1)[0].memory_cgroup
    assert "--hdd" in commands("io", 0.5, 2, tmp, 1)[0].argv
    server, client = commands("netrx", 0.5, 2, tmp, 5201)
    assert "-s" in server.argv and "5201" in client.argv[-1]
    with pytest.raises(ValueError, match="unknown stressor"):
        commands("gpu", 1, 2, tmp, 1)

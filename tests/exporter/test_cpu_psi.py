"""CPU and PSI formulas (docs/design.md#one-interval) and the /proc sampler's handling of missing PSI."""

from __future__ import annotations

import logging
import math

import pytest

from exporter.core import cpu, psi, schedstat
from exporter.sources.procstat import ProcSampler

STAT = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1 2\n"
STAT_LATER = "cpu  160 0 70 880 90 0 0 0 0 0\n"


@pytest.mark.parametrize(
    ("name", "prev", "cur", "expected"),
    [
        ("first sample", None, cpu.CpuTimes(850, 1000), math.nan),
        ("half busy", cpu.CpuTimes(850, 1000), cpu.CpuTimes(950, 1200), 50.0),
        ("no time passed", cpu.CpuTimes(850, 1000), cpu.CpuTimes(850, 1000), math.nan),
        ("counter reset", cpu.CpuTimes(850, 1000), cpu.CpuTimes(10, 20), math.nan),
        ("idle grew faster than total clamps to 0", cpu.CpuTimes(0, 100), cpu.CpuTimes(300, 200), 0.0),
    ],
)
def test_cpu_utilization(name, prev, cur, expected):
    got = cpu.utilization(prev, cur)
    if math.isnan(expected):
        assert math.isnan(got), name
    else:
        assert got == pytest.approx(expected), name


def test_parse_stat_counts_iowait_as_idle_and_sums_every_field():
    assert cpu.parse_stat(STAT) == cpu.CpuTimes(idle=850, total=1000)
    util = cpu.utilization(cpu.parse_stat(STAT), cpu.parse_stat(STAT_LATER))
    # Δidle = (880+90) − 850 = 120 of Δtotal = 200 → 40 % busy
    assert util == pytest.approx(40.0)


def test_parse_stat_rejects_garbage():
    with pytest.raises(ValueError):
        cpu.parse_stat("intr 1 2 3\n")


def test_parse_pressure_and_share():
    text = "some avg10=1.82 avg60=2.10 avg300=0.61 total=2158394\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    assert psi.parse_pressure(text) == {"some": 2158394, "full": 0}
    assert psi.parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n") == {"some": 5}
    # 250 ms stalled in a 1 s interval → 25 %
    assert psi.share_percent(1_000_000, 1_250_000, 1.0) == pytest.approx(25.0)
    assert psi.share_percent(0, 5_000_000, 1.0) == 100.0
    assert math.isnan(psi.share_percent(10, 5, 1.0))
    assert math.isnan(psi.share_percent(0, 5, 0.0))
    assert psi.node_psi({"cpu": 3.0, "io": 7.5, "memory": math.nan}) == 7.5
    assert math.isnan(psi.node_psi({}))


def test_schedstat_interval_delay_handles_new_gone_and_reused_tasks():
    prev = {1: schedstat.TaskSched(1_000_000, 10), 2: schedstat.TaskSched(5_000_000, 3), 9: schedstat.TaskSched(1, 1)}
    cur = {
        1: schedstat.TaskSched(3_000_000, 14),  # +2 ms, +4 events
        2: schedstat.TaskSched(100, 1),  # tid reused: counts the new task's 0.0001 ms, 1 event
        3: schedstat.TaskSched(500_000, 2),  # born this interval
    }
    total_ms, events = schedstat.interval_delay(prev, cur)
    assert total_ms == pytest.approx(2.0 + 0.0001 + 0.5)
    assert events == 4 + 1 + 2
    assert schedstat.parse_schedstat("123 456 7\n") == schedstat.TaskSched(456, 7)


def _write_proc(root, stat, pressure):
    (root / "pressure").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text(stat)
    for resource, text in pressure.items():
        (root / "pressure" / resource).write_text(text)


def test_proc_sampler_exports_every_resource_and_kind(tmp_path):
    line = "some avg10=0 avg60=0 avg300=0 total={}\nfull avg10=0 avg60=0 avg300=0 total={}\n"
    _write_proc(tmp_path, STAT, {r: line.format(0, 0) for r in ("cpu", "memory", "io")})
    sampler = ProcSampler(tmp_path)
    first = sampler.sample(10.0)
    assert math.isnan(first.cpu_util) and math.isnan(first.psi) and first.pressure == {}
    _write_proc(
        tmp_path,
        STAT_LATER,
        {"cpu": line.format(100_000, 0), "memory": line.format(300_000, 200_000), "io": line.format(50_000, 10_000)},
    )
    second = sampler.sample(12.0)  # Δt = 2 s
    assert second.cpu_util == pytest.approx(40.0)
    assert second.psi == pytest.approx(15.0)  # memory some: 0.3 s / 2 s
    assert second.pressure[("memory", "full")] == pytest.approx(0.10)
    assert second.pressure[("io", "some")] == pytest.approx(0.025)
    assert len(second.pressure) == 6
    assert second.pressure_available == {"cpu": True, "memory": True, "io": True}


def test_missing_psi_is_reported_once_never_raised(tmp_path, caplog):
    (tmp_path / "stat").write_text(STAT)  # no pressure/ directory at all: a psi=0 kernel
    sampler = ProcSampler(tmp_path)
    with caplog.at_level(logging.WARNING):
        for t in range(5):
            sample = sampler.sample(float(t))
    assert sample.pressure_available == {"cpu": False, "memory": False, "io": False}
    assert math.isnan(sample.psi)
    warnings = [r for r in caplog.records if "psi_unavailable" in r.getMessage()]
    assert len(warnings) == 3  # one line per resource, not one per tick

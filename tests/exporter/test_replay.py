"""The replay source: recorded time, pacing, stop, and clear errors for bad files."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta

import numpy as np
import pytest

from common.core.csvrow import format_row
from common.core.model import Derived
from common.names import KERNEL_METRICS_COLUMNS
from exporter.sources import SourceUnavailable, replay
from exporter.sources.replay import ReplayError
from tests.exporter.factories import raw_interval

T0 = datetime(2026, 2, 17, 13, 29, 13, 860000)
HEADER = ",".join(KERNEL_METRICS_COLUMNS)
RECORDED = Derived(frozen=True, samples=300, warmup_remaining_s=0.0, friction=9.9, energy=9.9)


def row(offset_s: float, avg: float = 0.02) -> str:
    raw = raw_interval(time=T0 + timedelta(seconds=offset_s), sched_avg_ms=avg, cpu_util=2.5, psi=0.25)
    return ",".join(format_row(raw, RECORDED))


def recording(tmp_path, offsets=(0.0, 1.0, 2.0, 4.0), *, lines=None, end="\n"):
    path = tmp_path / "kernel_metrics.csv"
    body = [HEADER, *(row(o) for o in offsets)] if lines is None else lines
    path.write_text("\n".join(body) + end, encoding="utf-8")
    return path


class FakeTime:
    """A monotonic clock that only the fake sleep advances; records the sleeps."""

    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def wall(self) -> float:
        return self.now

    def sleep(self, stop: threading.Event, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return stop.is_set()


def test_source_protocol_attributes(tmp_path):
    src = replay.open(recording(tmp_path))
    assert src.name == "replay" and src.missing_columns == ()
    src.close()
    src.close()  # idempotent


def test_yields_raw_columns_with_recorded_time(tmp_path):
    readings = list(replay.open(recording(tmp_path), speed=0).readings(threading.Event()))
    assert [r.raw.time for r in readings] == [T0 + timedelta(seconds=o) for o in (0, 1, 2, 4)]
    t = [r.raw.t for r in readings]
    assert list(np.diff(t)) == pytest.approx([1.0, 1.0, 2.0])
    first = readings[0].raw
    assert (first.sched_avg_ms, first.sched_count, first.cpu_util) == (0.02, 20000, 2.5)


def test_first_row_with_empty_cpu_and_psi_is_valid(tmp_path):
    line = row(0.0).split(",")
    line[KERNEL_METRICS_COLUMNS.index("CPUUtil")] = ""
    line[KERNEL_METRICS_COLUMNS.index("PSI")] = ""
    path = recording(tmp_path, lines=[HEADER, ",".join(line), row(1.0)])
    readings = list(replay.open(path, speed=0).readings(threading.Event()))
    assert math.isnan(readings[0].raw.cpu_util) and math.isnan(readings[0].raw.psi)


@pytest.mark.parametrize(
    ("name", "speed", "expected_sleeps"),
    [
        ("recorded cadence", 1.0, [1.0, 1.0, 2.0]),
        ("ten times faster", 10.0, [0.1, 0.1, 0.2]),
        ("speed 0: as fast as possible", 0.0, []),
        ("speed inf: as fast as possible", math.inf, []),
    ],
)
def test_pacing(tmp_path, name, speed, expected_sleeps):
    fake = FakeTime()
    src = replay.open(recording(tmp_path), speed=speed, sleep=fake.sleep, wall=fake.wall)
    assert len(list(src.readings(threading.Event()))) == 4, name
    assert fake.sleeps == pytest.approx(expected_sleeps), name


def test_pacing_is_drift_free_when_the_consumer_is_slow(tmp_path):
    fake = FakeTime()
    src = replay.open(recording(tmp_path), speed=1.0, sleep=fake.sleep, wall=fake.wall)
    for _ in src.readings(threading.Event()):
        fake.now += 0.25  # the consumer's work per row
    # Due at +1, +2, +4 from the first row: each sleep is shortened by the work done.
    assert fake.sleeps == pytest.approx([0.75, 0.75, 1.75])


def test_time_going_backwards_is_replayed_without_waiting(tmp_path):
    fake = FakeTime()
    src = replay.open(recording(tmp_path, (0.0, 1.0, -3600.0, -3599.0)), sleep=fake.sleep, wall=fake.wall)
    assert len(list(src.readings(threading.Event()))) == 4
    assert fake.sleeps == pytest.approx([1.0, 1.0])


def test_stop_interrupts_the_sleep(tmp_path):
    stop = threading.Event()
    fake = FakeTime()

    def sleep(ev, seconds):
        ev.set()  # as if SIGTERM arrived while waiting
        return fake.sleep(ev, seconds)

    src = replay.open(recording(tmp_path), sleep=sleep, wall=fake.wall)
    assert len(list(src.readings(stop))) == 1


def test_real_stop_wait_returns_promptly(tmp_path):
    stop = threading.Event()
    src = replay.open(recording(tmp_path, (0.0, 3600.0)))
    it = src.readings(stop)
    next(it)
    threading.Timer(0.05, stop.set).start()
    assert list(it) == []  # woke up from the one-hour wait, yielded nothing more


def test_file_is_closed_at_the_end(tmp_path):
    src = replay.open(recording(tmp_path), speed=0)
    list(src.readings(threading.Event()))
    assert src._file.closed


def test_missing_file_is_source_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable, match=r"replay file .*nope\.csv"):
        replay.open(tmp_path / "nope.csv")


def test_negative_speed_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="speed"):
        replay.open(recording(tmp_path), speed=-1)


@pytest.mark.parametrize(
    ("name", "lines", "end", "message"),
    [
        ("empty file", [], "", r"line 1: empty file"),
        ("bad header", ["Time,Foo,Bar", row(0.0)], "\n", r"line 1: header is not"),
        ("scorer output instead", ["InputTime,BaselineMode,Friction"], "\n", r"line 1: header is not"),
    ],
)
def test_header_is_checked_at_open(tmp_path, name, lines, end, message):
    path = recording(tmp_path, lines=lines, end=end)
    with pytest.raises(ReplayError, match=str(path) + ".*" + message):
        replay.open(path)


def _bad_number_line() -> str:
    cells = row(1.0).split(",")
    cells[KERNEL_METRICS_COLUMNS.index("SchedLat_Avg_ms")] = "0.0x2"
    return ",".join(cells)


@pytest.mark.parametrize(
    ("name", "lines", "end", "message"),
    [
        (
            "bad number",
            [HEADER, row(0.0), _bad_number_line()],
            "\n",
            r"line 3, column SchedLat_Avg_ms: not a number: '0.0x2'",
        ),
        ("bad time", [HEADER, "yesterday" + row(0.0)[23:]], "\n", r"line 2, column Time: not a time"),
        (
            "missing fields",
            [HEADER, row(0.0), ",".join(row(1.0).split(",")[:20])],
            "\n",
            r"line 3: expected 23 fields, got 20",
        ),
        (
            "truncated last line",
            [HEADER, row(0.0), row(1.0)[:40]],
            "",
            r"line 3: truncated last line \(no line end\)",
        ),
        (
            "truncated last line with all fields",
            [HEADER, row(0.0), row(1.0)[:-3]],
            "",
            r"line 3: truncated last line",
        ),
        ("blank line", [HEADER, row(0.0), "", row(1.0)], "\n", r"line 3: expected 23 fields, got 0"),
    ],
)
def test_bad_rows_name_file_line_and_column(tmp_path, name, lines, end, message):
    path = recording(tmp_path, lines=lines, end=end)
    src = replay.open(path, speed=0)
    with pytest.raises(ReplayError, match=str(path) + ": " + message) as err:
        list(src.readings(threading.Event()))
    assert isinstance(err.value, ValueError) and isinstance(err.value, SourceUnavailable)
    # One clear message: no chained parser traceback behind it.
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "kernel_metrics.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(ReplayError, match=r"line 1: unreadable"):
        replay.open(path)

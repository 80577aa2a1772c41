"""CsvSink durability (docs/metrics.md#csv-files): header, quoting, rotation, mismatch, crash repair, and errors
that are counted and rate-limited instead of raised, on a real full disk (a tiny tmpfs)."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import threading
from datetime import datetime
from pathlib import Path

import pytest

from common.core.csvrow import format_row, parse_row
from common.core.model import Derived, RawInterval
from common.csvfile import (
    LOG_EVERY_S,
    REASON_ENOSPC,
    REASON_OSERROR,
    REASON_QUEUE_FULL,
    REASON_READ_ONLY,
    REASONS,
    CsvSink,
    QueuedCsvWriter,
)
from common.names import KERNEL_METRICS_COLUMNS, KERNEL_METRICS_CSV_NAME
from tests.conftest import require

GOLDEN_ROW = Path(__file__).resolve().parent.parent / "golden" / "kernel_metrics_row.csv"
COLUMNS = ("seq", "value", "note")
HEADER = "seq,value,note\n"
LOGGER = "common.csvfile"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_header_first_quoting_and_flushed_per_row(tmp_path):
    path = tmp_path / "sub" / "dir" / "out.csv"  # the parent is created
    sink = CsvSink(path, COLUMNS)
    assert sink.write([1, 0.5, 'a,"quoted" note'])
    assert sink.write([2, None, "two\nlines"])
    # Visible before close: every row reaches the kernel when write() returns.
    assert path.read_bytes() == b'seq,value,note\n1,0.5,"a,""quoted"" note"\n2,,two lines\n'
    assert sink.stats().rows_written == 2
    assert dict(sink.stats().errors) == dict.fromkeys(REASONS, 0)
    sink.close()
    sink.close()


def test_reopening_appends_without_a_second_header(tmp_path):
    path = tmp_path / "out.csv"
    with CsvSink(path, COLUMNS) as sink:
        sink.write([1, 1, ""])
    with CsvSink(path, COLUMNS) as sink:
        sink.write([2, 2, ""])
    assert _rows(path) == [list(COLUMNS), ["1", "1", ""], ["2", "2", ""]]


def test_misuse_raises(tmp_path):
    sink = CsvSink(tmp_path / "out.csv", COLUMNS)
    with pytest.raises(ValueError, match="expected 3"):
        sink.write([1, 2])
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.write([1, 2, 3])


def test_kernel_metrics_row_matches_golden(tmp_path):
    raw = RawInterval(
        time=datetime(2026, 11, 28, 16, 0, 1, 250000),
        t=10234.25,
        sched_total_ms=812.254,
        sched_avg_ms=0.09121,
        sched_p95_ms=0.0625,
        sched_p99_ms=0.1875,
        sched_max_ms=4.25,
        sched_count=8906,
        sched_dropped=0,
        dstate_total_ms=41.5,
        dstate_count=77,
        cpu_util=37.5,
        psi=1.2345678,
    )
    derived = Derived(
        frozen=True,
        samples=300,
        warmup_remaining_s=0.0,
        friction=2.3456789,
        direction=-1.0,
        df_dt=-0.0123,
        energy=0.1,
        energy_w=22,
        energy_vol=0.03125,
        energy_k=1.875,
    )
    path = tmp_path / KERNEL_METRICS_CSV_NAME
    with CsvSink(path, KERNEL_METRICS_COLUMNS) as sink:
        sink.write(format_row(raw, derived))
    if os.environ.get("KSENSE_UPDATE_GOLDEN") == "1":
        GOLDEN_ROW.write_bytes(path.read_bytes())
    assert path.read_bytes() == GOLDEN_ROW.read_bytes()
    header, row = _rows(path)
    assert tuple(header) == KERNEL_METRICS_COLUMNS
    assert parse_row(row, 2)[0].time == raw.time


def test_rotation_by_size_keeps_n_files(tmp_path):
    path = tmp_path / "out.csv"
    keep, max_bytes = 3, 200
    with CsvSink(path, COLUMNS, max_bytes=max_bytes, keep=keep) as sink:
        for seq in range(100):
            assert sink.write([seq, seq * 0.25, "x" * 10])
        assert sink.stats().rows_written == 100
    files = [path] + [path.with_name(f"out.csv.{i}") for i in range(1, keep + 1)]
    assert all(f.exists() for f in files)
    assert not path.with_name(f"out.csv.{keep + 1}").exists()
    seqs = []
    for f in reversed(files):  # oldest first
        assert f.stat().st_size <= max_bytes
        rows = _rows(f)
        assert rows[0] == list(COLUMNS)
        assert list(COLUMNS) not in rows[1:]
        seqs += [int(r[0]) for r in rows[1:]]
    # The kept files hold the newest rows, contiguous, ending with the last one written.
    assert seqs == list(range(seqs[0], 100))


def test_a_file_holding_only_its_header_takes_one_long_row(tmp_path):
    path = tmp_path / "out.csv"
    with CsvSink(path, COLUMNS, max_bytes=20, keep=1) as sink:
        assert sink.write([1, 2, "y" * 50])
        assert sink.write([2, 3, "y" * 50])
    assert len(_rows(path)) == 2
    assert len(_rows(path.with_name("out.csv.1"))) == 2


def test_header_mismatch_is_renamed_aside_never_appended_to(tmp_path, caplog):
    path = tmp_path / "out.csv"
    old = b"Time,Other\n2026-01-01 00:00:00,1\n"
    path.write_bytes(old)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    with caplog.at_level(logging.WARNING, LOGGER), CsvSink(path, COLUMNS) as sink:
        assert sink.write([1, 2, 3])
    aside = list(tmp_path.glob("out.csv.mismatch-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == old
    assert path.read_text() == HEADER + "1,2,3\n"
    assert "event=csv_renamed_aside" in caplog.text

    # Same mtime again: a second file aside, the first one untouched.
    path.write_bytes(old)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    with CsvSink(path, COLUMNS) as sink:
        sink.write([1, 2, 3])
    assert sorted(p.read_bytes() for p in tmp_path.glob("out.csv.mismatch-*")) == [old, old]


def test_a_symbolic_link_at_the_path_is_never_followed(tmp_path):
    # Someone who can write the directory plants a link to a file of ours (issue #10): even one
    # that starts with our header is not appended to; the write fails and is counted.
    victim = tmp_path / "victim.csv"
    victim.write_text(HEADER)
    (tmp_path / "out.csv").symlink_to(victim)
    with CsvSink(tmp_path / "out.csv", COLUMNS) as sink:
        assert not sink.write([1, 2, 3])
        assert sink.stats().errors["oserror"] == 1
    assert victim.read_text() == HEADER


def test_partial_last_line_is_cut_at_open(tmp_path, caplog):
    path = tmp_path / "out.csv"
    path.write_bytes((HEADER + "1,1,a\n2,2,b\n3,3.").encode())
    with caplog.at_level(logging.WARNING, LOGGER), CsvSink(path, COLUMNS) as sink:
        assert sink.write([4, 4, "d"])
    assert path.read_text() == HEADER + "1,1,a\n2,2,b\n4,4,d\n"
    assert "event=csv_partial_line_cut" in caplog.text


def test_a_header_torn_by_a_crash_is_rewritten(tmp_path):
    path = tmp_path / "out.csv"
    path.write_bytes(HEADER[:5].encode())
    with CsvSink(path, COLUMNS) as sink:
        sink.write([1, 1, 1])
    assert path.read_text() == HEADER + "1,1,1\n"
    assert not list(tmp_path.glob("*.mismatch-*"))


def test_unwritable_path_is_counted_logged_rate_limited_and_retried(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the parent directory should be\n")
    path = blocker / "out.csv"
    clock = FakeClock()
    sink = CsvSink(path, COLUMNS, clock=clock)
    with caplog.at_level(logging.WARNING, LOGGER):
        for _ in range(5):
            assert sink.write([1, 2, 3]) is False
            clock.now += 1
        assert len(caplog.records) == 1
        assert "reason=oserror" in caplog.text
        clock.now += LOG_EVERY_S
        assert sink.write([1, 2, 3]) is False
    assert len(caplog.records) == 2
    assert "suppressed=4" in caplog.records[1].getMessage()
    assert sink.stats().errors[REASON_OSERROR] == 6
    assert sink.stats().rows_written == 0

    # The path becomes writable: the next write opens the file.
    blocker.unlink()
    blocker.mkdir()
    assert sink.write([7, 8, 9])
    assert path.read_text() == HEADER + "7,8,9\n"
    sink.close()


def test_stats_are_safe_to_read_while_writing(tmp_path):
    sink = CsvSink(tmp_path / "out.csv", COLUMNS, max_bytes=4096, keep=2)
    stop = threading.Event()
    seen: list[int] = []

    def scrape() -> None:
        while not stop.is_set():
            seen.append(sink.stats().rows_written)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    for seq in range(5000):
        sink.write([seq, seq, "row"])
    stop.set()
    scraper.join()
    sink.close()
    assert seen == sorted(seen)
    assert sink.stats().rows_written == 5000


# --- a real full disk and a real read-only file system ------------------------------------------
@pytest.fixture
def tmpfs_factory(tmp_path):
    """Mount small tmpfs file systems under tmp_path (root only); unmounted in the finalizer."""
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        require(done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        # Lazy, so that a file a failed test left open cannot keep the mount around.
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_disk_full_is_counted_and_recovers_when_space_returns(tmpfs_factory, caplog):
    disk = tmpfs_factory("small", "size=64k")
    path = disk / "out.csv"
    clock = FakeClock()
    sink = CsvSink(path, COLUMNS, clock=clock)
    assert sink.write([0, 0, "before the disk filled"])
    filler = disk / "filler"
    with pytest.raises(OSError), open(filler, "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)
    with caplog.at_level(logging.WARNING, LOGGER):
        failed = sum(not sink.write([seq, seq, "x" * 200]) for seq in range(1, 40))
    assert failed > 0
    assert sink.stats().errors[REASON_ENOSPC] == failed
    # One line for the whole episode: a short write is undone, not left for the repair at open.
    assert [r.getMessage().split(" path=")[0] for r in caplog.records] == ["event=csv_write_failed"]
    assert "reason=enospc" in caplog.text

    filler.unlink()
    with caplog.at_level(logging.INFO, LOGGER):
        assert sink.write([99, 99, "after"])
    assert "event=csv_write_recovered" in caplog.text
    sink.close()
    rows = _rows(path)
    assert rows[0] == list(COLUMNS)
    assert all(len(r) == 3 for r in rows)
    assert rows[-1] == ["99", "99", "after"]


def test_read_only_file_system_is_its_own_reason(tmpfs_factory):
    disk = tmpfs_factory("ro", "ro,size=64k")
    with CsvSink(disk / "out.csv", COLUMNS) as sink:
        assert sink.write([1, 2, 3]) is False
        assert sink.stats().errors[REASON_READ_ONLY] == 1


class _HungDisk(CsvSink):
    """A sink whose writes block until released, like a write(2) on a hung NFS mount."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, row):
        self.entered.set()
        assert self.release.wait(10)
        return super().write(row)


def test_a_hung_disk_never_blocks_the_caller_and_overflow_is_counted(tmp_path):
    sink = _HungDisk(tmp_path / "k.csv", COLUMNS)
    writer = QueuedCsvWriter(sink, max_rows=2)
    writer.start()
    try:
        assert writer.write(["0", "a", ""])
        assert sink.entered.wait(5)  # row 0 is stuck in the disk write
        accepted = [writer.write([str(i), "a", ""]) for i in range(1, 6)]
        assert accepted == [True, True, False, False, False]
        assert writer.stats().errors[REASON_QUEUE_FULL] == 3
    finally:
        sink.release.set()
        writer.close()
    assert [r[0] for r in _rows(tmp_path / "k.csv")] == ["seq", "0", "1", "2"]
    stats = writer.stats()
    assert stats.rows_written == 3
    assert dict(stats.errors) == {**dict.fromkeys(REASONS, 0), REASON_QUEUE_FULL: 3}
    assert not any(t.name == "csv-writer" for t in threading.enumerate())

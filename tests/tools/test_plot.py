"""`python -m scorer.plot`: PNGs of the exact size from replay and monitor CSVs; clear errors (docs/tools.md)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from common.names import FUZZY_MONITOR_COLUMNS, FUZZY_SCORE_COLUMNS, KERNEL_METRICS_COLUMNS, REPLAY_COLUMNS
from scorer import plot
from scorer import replay as replay_tool
from tests.conftest import REAL_KERNEL_CSV, require

REPO = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "MPLCONFIGDIR": "/tmp/ksense-test-mpl"}

MONITOR_ROWS = [
    ("2026-02-17 13:29:13.860", "node-a", "1.500000", "0.200000", "10.000000", "1.000000", "20.000", "low", "allow",
     ""),
    ("2026-02-17 13:29:13.860", "node-b", "", "", "", "", "100.000", "high", "deny", "calibrating"),
    ("2026-02-17 13:29:14.860", "node-a", "30.500000", "20.200000", "60.000000", "31.000000", "62.000", "medium",
     "allow", ""),
    ("2026-02-17 13:29:14.860", "node-b", "-5.500000", "2.200000", "30.000000", "5.000000", "30.000", "low", "deny",
     ""),
    ("2026-02-17 13:29:15.860", "node-a", "60.500000", "40.200000", "80.000000", "51.000000", "75.000", "high",
     "deny", ""),
    ("2026-02-17 13:29:15.860", "node-b", "-4.500000", "2.000000", "31.000000", "4.000000", "31.000", "low", "allow",
     ""),
    ("2026-02-17 13:29:16", "node-a", "10.500000", "10.200000", "20.000000", "11.000000", "40.000", "low", "deny", ""),
]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def write_csv(path: Path, header, rows) -> Path:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def real_replay(tmp_path_factory) -> Path:
    require(REAL_KERNEL_CSV.exists(), f"needs the reference recording {REAL_KERNEL_CSV}")
    out = tmp_path_factory.mktemp("plot") / "decisions.csv"
    assert replay_tool.main([str(REAL_KERNEL_CSV), "--output", str(out)]) == 0
    return out


@pytest.fixture
def monitor_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "fuzzy_monitor.csv", FUZZY_MONITOR_COLUMNS, MONITOR_ROWS)


@pytest.fixture
def score_csv(tmp_path) -> Path:
    rows = [("2026-02-17 13:29:14.100", "u1", "sa", "p1", "1", "2", "node-a", "20.000", "", "", ""),
            ("2026-02-17 13:29:15.100", "u2", "sa", "p2", "1", "2", "node-b", "31.000", "node-a", "75.000", "deny")]
    return write_csv(tmp_path / "fuzzy_score.csv", FUZZY_SCORE_COLUMNS, rows)


def test_plot_of_the_real_recordings_replay_as_a_command(real_replay, tmp_path):
    out = tmp_path / "real.png"
    done = subprocess.run(
        [sys.executable, "-m", "scorer.plot", str(real_replay), "--output", str(out), "--width", "1000",
         "--height", "700", "--dpi", "96"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "1 series, 4569 rows" in done.stdout
    assert out.stat().st_size > 20_000  # thousands of points, bands, deny spans: not a blank canvas
    assert png_size(out) == (1000, 700)
    assert not list(tmp_path.glob(".*.tmp"))


def test_monitor_with_two_nodes_and_admission_reviews(monitor_csv, score_csv, tmp_path, capsys):
    out = tmp_path / "mon.png"
    assert plot.main([str(monitor_csv), "--scores", str(score_csv), "--output", str(out)]) == 0
    assert "2 series, 7 rows, 2 admission reviews" in capsys.readouterr().out
    assert png_size(out) == (1400, 900)  # the defaults
    assert out.stat().st_size > 10_000


def test_node_filter_keeps_one_monitor_node_and_every_replay(monitor_csv, real_replay, tmp_path, capsys):
    out = tmp_path / "one.png"
    assert plot.main([str(monitor_csv), str(real_replay), "--node", "node-b", "--output", str(out),
                      "--width", "640", "--height", "480", "--dpi", "72"]) == 0
    assert "2 series, 4572 rows" in capsys.readouterr().out  # node-b's 3 rows + the replay's 4569
    assert png_size(out) == (640, 480)


@pytest.mark.parametrize(("width", "height", "dpi"), [(1001, 667, 96), (1234, 777, 150), (333, 1000, 30)])
def test_size_is_exact_whatever_the_dpi(monitor_csv, tmp_path, width, height, dpi):
    out = tmp_path / "s.png"
    assert plot.main([str(monitor_csv), "--output", str(out), "--width", str(width), "--height", str(height),
                      "--dpi", str(dpi)]) == 0
    assert png_size(out) == (width, height)


def test_deny_spans_last_until_the_next_row():
    t = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert plot.deny_spans(t, [False] * 6) == []
    assert plot.deny_spans(t, [True, True, False, False, True, False]) == [(0.0, 2.0), (4.0, 1.0)]
    assert plot.deny_spans(t, [False, False, False, False, False, True]) == [(5.0, 1.0)]  # median step
    assert plot.deny_spans([7.0], [True]) == [(7.0, 0.0)]


BAD_INPUTS = {
    "empty": ("", "line 1: empty file"),
    "header only": (",".join(REPLAY_COLUMNS) + "\n", "line 2: no data rows"),
    "unknown header": ("a,b,c\n1,2,3\n", "line 1: header is neither"),
    "kernel_metrics.csv": (",".join(KERNEL_METRICS_COLUMNS) + "\n", "python -m scorer.replay"),
    "bad number": (",".join(FUZZY_MONITOR_COLUMNS) + "\n" + ",".join(MONITOR_ROWS[0]) + "\n"
                   + ",".join(MONITOR_ROWS[1]).replace("100.000", "lots") + "\n", "line 3, column Score"),
    "bad time": (",".join(FUZZY_MONITOR_COLUMNS) + "\n" + ",".join(MONITOR_ROWS[0]).replace("13:29", "1329") + "\n",
                 "line 2, column Time"),
    "short row": (",".join(FUZZY_MONITOR_COLUMNS) + "\n" + ",".join(MONITOR_ROWS[0][:4]) + "\n",
                  "line 2: expected 10 fields, got 4"),
    "binary": ("\x89PNG\r\n\x1a\n\x00\xff", "line"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_naming_file_and_line(case, tmp_path, capsys):
    text, expected = BAD_INPUTS[case]
    bad = tmp_path / "bad.csv"
    if case == "binary":
        bad.write_bytes(b"Time,\xff\xfe\x00\n")
    else:
        bad.write_text(text)
    assert plot.main([str(bad), "--output", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"plot: {bad}: "), err
    assert expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_bad_options_and_missing_files_exit_2(monitor_csv, score_csv, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert plot.main([str(tmp_path / "missing.csv"), "--output", out]) == 2
    assert "missing.csv: cannot read" in capsys.readouterr().err
    assert plot.main([str(monitor_csv), "--node", "node-z", "--output", out]) == 2
    assert "nodes there: node-a, node-b" in capsys.readouterr().err
    assert plot.main([str(monitor_csv), "--scores", str(monitor_csv), "--output", out]) == 2
    assert "not the fuzzy_score.csv header" in capsys.readouterr().err
    assert plot.main([str(monitor_csv), "--width", "10", "--output", out]) == 2
    assert "--width 10" in capsys.readouterr().err
    assert plot.main([str(monitor_csv), "--output", str(tmp_path / "x.jpg")]) == 2
    assert plot.main([str(monitor_csv), "--output", str(tmp_path / "no-such-dir" / "x.png")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_bad_input_as_a_command_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("")
    done = subprocess.run([sys.executable, "-m", "scorer.plot", str(bad), "--output", str(tmp_path / "x.png")],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"plot: {bad}: line 1: empty file, expected a CSV header\n"


def test_without_matplotlib_exit_2_with_the_install_hint(monitor_csv, tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.dates", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    assert plot.main([str(monitor_csv), "--output", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "pip install '.[plot]'" in err
    assert "uv pip install -r requirements/plot.txt" in err

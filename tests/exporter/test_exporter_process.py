"""The exporter and collector_only.py as processes: start-up, faults and shutdown (issue: bad
input and faults). Each test starts the real entry point and talks to it as a user would."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import collector_only
from common import names
from common.names import KERNEL_METRICS_COLUMNS
from exporter import app, config, preflight
from tests.exporter.factories import stated_series_per_node
from tests.support import REPO, wait_for

PY = sys.executable


def start(args, env_extra, *, module=("-m", "exporter")):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    env.update(env_extra)
    return subprocess.Popen(
        [PY, *module, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@contextlib.contextmanager
def running(args, env_extra, **kw):
    """`start` for a test that stops the process itself: on the way out a process still alive is
    killed, then Popen's exit reaps it and closes its pipes (open pipes are ResourceWarnings)."""
    proc = start(args, env_extra, **kw)
    with proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def read_port(proc, deadline_s=30.0) -> int:
    """The real port from the banner `ksense: metrics at http://127.0.0.1:PORT/metrics`."""
    end = time.monotonic() + deadline_s
    seen = []
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        m = re.search(r"metrics at http://[\d.]+:(\d+)/metrics", line)
        if m:
            return int(m.group(1))
    proc.kill()
    raise AssertionError("no metrics banner:\n" + "".join(seen) + proc.stderr.read())


def scrape(port: int, path="/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def rows_of(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def stop(proc) -> float:
    """SIGTERM; returns seconds until exit."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return time.monotonic() - t0


def small_recording(tmp_path: Path, real_csv: Path, rows: int) -> Path:
    lines = real_csv.read_text().splitlines(keepends=True)[: rows + 1]
    path = tmp_path / "recording.csv"
    path.write_text("".join(lines))
    return path


# These tests write to pytest's tmp_path, which only root can reach: the exporter keeps root
# (test_privilege.py covers giving it up).
KEEP_ROOT = {"KSENSE_RUN_AS": "0"}


def test_sigterm_exits_within_2s_with_the_csv_intact(tmp_path, need_ebpf):
    out = tmp_path / "k.csv"
    with running(["--port", "0", "--csv", str(out), "--state-dir", str(tmp_path / "state")], KEEP_ROOT) as proc:
        port = read_port(proc)
        wait_for(lambda: out.exists() and len(rows_of(out)) >= 3, 20, "two CSV rows")
        assert "ksense_exporter_source_info" in scrape(port)
        took = stop(proc)
        assert proc.returncode == 0, proc.stderr.read()
    assert took < 2.0
    rows = rows_of(out)
    assert rows[0] == list(KERNEL_METRICS_COLUMNS)
    assert all(len(r) == 23 for r in rows) and sum(r == rows[0] for r in rows) == 1
    assert out.read_text().endswith("\n")


def test_a_default_ebpf_exporter_serves_the_series_the_sizing_guide_states(tmp_path, need_ebpf):
    """The real exporter with the defaults (eBPF, per-pod attribution, CSV): its node-level series
    are docs/sizing.md's number. Within the 5-minute warm-up the four values that need the
    frozen baseline (friction, its direction and rate, energy) are not served yet: counted apart."""
    out = tmp_path / "k.csv"
    with running(["--port", "0", "--csv", str(out), "--state-dir", str(tmp_path / "state")], KEEP_ROOT) as proc:
        port = read_port(proc)
        wait_for(lambda: _ready(port), 30, "/readyz 200")
        text = scrape(port)
        stop(proc)
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    node_level = [s for s in samples if names.LABEL_POD_UID not in s.labels]
    served = {s.name for s in samples}
    after_warmup = (names.FRICTION, names.FRICTION_DIRECTION, names.FRICTION_RATE, names.ENERGY)
    not_yet = sum(f.name not in served for f in after_warmup)
    assert len(node_level) + not_yet == stated_series_per_node()[0]


def _ready(port: int) -> bool:
    try:
        return scrape(port, "/readyz").strip() != ""
    except urllib.error.HTTPError:
        return False


def test_unwritable_csv_is_counted_and_metrics_keep_serving(tmp_path, real_kernel_csv):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where a directory should be\n")
    recording = small_recording(tmp_path, real_kernel_csv, 400)
    with running(
        ["--source", f"replay:{recording}", "--speed", "20", "--port", "0", "--csv", str(blocker / "k.csv")],
        KEEP_ROOT,
    ) as proc:
        port = read_port(proc)
        counted = re.compile(r'ksense_csv_write_errors_total\{[^}]*reason="oserror"[^}]*\} [1-9]')

        def errors_counted():
            text = scrape(port)
            return text if counted.search(text) else None

        text = wait_for(errors_counted, 20, "a counted CSV error")
        assert 'ksense_exporter_source_info{node=' in text and 'source="replay"' in text
        assert "ksense_baseline_samples{" in text
        assert scrape(port, "/healthz").strip() == "ok"
        stop(proc)
    assert proc.returncode == 0


def test_malformed_replay_names_the_line_without_a_traceback(tmp_path, real_kernel_csv):
    lines = real_kernel_csv.read_text().splitlines(keepends=True)[:6]
    fields = lines[3].split(",")
    fields[1] = "abc"  # SchedLat_Total_ms of file line 4
    lines[3] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines))
    proc = start(["--source", f"replay:{bad}", "--speed", "0", "--no-csv", "--port", "0"], {})
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "line 4" in err and "abc" in err
    assert "Traceback" not in err

    header_only = tmp_path / "wrong.csv"
    header_only.write_text("a,b,c\n1,2,3\n")
    proc = start(["--source", f"replay:{header_only}", "--no-csv", "--port", "0"], {})
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "line 1" in err and "Traceback" not in err


def test_bad_configuration_exits_2_listing_every_problem():
    proc = start(["--port", "99999"], {"KSENSE_INTERVAL_S": "soon", "KSENSE_SOURCE": "magic"})
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    for name in ("KSENSE_EXPORTER_PORT", "KSENSE_INTERVAL_S", "KSENSE_SOURCE"):
        assert name in err
    assert "Traceback" not in err


def test_not_root_falls_back_to_procfs_loudly(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    cfg = config.from_env({"KSENSE_NODE_NAME": "n"}, None)
    source = app.open_source(cfg)
    try:
        assert source.name == "procfs"
        assert "SchedLat_P99_ms" in source.missing_columns
    finally:
        source.close()
    assert any("fallback=procfs" in r.getMessage() and "root" in r.getMessage() for r in caplog.records)


def test_collector_only_preflight_prints_the_fix_and_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(preflight, "TRACEFS", tmp_path / "no-tracefs")
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: None)
    assert collector_only.main(["--csv", str(tmp_path / "k.csv")]) == 2
    err = capsys.readouterr().err
    assert "not running as root" in err and "sudo -E" in err
    assert "apt-get install -y bpfcc-tools python3-bpfcc" in err
    assert f"mount -t tracefs nodev {tmp_path / 'no-tracefs'}" in err
    assert not (tmp_path / "k.csv").exists()


@pytest.mark.parametrize(
    ("euid", "bcc", "tracefs_ok", "expected"),
    [
        (0, True, True, []),
        (1000, True, True, ["root"]),
        (0, False, True, ["bcc"]),
        (0, True, False, ["tracefs"]),
        (1000, False, False, ["root", "bcc", "tracefs"]),
    ],
)
def test_preflight_table(tmp_path, euid, bcc, tracefs_ok, expected):
    tracefs = tmp_path / "tracing"
    if tracefs_ok:
        (tracefs / "events" / "sched").mkdir(parents=True)
    problems = preflight.check(euid=euid, bcc_found=bcc, tracefs=tracefs)
    assert len(problems) == len(expected)
    for problem, word in zip(problems, expected, strict=True):
        assert word in problem.what


def test_collector_only_writes_the_23_column_csv_and_serves_no_http(tmp_path, need_ebpf):
    out = tmp_path / "collector" / "kernel_metrics.csv"
    with running([], {"KSENSE_METRICS_CSV": str(out), "KSENSE_STATE_DIR": str(tmp_path / "s")},
                 module=("collector_only.py",)) as proc:
        wait_for(lambda: out.exists() and len(rows_of(out)) >= 3, 30, "collector rows")
        sockets = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
        assert not any(s.startswith("socket:") for s in sockets), sockets
        stop(proc)
        assert proc.returncode == 0, proc.stderr.read()
    rows = rows_of(out)
    assert rows[0] == list(KERNEL_METRICS_COLUMNS)
    data = rows[1:]
    assert data and all(len(r) == 23 for r in data)
    # eBPF fills every raw column: counts and percentiles are present on every row.
    for r in data:
        row = dict(zip(KERNEL_METRICS_COLUMNS, r, strict=True))
        assert row["SchedLat_Count"] and int(row["SchedLat_Count"]) > 0
        assert row["SchedLat_P99_ms"] and row["DState_Count"] and row["SoftIRQ_Count"]
        assert row["BaselineMode"] == "CALIBRATING"


def test_a_port_in_use_exits_2_and_closes_the_csv_sink_and_the_source(monkeypatch, tmp_path, capsys):
    closed = []

    class Sink(app.CsvSink):
        def close(self):
            closed.append(self.path)
            super().close()

    monkeypatch.setattr(app, "CsvSink", Sink)
    monkeypatch.setattr(app.signal, "signal", lambda *args: None)  # leave pytest's handlers alone
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = config.from_env(
            {**KEEP_ROOT, "KSENSE_NODE_NAME": "n", "KSENSE_SOURCE": "procfs", "KSENSE_EXPORTER_HOST": "127.0.0.1",
             "KSENSE_EXPORTER_PORT": str(busy.getsockname()[1]), "KSENSE_METRICS_CSV": str(tmp_path / "k.csv"),
             "KSENSE_STATE_DIR": str(tmp_path / "state")},
            None,
        )
        assert app.run(cfg, http=True, summary=False) == 2
    assert closed == [tmp_path / "k.csv"]
    assert not any(t.name == "csv-writer" for t in threading.enumerate())
    assert "cannot listen" in capsys.readouterr().err

"""scorer.export: argument handling, row building, chunking against a fake API, and a real
Prometheus export checked against the exporter's own CSV."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest

from common import names as n
from common.core.csvrow import format_time
from common.metrics import MetricsServer, make_registry
from scorer import export
from scorer.core.decision import DecisionParams
from scorer.evaluator import Evaluator
from scorer.metrics import ScorerCollector
from scorer.rulefile import load_rules
from scorer.sources.local import LocalSource
from tests import support
from tests.scorer import promserver
from tests.scorer.conftest import Reply
from tests.support import REPO


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scorer.export", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("15", 15.0)]
)
def test_parse_duration(text, seconds):
    assert export.parse_duration(text) == seconds


def test_parse_time_forms():
    now = 1_800_000_000.0
    assert export.parse_time("now", now) == now
    assert export.parse_time("now-1h", now) == now - 3600
    assert export.parse_time("1700000000.5", now) == 1_700_000_000.5
    assert export.parse_time("2027-01-15T12:00:00Z", now) == datetime(2027, 1, 15, 12, tzinfo=UTC).timestamp()
    assert export.parse_time("2027-01-15 13:00:00", now) == datetime(2027, 1, 15, 13).timestamp()
    with pytest.raises(export.UsageError, match="not a time"):
        export.parse_time("yesterday", now)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "tomorrow", "--end", "now"], "not a time: 'tomorrow'"),
        (["--start", "now", "--end", "now-1h"], "is before --start"),
        (["--start", "now-1m", "--end", "now", "--step", "0s"], "not a positive duration"),
    ],
)
def test_bad_arguments_exit_2_without_traceback(tmp_path, args, message):
    done = run_cli("--prometheus-url", "http://127.0.0.1:1", "--node", "a", "--output-dir", str(tmp_path), *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unreachable_prometheus_exits_2_and_leaves_no_file(tmp_path):
    url = f"http://127.0.0.1:{support.free_port()}"
    done = run_cli("--prometheus-url", url, "--node", "a", "--start", "now-1m", "--end", "now",
                   "--output-dir", str(tmp_path))
    assert done.returncode == 2
    assert f"cannot query Prometheus at {url}: prometheus down" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.rglob("*.csv*")) == []


def test_kernel_row_differences_and_counter_reset():
    cursor = export.NodeCursor()
    base = {"ref": 1000.0, "frozen": 1.0, "samples": 300.0, "friction": 2.5, "direction": -1.0, "cpu": 0.25,
            "psi": 0.031, "energy_w": 12.0, "rq_max": 0.004}
    first = export.kernel_row(cursor, {**base, "rq_sum": 10.0, "rq_count": 1000.0, "rq_dropped": 2.0})
    cols = dict(zip(n.KERNEL_METRICS_COLUMNS, first, strict=True))
    assert cols["SchedLat_Total_ms"] == "" and cols["SchedLat_Count"] == ""  # no previous sample
    assert cols["Friction"] == "2.500000" and cols["Direction"] == "-1.0" and cols["BaselineMode"] == "FROZEN"
    assert cols["CPUUtil"] == "25.000000" and cols["PSI"] == "3.100000" and cols["SchedLat_Max_ms"] == "4.0000"
    assert cols["SchedLat_P95_ms"] == cols["SchedLat_P99_ms"] == ""
    second = export.kernel_row(cursor, {**base, "ref": 1001.0, "rq_sum": 10.5, "rq_count": 1200.0, "rq_dropped": 2.0})
    cols = dict(zip(n.KERNEL_METRICS_COLUMNS, second, strict=True))
    assert cols["SchedLat_Total_ms"] == "500.00" and cols["SchedLat_Count"] == "200"
    assert cols["SchedLat_Avg_ms"] == "2.5000" and cols["SchedLat_Dropped"] == "0"
    reset = export.kernel_row(cursor, {**base, "ref": 1002.0, "rq_sum": 0.1, "rq_count": 40.0, "rq_dropped": 0.0})
    cols = dict(zip(n.KERNEL_METRICS_COLUMNS, reset, strict=True))
    assert cols["SchedLat_Total_ms"] == "100.00" and cols["SchedLat_Count"] == "40"


def test_monitor_row():
    row = {"score_ref": 1000.0, "score": 73.25961, "allowed": 0.0, "friction": 62.5, "direction": 1.0,
           "energy": 40.0, "cpu": 0.7, "missing_psi": 1.0, "psi": 0.5}
    cells = export.monitor_row("w1", row)
    assert cells[1:] == ["w1", "62.500000", "40.000000", "70.000000", "", "73.260", "high", "deny", ""]
    gone = export.monitor_row("w1", {"score_ref": 1.0, "score": 100.0, "allowed": 0.0, "missing_friction": 1.0,
                                     "missing_energy": 1.0})
    assert gone[-1] == "missing metrics: friction, energy" and gone[2:6] == ["", "", "", ""]


def test_long_ranges_are_chunked_with_progress(fake_server, tmp_path):
    prometheus = _fake_prometheus([
        ({"__name__": n.BASELINE_FROZEN.name, "node": "a"}, lambda t: 1.0, lambda t: t - 0.5),
        ({"__name__": n.FRICTION.name, "node": "a"}, lambda t: 1.5, lambda t: t - 0.5),
    ])

    def handler(path, params):
        lo, hi, step = (float(params[k][0]) for k in ("start", "end", "step"))
        assert (hi - lo) / step + 1 <= 11_000
        return prometheus(path, params)

    fake_server.handler = handler
    lines: list[str] = []
    client = export.PromClient(fake_server.url, timeout_s=5)
    cursors = export.export(client, ["a"], 0.0, 25_000.0, 1.0, tmp_path, progress=lines.append)
    assert len(lines) == 3 and lines[0].startswith("export: chunk 1/3")
    assert cursors["a"].kernel_rows == 25_001
    with (tmp_path / "a" / n.KERNEL_METRICS_CSV_NAME).open() as f:
        assert sum(1 for _ in f) == 25_002
    assert (tmp_path / "a" / n.FUZZY_MONITOR_CSV_NAME).read_text().strip() == ",".join(n.FUZZY_MONITOR_COLUMNS)


@pytest.mark.real
def test_export_from_a_real_prometheus(real_parts, need_prometheus, real_kernel_csv, tmp_path):
    """A replaying exporter and a scorer (LocalSource evaluator + its /metrics) scraped by a real
    Prometheus; the export's rows are the exporter's own rows and the scorer's scores."""
    exporter_port = support.free_port()
    own_csv = tmp_path / "own_kernel_metrics.csv"
    ev = Evaluator(LocalSource(f"http://127.0.0.1:{exporter_port}/metrics"), load_rules(), DecisionParams())
    collector = ScorerCollector(ev)
    scorer_server = MetricsServer(make_registry(collector), ev.ready, host="127.0.0.1", port=0)
    scorer_server.start()
    stop = threading.Event()
    ticking = threading.Thread(target=ev.run, args=(stop,), daemon=True)
    try:
        prom = real_parts.prometheus([promserver.exporter_job({"x1": f"127.0.0.1:{exporter_port}"}),
                                      promserver.component_job(n.JOB_SCORER, [f"127.0.0.1:{scorer_server.port}"])])
        support.wait_for(lambda: len(promserver.instant(prom.url, "up")) == 2, 30, "first scrapes")
        start = datetime.now().timestamp()
        real_parts.exporter(real_kernel_csv, node="x1", speed=10, port=exporter_port, csv_out=own_csv,
                            env={"KSENSE_WARMUP_S": "30"})
        ticking.start()
        support.wait_for(
            lambda: len(promserver.instant(prom.url, "count_over_time(ksense_node_score[1m]) > 8"))
            and promserver.instant(prom.url, "ksense_friction"),
            40, "scores and frictions in Prometheus",
        )
        end = datetime.now().timestamp()
        done = run_cli("--prometheus-url", prom.url, "--node", "x1", "--start", f"{start:.3f}",
                       "--end", f"{end:.3f}", "--output-dir", str(tmp_path / "out"))
    finally:
        stop.set()
        scorer_server.shutdown()
    assert done.returncode == 0, done.stderr
    assert "export: chunk 1/1" in done.stderr

    with own_csv.open(newline="") as f:
        own = list(csv.DictReader(f))
    own_frictions = {r["Friction"] for r in own if r["Friction"]}
    with (tmp_path / "out" / "x1" / n.KERNEL_METRICS_CSV_NAME).open(newline="") as f:
        reader = csv.reader(f)
        assert tuple(next(reader)) == n.KERNEL_METRICS_COLUMNS
        rows = [dict(zip(n.KERNEL_METRICS_COLUMNS, r, strict=True)) for r in reader]
    assert len(rows) >= 8
    times = [r["Time"] for r in rows]
    assert times == sorted(times) and len(set(times)) == len(times)
    exported = [r for r in rows if r["Friction"]]
    assert exported and all(r["Friction"] in own_frictions for r in exported)
    assert {r["BaselineMode"] for r in rows} <= {"FROZEN", "CALIBRATING"}
    # a replay exporter has no kernel histograms: those columns are honestly empty
    assert all(r["SchedLat_Count"] == "" and r["SchedLat_P99_ms"] == "" for r in rows)

    with (tmp_path / "out" / "x1" / n.FUZZY_MONITOR_CSV_NAME).open(newline="") as f:
        monitor = list(csv.DictReader(f))
    assert len(monitor) >= 8
    assert any(r["PSI"] for r in monitor)  # the replay exporter exports the recording's PSI
    for r in monitor:
        assert r["Node"] == "x1" and r["Decision"] in ("allow", "deny")
        score = float(r["Score"])
        assert r["Level"] == ("high" if score >= 70 else "medium" if score >= 45 else "low")
        assert r["PSI"] == "" or 0.0 <= float(r["PSI"]) <= 100.0
        if r["Reason"]:
            assert r["Reason"] == "missing metrics: friction, energy" and math.isclose(score, 100.0)


def _fake_prometheus(series):
    """A handler answering range queries over `series` (labels, value(t), timestamp(t)) the way
    Prometheus would, for the forms export uses: `max|min by (node) (F{..})`,
    `max by (node) (timestamp(F{..}))` and `F{..} or label_replace(timestamp(F{..}), "ksense_ts", ...)`."""

    def matching(expr):
        family, _, matchers = expr.partition("{")
        wanted = dict(re.findall(r'(\w+)="([^"]*)"', matchers))
        return [s for s in series if s[0]["__name__"] == family
                and all(s[0].get(k) == v for k, v in wanted.items() if k != "node")]

    def handler(path, params):
        lo, hi, step = (float(params[k][0]) for k in ("start", "end", "step"))
        steps = [lo + k * step for k in range(round((hi - lo) / step) + 1)]
        query = params["query"][0]
        result = []
        if m := re.fullmatch(r"(max|min) by \(node\) \((timestamp\()?(.*?)\)?\)", query):
            agg, stamp, expr = m.group(1), m.group(2), m.group(3)
            picked = matching(expr)
            if picked:
                pick = max if agg == "max" else min
                values = [[t, repr(pick((ts if stamp else v)(t) for _, v, ts in picked))] for t in steps]
                result = [{"metric": {"node": picked[0][0]["node"]}, "values": values}]
        elif m := re.fullmatch(r'(.*?) or label_replace\(timestamp\(\1\), "ksense_ts", "1", "", ""\)', query):
            for labels, v, ts in matching(m.group(1)):
                result.append({"metric": labels, "values": [[t, repr(v(t))] for t in steps]})
                plain = {k: x for k, x in labels.items() if k != "__name__"}
                result.append({"metric": {**plain, "ksense_ts": "1"}, "values": [[t, repr(ts(t))] for t in steps]})
        else:
            raise AssertionError(f"unexpected query {query}")
        return Reply(body=json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}))

    return handler


def test_duplicate_series_export_the_newest_series_whole(fake_server, tmp_path):
    """Two series of node a (a Prometheus restart without staleness markers): the stale one has
    larger values and an old timestamp. Each row takes every value, counters included, from the
    node's newest series, never a max over both."""

    def fresh(value):
        return lambda t: value(t) if callable(value) else value

    def series(job, family, value, ts):
        return {"__name__": family, "node": "a", "job": job, "instance": f"{job}:9100"}, fresh(value), ts

    new_ts, old_ts = (lambda t: t - 0.5), (lambda t: 900.0)
    rq = n.RUNQUEUE_LATENCY.name
    duplicated = {
        n.BASELINE_FROZEN.name: (1.0, 1.0),
        n.FRICTION.name: (2.0, 9.0),
        n.FRICTION_DIRECTION.name: (-1.0, 1.0),
        n.CPU_UTILIZATION.name: (0.25, 0.99),
        f"{rq}_sum": (lambda t: (t - 1000) * 0.1, 500.0),
        f"{rq}_count": (lambda t: (t - 1000) * 100, 90_000.0),
        n.RUNQUEUE_LATENCY_DROPPED.name: (lambda t: (t - 1000) * 2, 70.0),
    }
    data = []
    for family, (new, old) in duplicated.items():
        data += [series("new", family, new, new_ts), series("old", family, old, old_ts)]
    data += [
        ({"__name__": n.NODE_SCORE.name, "node": "a", "job": "scorer"}, fresh(20.0), lambda t: t - 0.2),
        ({"__name__": n.NODE_ADMISSION_ALLOWED.name, "node": "a", "job": "scorer"}, fresh(1.0), lambda t: t - 0.2),
    ]
    fake_server.handler = _fake_prometheus(data)
    client = export.PromClient(fake_server.url, timeout_s=5)
    cursors = export.export(client, ["a"], 1000.0, 1003.0, 1.0, tmp_path, progress=lambda line: None)
    assert cursors["a"].kernel_rows == 4 and cursors["a"].monitor_rows == 4

    with (tmp_path / "a" / n.KERNEL_METRICS_CSV_NAME).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["Time"] for r in rows] == [format_time(datetime.fromtimestamp(t - 0.5)) for t in range(1000, 1004)]
    for r in rows:
        assert (r["Friction"], r["Direction"], r["CPUUtil"]) == ("2.000000", "-1.0", "25.000000")
    assert rows[0]["SchedLat_Count"] == ""  # the first row has no previous one
    for r in rows[1:]:
        assert (r["SchedLat_Total_ms"], r["SchedLat_Count"], r["SchedLat_Dropped"]) == ("100.00", "100", "2")
    with (tmp_path / "a" / n.FUZZY_MONITOR_CSV_NAME).open(newline="") as f:
        monitor = list(csv.DictReader(f))
    assert [(r["FrictionSigned"], r["CPUUtil"], r["Score"], r["Decision"]) for r in monitor] == [
        ("-2.000000", "25.000000", "20.000", "allow")
    ] * 4

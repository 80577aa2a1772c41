"""End to end with real parts: a replaying exporter -> a real Prometheus (1 s scrape) -> the
scorer's Evaluator on PrometheusSource, checked against an Evaluator on LocalSource scraping
the same exporter, against `python -m scorer.replay` over the exporter's own CSV, and through
the failures (exporter gone, Prometheus gone).

How the comparison is made fair. The two paths see the exporter at different moments (the
local source now, Prometheus at its last scrape), so two free-running evaluators would score
different samples and drift apart in their hysteresis. Instead the recording is laid out so
that every compared sample stays put for ~2 s of wall time: the exporter replays the first
110 rows of kernel_metrics_real.csv 1 s apart at --speed 50 (warm-up 30 s of recorded time,
frozen after 0.6 s of wall time; Direction after 60 more rows), then 14 later rows of the same
recording 100 recorded seconds apart (2 s each at speed 50). For each held row the test reads
the local source, waits until Prometheus serves the same sample (same friction, direction,
energy and CPU: values travel as exact float text both ways), and then ticks both evaluators
once with what their own source returned. Scores, levels, decisions and counters must be
equal, tick by tick, including the decision flips of that stretch (rows 2320-2333 cross
medium-high into deny and back to allow).

PSI travels as ksense_pressure_worst_ratio, which the replay source exports from the
recording's PSI column, so all three paths see the same four inputs.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.core.csvrow import format_time, parse_time
from common.names import INPUTS, JOB_EXPORTER, KERNEL_METRICS_COLUMNS
from scorer.core.decision import DecisionParams
from scorer.core.model import Inputs
from scorer.evaluator import Evaluator
from scorer.rulefile import load_rules
from scorer.sources.local import LocalSource
from scorer.sources.prometheus import PrometheusSource
from tests import support
from tests.scorer import promserver
from tests.support import REPO

pytestmark = pytest.mark.real

NODE = "e2e-node"
SPEED = 50.0
WARMUP_S = 30
FAST_ROWS = range(0, 110)
HELD_ROWS = range(2320, 2334)
HELD_GAP_S = 100.0  # recorded seconds between held rows: 2 s of wall time at SPEED
LONG_WIN_S = 10.0


def write_recording(real_csv: Path, out: Path) -> None:
    """The fast warm-up rows then the held rows, re-timed as described in the module docstring."""
    with real_csv.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    t = parse_time(rows[0][0])
    chosen = []
    for i, index in enumerate([*FAST_ROWS, *HELD_ROWS]):
        row = list(rows[index])
        if i > 0:
            t += timedelta(seconds=1.0 if index in FAST_ROWS else HELD_GAP_S)
        row[0] = format_time(t)
        chosen.append(row)
    with out.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(KERNEL_METRICS_COLUMNS)
        writer.writerows(chosen)


class Pinned:
    """The evaluator's source: returns the Inputs the test pinned (fetched from the real source
    beforehand), or, with nothing pinned, fetches from the real source itself."""

    def __init__(self, source):
        self.source = source
        self.name = source.name
        self.pinned: Inputs | None = None

    def fetch(self, now: datetime) -> Inputs:
        if self.pinned is None:
            return self.source.fetch(now)
        got, self.pinned = self.pinned, None
        return got


def sample_key(inputs: Inputs):
    node = inputs.nodes.get(NODE)
    if node is None or node.missing[:2] == ("friction", "energy"):
        return None
    return node.friction, node.direction, node.energy, node.cpu_pct


def now() -> datetime:
    return datetime.now(UTC)


def test_scores_and_decisions_agree_across_sources_and_with_replay(real_parts, need_prometheus, real_kernel_csv,
                                                                     tmp_path):
    recording = tmp_path / "recording.csv"
    write_recording(real_kernel_csv, recording)
    exporter_csv = tmp_path / "exporter_kernel_metrics.csv"
    port = support.free_port()

    # Prometheus first, so that it scrapes from the exporter's first second on.
    prom = real_parts.prometheus([promserver.exporter_job({NODE: f"127.0.0.1:{port}"})])
    support.wait_for(lambda: promserver.instant(prom.url, f'up{{job="{JOB_EXPORTER}"}}'), 30,
                        "Prometheus' first scrape")
    exporter = real_parts.exporter(
        recording, node=NODE, speed=SPEED, port=port, csv_out=exporter_csv, env={"KSENSE_WARMUP_S": str(WARMUP_S)}
    )

    rb, params = load_rules(), DecisionParams()
    local = LocalSource(f"{exporter.url}/metrics", timeout_s=1.0)
    prom_source = PrometheusSource(prom.url, long_win_s=LONG_WIN_S, timeout_s=2.0)
    via_local, via_prom = Pinned(local), Pinned(prom_source)
    local_ev = Evaluator(via_local, rb, params)
    prom_ev = Evaluator(via_prom, rb, params)

    compared: list[tuple[Inputs, object]] = []
    last_key = None
    deadline = time.monotonic() + 60
    while exporter.alive() and time.monotonic() < deadline:
        local_in = local.fetch(now())
        key = sample_key(local_in)
        # Only held rows are compared: a new sample, with Direction (Fcal) already calibrated.
        if key is None or key == last_key or math.isnan(key[1]):
            time.sleep(0.05)
            continue
        last_key = key
        prom_in = None
        until = time.monotonic() + 1.8
        while time.monotonic() < until:
            candidate = prom_source.fetch(now())
            if sample_key(candidate) == key:
                prom_in = candidate
                break
            time.sleep(0.05)
        if prom_in is None or sample_key(local.fetch(now())) != key:
            continue  # the row moved on before Prometheus caught up: neither evaluator sees it
        via_local.pinned, via_prom.pinned = local_in, prom_in
        a, b = local_ev.tick().reports[NODE], prom_ev.tick().reports[NODE]
        assert (b.score, b.level, b.decision, b.bad_count, b.good_count, b.missing) == (
            a.score, a.level, a.decision, a.bad_count, a.good_count, a.missing
        ), f"local {a}\nprometheus {b}"
        assert b.missing == ()  # all four inputs travel through every path
        compared.append((prom_in, b))

    print(f"compared={len(compared)} decisions={[r.decision for _, r in compared]}")
    assert len(compared) >= 10, f"compared only {len(compared)} held rows:\n{exporter.log_text()[-2000:]}"
    decisions = [report.decision for _, report in compared]
    assert "deny" in decisions and "allow" in decisions[decisions.index("deny"):], decisions
    assert local_ev.stats().decision_changes == prom_ev.stats().decision_changes

    # The range-query history sees the same samples the live queries did.
    history = prom_source.history(now() - timedelta(seconds=20), now(), 1.0)
    seen = {sample_key(h) for h in history}
    assert any(sample_key(inputs) in seen for inputs, _ in compared)

    # The replay tool over the exporter's own CSV scores the same rows alike (its inputs are
    # the CSV's 6-decimal values, hence the tolerance).
    replay_out = tmp_path / "replay.csv"
    done = subprocess.run(
        [sys.executable, "-m", "scorer.replay", str(exporter_csv), "--output", str(replay_out)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with replay_out.open(newline="") as f:
        by_friction = {(r["Friction"], r["Energy"]): r for r in csv.DictReader(f)}
    for inputs, report in compared:
        node = inputs.nodes[NODE]
        row = by_friction[(f"{node.friction:.6f}", f"{node.energy:.6f}")]
        assert float(row["Score"]) == pytest.approx(report.score, abs=0.01)
        assert float(row["PSI"]) == pytest.approx(node.psi_pct, abs=1e-6)

    # The exporter ended with its recording: Prometheus marks its series stale at the next
    # failed scrape, so the node's inputs turn missing (not the 5-minute lookback's old values).
    exporter.stop()
    via_prom.pinned = None
    report = support.wait_for(
        lambda: (r := prom_ev.tick().reports[NODE]).missing == INPUTS and r, LONG_WIN_S, "inputs missing"
    )
    assert report.decision == "deny" and report.reason.startswith("missing metrics: friction, energy (")
    assert all(why == "absent" or why.startswith("stale ") for why in report.inputs.why.values()), report

    # Prometheus gone: the known node stays, denied, and the reason names the failure.
    prom.stop()
    started = time.monotonic()
    results = prom_ev.tick()
    report = results.reports[NODE]
    assert time.monotonic() - started < LONG_WIN_S
    assert report.decision == "deny" and report.missing == INPUTS
    assert set(report.inputs.why.values()) == {"prometheus down"}
    assert report.reason == "missing metrics: friction, energy (prometheus down)"
    assert prom_ev.stats().source_errors[("prometheus", "unreachable")] == 1

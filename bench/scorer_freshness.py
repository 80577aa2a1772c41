"""How fast a step change in a node's kernel signals becomes a deny through Prometheus.

Goal: ≤ 5 s from the exporter publishing the step to the scorer's decision change, with a 1 s
scrape interval and a 1 s scorer tick.

Set-up (all real, on 127.0.0.1): a replaying exporter, a real Prometheus scraping it every
1 s, and two scorers ticking every 1 s in this process — one on PrometheusSource (the cluster
path), one on LocalSource scraping the exporter directly: the **floor**, the same tick and the
same controller without the Prometheus hop, measured in the same run. The recording is
synthetic and deterministic: 40 quiet rows 1 s apart replayed at --speed 10 with a 20 s
warm-up (the baseline freezes after ~2 s of wall time), then cycles of 9 quiet rows and 5
"step" rows (run-queue p99 0.05 -> 25 ms, avg 0.02 -> 6 ms, D-state 0.5 -> 12 ms, CPU 20 ->
97 %) 11.3 recorded seconds apart, i.e. one row per 1.13 wall seconds, so that successive steps
meet the 1 s scrape and tick at different phases. A step lands in the high band
(score ≥ 70), which denies on the first tick that sees it; the breakdown shows that.

Per step, from the moment a poller (every 10 ms) sees the step on the exporter's /metrics:
- scrape wait: until the Prometheus sample holding the step was scraped (its timestamp);
- tick wait: from that scrape until the scorer tick that first read the step began;
- query: that tick's fetch (its instant queries);
- hysteresis: from that tick to the tick whose decision changed (0 for a high-band step);
- total: to the end of the tick whose decision changed.
The local floor's total is measured the same way. Prints median and max per component, the
ratio of the Prometheus path to the floor, and the goal with PASS/MISS. Bounded to ~90 s
(`--quick`: 2 cycles, ~45 s). Exits non-zero only when the harness fails.
Run: .venv/bin/python -m bench.scorer_freshness [--quick]
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import requests

from bench._util import HarnessError, free_port, print_table
from bench.exporter_cost import ratio, spawn, stop, tail, verdict
from common.core.csvrow import format_time
from common.names import FRICTION, JOB_EXPORTER, KERNEL_METRICS_COLUMNS, NAMESPACE
from common.ticker import ticks
from scorer.core.decision import DecisionParams
from scorer.core.model import Inputs
from scorer.evaluator import Evaluator
from scorer.rulefile import load_rules
from scorer.sources.local import LocalSource
from scorer.sources.prometheus import PrometheusSource

GOAL_S = 5.0
NODE = "bench-node"
SPEED = 10.0
WARMUP_ROWS, QUIET_ROWS, STEP_ROWS = 40, 9, 5
#: Wall seconds per row after the warm-up: not a multiple of the 1 s scrape and tick, so each
#: step meets them at a different phase instead of the same one every time.
ROW_WALL_S = 1.13
STEP_FRICTION = 50.0  # quiet frictions are < 10, a step's are clamped at 150
PROMETHEUS = "/usr/bin/prometheus"


def recording(path: Path, cycles: int) -> None:
    """The synthetic kernel_metrics.csv of the module docstring."""
    rng = np.random.default_rng(7)
    t = datetime(2027, 1, 1, 12, 0, 0)
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(KERNEL_METRICS_COLUMNS)
        kinds = ["quiet"] * WARMUP_ROWS + (["quiet"] * QUIET_ROWS + ["step"] * STEP_ROWS) * cycles + ["quiet"] * 3
        for i, kind in enumerate(kinds):
            if i:
                t += timedelta(seconds=1.0 if i < WARMUP_ROWS else ROW_WALL_S * SPEED)
            step = kind == "step"
            p99 = (25.0 if step else 0.05) * (1 + 0.1 * rng.standard_normal())
            avg = (6.0 if step else 0.02) * (1 + 0.1 * rng.standard_normal())
            count = int(20000 + 500 * rng.standard_normal())
            ds_count = int(100 + 5 * rng.standard_normal())
            ds_total = ds_count * (12.0 if step else 0.5) * (1 + 0.1 * rng.standard_normal())
            si_count = int(600 + 20 * rng.standard_normal())
            si_total = si_count * 0.03 * (1 + 0.1 * rng.standard_normal())
            cpu = 97.0 if step else 20.0 + rng.standard_normal()
            w.writerow([
                format_time(t), f"{avg * count:.2f}", f"{avg:.4f}", f"{p99:.4f}", f"{p99:.4f}", f"{p99 * 2:.4f}",
                count, 0, f"{ds_total:.2f}", ds_count, f"{si_total:.2f}", si_count, f"{cpu:.6f}", "",
                "CALIBRATING", 0, "", "", "", "", 40, "0.000000", "1.000000",
            ])


@dataclass
class Tick:
    start: float  # wall time
    end: float
    fetch_s: float
    friction: float
    decision: str


@dataclass
class Timed:
    """Source wrapper that records each fetch's duration and the node's friction."""

    source: object
    last_fetch_s: float = 0.0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.source.name

    def fetch(self, now: datetime) -> Inputs:
        t0 = time.perf_counter()
        got = self.source.fetch(now)
        self.last_fetch_s = time.perf_counter() - t0
        return got


def tick_loop(ev: Evaluator, timed: Timed, log: list[Tick], stop_event: threading.Event) -> None:
    """Evaluator.run's schedule, with each tick recorded."""
    for _ in ticks(1.0, stop_event):
        start = time.time()
        report = ev.tick().reports.get(NODE)
        if report is not None:
            log.append(Tick(start, time.time(), timed.last_fetch_s, report.inputs.friction, report.decision))


def watch_exporter(url: str, seen: list[float], stop_event: threading.Event) -> None:
    """Wall times at which the exporter's friction crossed into a step (the reference moment)."""
    session, above = requests.Session(), False
    while not stop_event.is_set():
        try:
            text = session.get(url, timeout=1).text
        except requests.RequestException:
            stop_event.wait(0.01)
            continue
        now = time.time()
        value = next((float(line.split()[-1]) for line in text.splitlines()
                      if line.startswith(FRICTION.name + "{")), math.nan)
        if value > STEP_FRICTION and not above:
            seen.append(now)
        above = value > STEP_FRICTION if not math.isnan(value) else above
        stop_event.wait(0.01)


def prometheus(workdir: Path, target: str) -> tuple[object, str]:
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        # As deploy/ scrapes the exporter: job, namespace and node from the scrape (honor_labels
        # off), which PrometheusSource's default selector requires.
        f"scrape_configs:\n  - job_name: {JOB_EXPORTER}\n    honor_labels: false\n"
        f"    static_configs: [{{targets: ['{target}'], labels: {{namespace: {NAMESPACE}, node: {NODE}}}}}]\n"
        "    metric_relabel_configs: [{action: labeldrop, regex: exported_node}]\n"
    )
    proc = spawn([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], workdir / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    wait(lambda: _ok(f"{url}/-/ready"), 30, "prometheus ready", workdir / "prometheus.log")
    # the first scrape lands ~5 s after start: the exporter must not start its steps before
    wait(lambda: _vector(url, f'up{{job="{JOB_EXPORTER}"}}'), 30, "first scrape", workdir / "prometheus.log")
    return proc, url


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _vector(url: str, query: str) -> list:
    try:
        return requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()["data"]["result"]
    except (requests.RequestException, ValueError, KeyError):
        return []


def wait(predicate: Callable[[], object], deadline_s: float, what: str, log: Path) -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise HarnessError(f"timed out waiting for {what}:\n{tail(log)}")
        time.sleep(0.05)


def scrape_times(url: str, since: float) -> list[tuple[float, float]]:
    """(scrape time, friction) of every raw sample Prometheus stored since `since`."""
    window = math.ceil(time.time() - since) + 5
    result = _vector(url, f"{FRICTION.name}[{window}s]")
    return sorted((float(t), float(v)) for series in result for t, v in series["values"])


@dataclass
class StepResult:
    scrape_wait: float
    tick_wait: float
    query: float
    hysteresis: float
    total: float


def analyse(steps: list[float], log: list[Tick], samples: list[tuple[float, float]] | None) -> list[StepResult]:
    out = []
    for t_step in steps:
        before = [k for k in log if k.end <= t_step]
        if not before or before[-1].decision != "allow":
            continue  # still denied from the previous step: no flip to time
        first = next((k for k in log if k.start >= t_step - 1.0 and k.friction > STEP_FRICTION), None)
        flip = next((k for k in log if k.end > t_step and k.decision == "deny"), None)
        if first is None or flip is None:
            continue
        scraped = t_step
        if samples is not None:
            scraped = next((ts for ts, v in samples if ts >= t_step - 1.0 and v > STEP_FRICTION), t_step)
        out.append(StepResult(
            scrape_wait=max(0.0, scraped - t_step),
            tick_wait=max(0.0, first.start - max(scraped, t_step)),
            query=first.fetch_s,
            hysteresis=max(0.0, flip.end - first.end),
            total=flip.end - t_step,
        ))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scorer_freshness", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 step cycles instead of 4")
    args = parser.parse_args(argv)
    # The scorers keep ticking after the replay ends; their "exporter gone" lines are noise here.
    logging.getLogger("scorer").setLevel(logging.ERROR)
    cycles = 2 if args.quick else 4
    with tempfile.TemporaryDirectory(prefix="ksense-freshness-") as tmp:
        work = Path(tmp)
        rec = work / "step.csv"
        recording(rec, cycles)
        port = free_port()
        prom_proc, prom_url = prometheus(work, f"127.0.0.1:{port}")
        exporter_log = work / "exporter.log"
        exporter = None
        stop_event = threading.Event()
        try:
            exporter = spawn([sys.executable, "-m", "exporter", "--source", f"replay:{rec}", "--speed", f"{SPEED:g}",
                              "--host", "127.0.0.1", "--port", str(port), "--node", NODE, "--no-csv",
                              "--warmup", "20"], exporter_log)
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            wait(lambda: _ok(f"http://127.0.0.1:{port}/readyz"), 30, "exporter ready", exporter_log)
            rb, params = load_rules(), DecisionParams()
            paths = {}
            for label, source in (("prometheus", PrometheusSource(prom_url, long_win_s=60.0)),
                                  ("local (floor)", LocalSource(metrics_url))):
                timed = Timed(source)
                paths[label] = (Evaluator(timed, rb, params), timed, [])
            steps: list[float] = []
            threads = [threading.Thread(target=watch_exporter, args=(metrics_url, steps, stop_event), daemon=True)]
            threads += [threading.Thread(target=tick_loop, args=(ev, timed, log, stop_event), daemon=True)
                        for ev, timed, log in paths.values()]
            started = time.time()
            for t in threads:
                t.start()
            exporter.wait(timeout=WARMUP_ROWS / SPEED + cycles * (QUIET_ROWS + STEP_ROWS) * ROW_WALL_S + 30)
            time.sleep(1.5)  # let the last ticks land
            stop_event.set()
            for t in threads:
                t.join(timeout=5)
            samples = scrape_times(prom_url, started)
        finally:
            stop_event.set()
            if exporter is not None:
                stop(exporter)
            stop(prom_proc)
    results = {
        label: analyse(steps, log, samples if label == "prometheus" else None)
        for label, (_, _, log) in paths.items()
    }
    report(results, len(steps))
    return 0


def _fmt(values: list[float]) -> tuple[str, str]:
    if not values:
        return "-", "-"
    return f"{statistics.median(values):.3f}", f"{max(values):.3f}"


def report(results: dict[str, list[StepResult]], steps_seen: int) -> None:
    prom, floor = results["prometheus"], results["local (floor)"]
    print(f"scorer freshness: step change -> decision change, 1 s scrape, 1 s tick "
          f"({steps_seen} steps seen, timed: prometheus {len(prom)}, local {len(floor)})")
    rows = []
    for name in ("scrape_wait", "tick_wait", "query", "hysteresis", "total"):
        p_med, p_max = _fmt([getattr(r, name) for r in prom])
        f_med, f_max = _fmt([getattr(r, name) for r in floor])
        rows.append([name + " (s)", p_med, p_max, f_med, f_max])
    print_table(["component", "prom median", "prom max", "floor median", "floor max"], rows)
    if prom and floor:
        p_total = statistics.median(r.total for r in prom)
        f_total = statistics.median(r.total for r in floor)
        worst = max(r.total for r in prom)
        print(f"total median {p_total:.3f} s = {ratio(p_total, f_total)} × floor ({f_total:.3f} s); "
              f"worst {worst:.3f} s; goal ≤ {GOAL_S:g} s: {verdict(worst, GOAL_S)}")
    else:
        print("not enough steps timed for a verdict")


if __name__ == "__main__":
    sys.exit(main())

"""Scheduler binds/s and per-pod decision latency with the scores read from a real Prometheus.

bench/scheduler_binds measures the scheduler with a static all-allow score source, so the score
backend is not in its figures. This is the same bind run (bench.scheduler_binds.ksense: fake API
server over HTTP, official client, a full scheduler instance, rate limits off) twice in one
process, on the same N-node cluster:

1. **static**: the all-allow `StaticScores` — the baseline;
2. **prometheus**: the scheduler's real `PrometheusScores` over Debian's Prometheus, which scrapes
   (1 s) the scorer's real exposition (`ScorerCollector`, job `ksense-scorer`, namespace
   `ksense`) for the N nodes, 5 % of them denied. Every cycle that attempts pods makes its one
   instant query over all nodes, as in production.

Per run: pods/s from the first pod created to the last bound; per-pod decision time (`decide`
for one pod over the N nodes, what ksense_scheduler_attempt_duration_seconds observes) p50/p99
from the raw samples; per-cycle score fetch p50/p99; and pods bound to a denied node (must be 0).
Issue 14's goal: decision p99 ≤ 20 ms reading scores from the database.

Not in CI (Prometheus start-up and 2 × P pods take ≈ 30 s at 1,000 nodes). Exits 0 when a goal
is missed, non-zero only when the harness fails.
Run: .venv/bin/python -m bench.scheduler_binds_db [--nodes 1000 --pods 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import generate_latest

from bench import scheduler_binds
from bench._util import HarnessError, run_main
from bench.fleet import PathServer, pct, scorer_scrape_job, scrape_config, start_prometheus
from common import names as n
from common.core.durations import DurationHistogram
from common.metrics import make_registry
from scheduler.scores import PrometheusScores, Scores, ScoreSource
from scorer.core.model import NodeInputs, NodeReport, Results
from scorer.evaluator import EvaluatorStats
from scorer.metrics import ScorerCollector

GOAL_DECIDE_P99_MS = 20.0
DENIED_SHARE = 0.05
SCRAPE_S = 1.0
SCRAPE_PATH = "/scorer/metrics"


class FixedEvaluator:
    """The scorer's evaluator as its collector sees it, holding one fixed tick: node i allowed
    with score i % 50, except every 1/DENIED_SHARE-th node, denied with score 85."""

    def __init__(self, nodes: Sequence[str]):
        now = datetime.now(UTC)
        step = round(1 / DENIED_SHARE)
        self.denied = frozenset(name for i, name in enumerate(nodes) if i % step == 0)
        reports = {}
        for i, name in enumerate(nodes):
            deny = name in self.denied
            reports[name] = NodeReport(
                node=name, time=now, decision=n.DECISION_DENY if deny else n.DECISION_ALLOW,
                score=85.0 if deny else float(i % 50), level="high" if deny else "low", medium_band=None,
                reason="bench" if deny else None, inputs=NodeInputs(name), missing=(), bad_count=0, good_count=0)
        self._results = Results(time=now, source="bench", reports=reports)
        self._stats = EvaluatorStats(decision_changes={}, evaluation_duration=DurationHistogram((1.0,)).snapshot(),
                                     source_errors={}, last_success=time.time())

    def latest(self) -> Results:
        return self._results

    def stale(self) -> bool:
        return False

    def stats(self) -> EvaluatorStats:
        return self._stats


@dataclass
class Timed:
    """A score source whose fetches are timed."""

    inner: ScoreSource
    fetch_ms: list[float] = field(default_factory=list)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.inner.name

    def fetch(self) -> Scores:
        t0 = time.perf_counter()
        try:
            return self.inner.fetch()
        finally:
            self.fetch_ms.append((time.perf_counter() - t0) * 1e3)


@dataclass
class Run:
    label: str
    pods_per_s: float
    bound: int
    decide_ms: list[float]
    fetch_ms: list[float]
    on_denied: int


def measure(label: str, nodes: list[str], pods: int, source: ScoreSource, denied: frozenset[str]) -> Run:
    """bench.scheduler_binds.ksense with `source`, the per-pod decision times kept raw."""
    timed = Timed(source)
    decide_s: list[float] = []
    rate, _, bound, placed = scheduler_binds.ksense(nodes, pods, scores=timed, on_attempt=decide_s.append)
    on_denied = sum(1 for node in placed if node in denied)
    return Run(label, rate, bound, [s * 1e3 for s in decide_s], timed.fetch_ms, on_denied)


def wait_for_scores(source: PrometheusScores, nodes: Sequence[str], deadline_s: float = 60.0) -> Scores:
    end = time.monotonic() + deadline_s
    while True:
        got = source.fetch()
        if len(got.records) == len(nodes) and all(r.fresh for r in got.records.values()):
            return got
        if time.monotonic() > end:
            raise HarnessError(f"Prometheus holds {len(got.records)}/{len(nodes)} fresh nodes after "
                               f"{deadline_s:g}s ({got.error})")
        time.sleep(0.2)


def _row(r: Run) -> str:
    return (f"{r.label:<11} {r.pods_per_s:8.1f} {r.bound:>6}  {pct(r.decide_ms, 50):7.2f} {pct(r.decide_ms, 99):7.2f}"
            f"  {len(r.fetch_ms):>6} {pct(r.fetch_ms, 50):8.1f} {pct(r.fetch_ms, 99):8.1f}  {r.on_denied:>9}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scheduler_binds_db", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods", type=int, default=2000)
    args = p.parse_args(argv)
    nodes = [f"node-{i:05d}" for i in range(args.nodes)]
    evaluator = FixedEvaluator(nodes)
    body = generate_latest(make_registry(ScorerCollector(evaluator), process_metrics=False))  # never changes
    endpoint = PathServer({SCRAPE_PATH: lambda: body}, name="scorer-endpoint")
    endpoint.start()
    with tempfile.TemporaryDirectory(prefix="ksense-binds-db-") as tmp:
        prom = start_prometheus(Path(tmp) / "prometheus",
                                scrape_config([scorer_scrape_job(endpoint.port, SCRAPE_PATH)], SCRAPE_S),
                                receiver=False)
        try:
            source = PrometheusScores(prom.url, timeout_s=30.0)
            got = wait_for_scores(source, nodes)
            denied = sum(1 for r in got.records.values() if not r.allowed)
            print(f"cluster: {args.nodes} nodes ({denied} denied in Prometheus), {args.pods} pods per run; "
                  "fake API server over HTTP, official client, rate limits off")
            runs = [measure("static", nodes, args.pods, scheduler_binds.StaticScores(nodes), frozenset()),
                    measure("prometheus", nodes, args.pods, source, evaluator.denied)]
        finally:
            prom.stop()
            endpoint.stop()
    print(f"{'scores':<11} {'pods/s':>8} {'bound':>6}  {'decide p50/p99 ms':>15}  {'cycles':>6} "
          f"{'fetch p50/p99 ms':>17}  {'on denied':>9}")
    for r in runs:
        print(_row(r))
    static, db = runs
    print(f"ratio prometheus / static: pods/s {db.pods_per_s / static.pods_per_s:.2f}, decide p99 "
          f"{pct(db.decide_ms, 99) / pct(static.decide_ms, 99):.2f}")
    ok = pct(db.decide_ms, 99) <= GOAL_DECIDE_P99_MS and db.on_denied == 0 and db.bound == args.pods
    print(f"goal: decision p99 ≤ {GOAL_DECIDE_P99_MS:g} ms reading scores from the database, no pod on a denied "
          f"node: {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    run_main("bench.scheduler_binds_db", lambda: main(sys.argv[1:]))


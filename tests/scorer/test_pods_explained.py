"""A denied node's explanation names its top victim, aggressor and IO aggressor pods, through a
real Prometheus scraping an exposition with the exporter's per-pod families (1 s scrape, the
deploy/ scrape identity): the scorer's source asks `topk by (node)` of the pods' wait, CPU and
D-state rates, the core appends them to the deny's reason, which /score's report and
fuzzy_monitor.csv carry. The same Prometheus scrapes the scorer's own /metrics (the real
ScorerCollector), so the scheduler's default score source (PrometheusScores) names the same
pods from `ksense_node_top_pod`.

The exposition is served here, from counters that grow at known rates with wall time, so the
test knows who must be named: on node `hot`, shop/checkout waits 0.4 s/s, batch/nightly uses
0.9 CPU-s/s and backup/restic spends 0.7 s/s in D-state; a pod known by UID only and the `other`
sum must not be picked over them; node `calm` (low inputs, same pods) is allowed and names nobody.
"""

from __future__ import annotations

import csv
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

import pytest

from common import names as n
from common.csvfile import CsvSink
from common.metrics import MetricsServer, make_registry
from scheduler.core.filters import ScoreRecord
from scheduler.scores import PrometheusScores
from scorer.core.decision import DecisionParams
from scorer.core.reports import report_json
from scorer.evaluator import Evaluator, monitor_sink
from scorer.metrics import ScorerCollector
from scorer.rulefile import load_rules
from scorer.sources.prometheus import PrometheusSource
from tests.scorer import promserver
from tests.support import wait_for

pytestmark = pytest.mark.real

# node -> its inputs as exported (ratios): `hot` scores ~88 (deny), `calm` low (allow).
NODES = {
    "hot": {n.FRICTION: 3.0, n.FRICTION_DIRECTION: -1.0, n.ENERGY: 0.5, n.CPU_UTILIZATION: 1.0, n.PRESSURE_WORST: 0.9},
    "calm": {n.FRICTION: 0.2, n.FRICTION_DIRECTION: 1.0, n.ENERGY: 0.0, n.CPU_UTILIZATION: 0.05,
             n.PRESSURE_WORST: 0.0},
}
# (namespace, name, uid) -> (wait s/s, cpu s/s, D-state s/s)
PODS = {
    ("shop", "checkout", "11111111-1111-1111-1111-111111111111"): (0.4, 0.05, 0.05),
    ("batch", "nightly", "22222222-2222-2222-2222-222222222222"): (0.01, 0.9, 0.0),
    ("backup", "restic", "44444444-4444-4444-4444-444444444444"): (0.02, 0.1, 0.7),
    ("", "", "33333333-3333-3333-3333-333333333333"): (0.2, 0.3, 0.3),  # known by UID only
    ("", "", n.POD_UID_OTHER): (5.0, 5.0, 5.0),  # the sum of the pods outside the top-K: nobody
}


def exposition(node: str, elapsed: float) -> str:
    lines = [f"{family.name} {value!r}" for family, value in NODES[node].items()]
    lines += [f"{n.BASELINE_FROZEN.name} 1", f"{n.BASELINE_WARMUP_REMAINING.name} 0"]
    for (ns, name, uid), (wait, cpu, dstate) in PODS.items():
        labels = f'{n.LABEL_POD_NAMESPACE}="{ns}",{n.LABEL_POD_NAME}="{name}",{n.LABEL_POD_UID}="{uid}"'
        lines.append(f"{n.POD_RUNQUEUE_WAIT.name}_sum{{{labels}}} {wait * elapsed!r}")
        lines.append(f"{n.POD_RUNQUEUE_WAIT.name}_count{{{labels}}} {int(1000 * elapsed)}")
        lines.append(f"{n.POD_CPU.name}{{{labels}}} {cpu * elapsed!r}")
        lines.append(f"{n.POD_DSTATE.name}{{{labels}}} {dstate * elapsed!r}")
    return "\n".join(lines) + "\n"


class _Exporter(BaseHTTPRequestHandler):
    node = ""
    started = 0.0

    def do_GET(self):
        body = exposition(self.node, time.monotonic() - self.started).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def exporters():
    servers = {}
    for node in NODES:
        handler = type(f"Exporter_{node}", (_Exporter,), {"node": node, "started": time.monotonic()})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[node] = server
    yield {node: f"127.0.0.1:{s.server_address[1]}" for node, s in servers.items()}
    for s in servers.values():
        s.shutdown()
        s.server_close()


class _NotYet:
    """The evaluator's source until the test knows Prometheus' URL (which needs the scorer's port)."""

    name = n.SCORER_SOURCE_PROMETHEUS

    def fetch(self, now):
        raise AssertionError("the test sets the source before ticking")


class Scorer(NamedTuple):
    evaluator: Evaluator
    metrics_port: int
    monitor_csv: CsvSink


@pytest.fixture
def scorer(tmp_path):
    """An evaluator and its /metrics (the real ScorerCollector over the real MetricsServer), not
    ticking: the test ticks it."""
    sink = monitor_sink(tmp_path / n.FUZZY_MONITOR_CSV_NAME)
    evaluator = Evaluator(_NotYet(), load_rules(), DecisionParams(), monitor_csv=sink)
    server = MetricsServer(make_registry(ScorerCollector(evaluator), process_metrics=False), evaluator.ready,
                           host="127.0.0.1", port=0)
    server.start()
    yield Scorer(evaluator, server.port, sink)
    server.shutdown()
    sink.close()


@pytest.fixture
def prometheus(tmp_path, exporters, scorer):
    if promserver.prometheus_binary() is None:
        pytest.skip("needs the prometheus binary")
    server = promserver.start_prometheus(tmp_path / "prom", [
        promserver.exporter_job(exporters),
        promserver.component_job(n.JOB_SCORER, [f"127.0.0.1:{scorer.metrics_port}"]),
    ])
    yield server
    server.stop()


def test_a_denied_nodes_reason_names_its_top_victim_and_aggressors(prometheus, scorer, tmp_path):
    evaluator = scorer.evaluator
    evaluator.source = PrometheusSource(prometheus.url)
    csv_path = tmp_path / n.FUZZY_MONITOR_CSV_NAME

    def named():
        results = evaluator.tick()
        hot = results.reports.get("hot")
        return results if hot is not None and len(hot.inputs.top_pods) == len(n.POD_ROLES) else None

    # Two scrapes inside the rate window: a couple of seconds at the 1 s scrape interval.
    results = wait_for(named, 20, "the top pods of node hot")
    hot, calm = results.reports["hot"], results.reports["calm"]
    assert hot.decision == n.DECISION_DENY and calm.decision == n.DECISION_ALLOW and calm.reason is None
    assert hot.reason.startswith("score ")
    # (The rates themselves are low at first: rate() over a 1 m window holding a few seconds
    # of samples. Who is named depends only on their order.)
    assert "; victim shop/checkout (wait " in hot.reason and ", aggressor batch/nightly (cpu " in hot.reason
    assert ", io aggressor backup/restic (D-state " in hot.reason
    body = report_json(hot)
    assert body["victim"]["uid"] == "11111111-1111-1111-1111-111111111111" and body["victim"]["rate"] > 0
    assert (body["aggressor"]["namespace"], body["aggressor"]["name"]) == ("batch", "nightly")
    assert (body["io_aggressor"]["name"], body["io_aggressor"]["uid"]) == (
        "restic", "44444444-4444-4444-4444-444444444444")
    scorer.monitor_csv.close()  # flushed
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Node"] == "hot"]
    assert rows and "victim shop/checkout" in rows[-1]["Reason"] and "aggressor batch/nightly" in rows[-1]["Reason"]

    # The scheduler's default source reads the same names from the scorer's series in Prometheus.
    def scheduler_view():
        got = PrometheusScores(prometheus.url).fetch().records
        return got if got.get("hot") and got["hot"].victim and got.get("calm") else None

    records = wait_for(scheduler_view, 20, "the scorer's top pods of node hot in Prometheus")
    assert records["hot"] == ScoreRecord(False, pytest.approx(hot.score, abs=1e-3), True, victim="shop/checkout",
                                         aggressor="batch/nightly", io_aggressor="backup/restic")
    assert records["calm"].allowed and records["calm"].top_pods == ()
    top = promserver.instant(prometheus.url, n.NODE_TOP_POD.name)
    assert {(s["metric"][n.LABEL_NODE], s["metric"][n.LABEL_ROLE]) for s in top} == {
        ("hot", role) for role in n.POD_ROLES}

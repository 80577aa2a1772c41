"""A denied node's explanation names its top victim and top aggressor pods, through a real
Prometheus scraping an exposition with the exporter's per-pod families (1 s scrape, the deploy/
scrape identity): the scorer's source asks `topk by (node)` of the pods' wait and CPU rates, the
core appends them to the deny's reason, which /score's report and fuzzy_monitor.csv carry.

The exposition is served here, from counters that grow at known rates with wall time, so the
test knows who must be named: on node `hot`, shop/checkout waits 0.4 s/s and batch/nightly uses
0.9 CPU-s/s; a pod known by UID only and the `other` sum must not be picked over them; node
`calm` (low inputs, same pods) is allowed and names nobody.
"""

from __future__ import annotations

import csv
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common import names as n
from scorer.core.decision import DecisionParams
from scorer.core.reports import report_json
from scorer.evaluator import Evaluator, monitor_sink
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
# (namespace, name, uid) -> (wait s/s, cpu s/s)
PODS = {
    ("shop", "checkout", "11111111-1111-1111-1111-111111111111"): (0.4, 0.05),
    ("batch", "nightly", "22222222-2222-2222-2222-222222222222"): (0.01, 0.9),
    ("", "", "33333333-3333-3333-3333-333333333333"): (0.2, 0.3),  # known by UID only
    ("", "", n.POD_UID_OTHER): (5.0, 5.0),  # the sum of the pods outside the top-K: nobody
}


def exposition(node: str, elapsed: float) -> str:
    lines = [f"{family.name} {value!r}" for family, value in NODES[node].items()]
    lines += [f"{n.BASELINE_FROZEN.name} 1", f"{n.BASELINE_WARMUP_REMAINING.name} 0"]
    for (ns, name, uid), (wait, cpu) in PODS.items():
        labels = f'{n.LABEL_POD_NAMESPACE}="{ns}",{n.LABEL_POD_NAME}="{name}",{n.LABEL_POD_UID}="{uid}"'
        lines.append(f"{n.POD_RUNQUEUE_WAIT.name}_sum{{{labels}}} {wait * elapsed!r}")
        lines.append(f"{n.POD_RUNQUEUE_WAIT.name}_count{{{labels}}} {int(1000 * elapsed)}")
        lines.append(f"{n.POD_CPU.name}{{{labels}}} {cpu * elapsed!r}")
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


@pytest.fixture
def prometheus(tmp_path, exporters):
    if promserver.prometheus_binary() is None:
        pytest.skip("needs the prometheus binary")
    server = promserver.start_prometheus(tmp_path / "prom", [promserver.exporter_job(exporters)])
    yield server
    server.stop()


def test_a_denied_nodes_reason_names_its_top_victim_and_aggressor(prometheus, tmp_path):
    source = PrometheusSource(prometheus.url)
    csv_path = tmp_path / n.FUZZY_MONITOR_CSV_NAME
    sink = monitor_sink(csv_path)
    evaluator = Evaluator(source, load_rules(), DecisionParams(), monitor_csv=sink)

    def named():
        results = evaluator.tick()
        hot = results.reports.get("hot")
        return results if hot is not None and hot.inputs.victim and hot.inputs.aggressor else None

    # Two scrapes inside the rate window: a couple of seconds at the 1 s scrape interval.
    try:
        results = wait_for(named, 20, "the top pods of node hot")
    finally:
        sink.close()
    hot, calm = results.reports["hot"], results.reports["calm"]
    assert hot.decision == n.DECISION_DENY and calm.decision == n.DECISION_ALLOW and calm.reason is None
    assert hot.reason.startswith("score ")
    # (The rates themselves are low at first: rate() over a 1 m window holding a few seconds
    # of samples. Who is named depends only on their order.)
    assert "; victim shop/checkout (wait " in hot.reason and ", aggressor batch/nightly (cpu " in hot.reason
    body = report_json(hot)
    assert body["victim"]["uid"] == "11111111-1111-1111-1111-111111111111" and body["victim"]["rate"] > 0
    assert (body["aggressor"]["namespace"], body["aggressor"]["name"]) == ("batch", "nightly")
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Node"] == "hot"]
    assert rows and "victim shop/checkout" in rows[-1]["Reason"] and "aggressor batch/nightly" in rows[-1]["Reason"]

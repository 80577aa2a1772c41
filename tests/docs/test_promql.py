"""Every query of the PromQL cookbook (docs/promql.md) parses and returns data from a real
Prometheus scraping what a cluster would have: a replaying exporter (a frozen baseline,
friction, energy), a procfs exporter (a node denied for want of p99), an eBPF exporter on this
kernel (the latency histograms), and a scorer reading that Prometheus, with the project's rules
loaded. The cookbook's per-namespace command counts a real fuzzy_score.csv."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
import uuid

import pytest
import requests

from common.names import JOB_SCORER
from dashboards import config
from tests import support
from tests.conftest import REAL_KERNEL_CSV, bcc_available, real_parts_required, require
from tests.docs import markdown
from tests.scorer import promserver
from tests.support import REPO

pytestmark = pytest.mark.real

COOKBOOK = (REPO / "docs" / "promql.md").read_text()
QUERIES = markdown.fenced(COOKBOOK, "promql")
REVIEW = REPO / "tests" / "scorer" / "fixtures" / "admission" / "v1_pod_create.request.json"
DEADLINE_S = 60.0
#: A query that may be empty here, and why (a token of the query -> reason).
EMPTY_HERE = {
    "ksense_scorer_source_errors_total": "no input query fails in this stack",
    "ksense_scheduler_unschedulable_total": "no scheduler runs here (it needs a Kubernetes API)",
}
NEEDS_EBPF = "runqueue_latency"
REVIEWS = {"sa": 3, "hotel": 2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require(promserver.prometheus_binary() is not None, "needs /usr/bin/prometheus (Debian package prometheus)")
    require(REAL_KERNEL_CSV.exists(), f"needs the reference recording {REAL_KERNEL_CSV}")
    ebpf = bcc_available()
    if not ebpf and real_parts_required():
        pytest.fail("real part missing in CI: the eBPF exporter needs root, bcc and tracefs")
    work = tmp_path_factory.mktemp("promql")
    ports = {name: support.free_port() for name in ("replay", "procfs", "ebpf", "api", "scorer")}
    nodes = {"replay-node": f"127.0.0.1:{ports['replay']}", "procfs-node": f"127.0.0.1:{ports['procfs']}"}
    nodes |= {"ebpf-node": f"127.0.0.1:{ports['ebpf']}"} if ebpf else {}
    jobs = [promserver.exporter_job(nodes), promserver.component_job(JOB_SCORER, [f"127.0.0.1:{ports['scorer']}"])]
    started: list[support.Process] = []
    try:
        prom = promserver.start_prometheus(work / "prom", jobs, rule_files=[REPO / config.RULES_FILE])
        started.append(prom)
        started.append(promserver.start_exporter(work, REAL_KERNEL_CSV, node="replay-node", speed=20.0,
                                                 port=ports["replay"], env={"KSENSE_WARMUP_S": "5",
                                                                            "KSENSE_STATE_DIR": str(work / "s1")}))
        exporter = ["-m", "exporter", "--host", "127.0.0.1", "--no-csv"]
        started.append(support.start_module(
            work, "procfs", [*exporter, "--source", "procfs", "--node", "procfs-node", "--port", str(ports["procfs"]),
                             "--state-dir", str(work / "s2")], ports["procfs"], "/readyz", {}))
        if ebpf:
            started.append(support.start_module(
                work, "ebpf", [*exporter, "--source", "ebpf", "--node", "ebpf-node", "--port", str(ports["ebpf"]),
                               "--state-dir", str(work / "s3")], ports["ebpf"], "/readyz", {"KSENSE_WARMUP_S": "5"}))
        csv = work / "fuzzy_score.csv"
        started.append(support.start_module(work, "scorer", [
            "-m", "scorer", "--prometheus-url", prom.url, "--host", "127.0.0.1", "--port", str(ports["api"]),
            "--metrics-port", str(ports["scorer"]), "--score-csv", str(csv),
            "--monitor-csv", str(work / "fuzzy_monitor.csv")],
            ports["scorer"], "/metrics", {"KSENSE_SCORER_INTERVAL_S": "1", "KSENSE_SCORER_REPLAY_S": "0"}))
        support.wait_for(lambda: promserver.instant(prom.url, 'node:ksense_node_score:max{node="replay-node"}'),
                            DEADLINE_S, "a recorded score for the replayed node")
        review = json.loads(REVIEW.read_text())
        for namespace, count in REVIEWS.items():
            for _ in range(count):
                body = copy.deepcopy(review)
                body["request"]["uid"] = str(uuid.uuid4())
                body["request"]["namespace"] = body["request"]["object"]["metadata"]["namespace"] = namespace
                r = requests.post(f"http://127.0.0.1:{ports['api']}/validate", json=body, timeout=10)
                assert r.status_code == 200 and r.json()["response"]["allowed"] is True
        yield {"url": prom.url, "ebpf": ebpf, "score_csv": csv}
    finally:
        for server in reversed(started):
            server.stop()


def _query(url: str, expr: str) -> tuple[str, list]:
    body = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    if body.get("status") != "success":
        return f"{body.get('errorType')}: {body.get('error')}", []
    return "", body["data"]["result"]


def test_the_cookbook_has_the_questions_it_promises():
    assert len(QUERIES) >= 15
    for question in ("Which nodes are denied, and why", "Run-queue p99 per node over a day", "Friction heatmap",
                     "Admission reviews by namespace"):
        assert f"## {question}\n" in COOKBOOK


def test_every_cookbook_query_parses_and_returns_data(stack):
    failures = []
    end = time.monotonic() + DEADLINE_S
    for expr in QUERIES:
        may_be_empty = [why for token, why in EMPTY_HERE.items() if token in expr]
        if NEEDS_EBPF in expr and not stack["ebpf"]:
            may_be_empty.append("no eBPF exporter on this machine")
        while True:
            error, result = _query(stack["url"], expr)
            if error:
                failures.append(f"does not parse: {error}\n  {expr}")
                break
            if result or may_be_empty:
                break
            if time.monotonic() > end:
                failures.append(f"no data:\n  {expr}")
                break
            time.sleep(0.5)
    assert failures == [], "\n".join(failures)


def test_the_per_namespace_count_counts_the_scorers_csv(stack):
    (definition,) = re.findall(r"^count_by_namespace\(\) \{.*\}$", COOKBOOK, re.M)
    csv = stack["score_csv"]
    support.wait_for(lambda: csv.exists() and len(csv.read_text().splitlines()) > sum(REVIEWS.values()),
                        DEADLINE_S, "every review in fuzzy_score.csv")
    done = subprocess.run(["bash", "-c", f'{definition}\ncat "$1" "$1" | count_by_namespace', "bash", str(csv)],
                          capture_output=True, text=True, timeout=30, check=True)
    # The file twice, as two replicas' files would come: headers skipped, rows counted.
    assert done.stdout.splitlines() == [f"{2 * n} {ns}" for ns, n in sorted(REVIEWS.items(), key=lambda i: -i[1])]

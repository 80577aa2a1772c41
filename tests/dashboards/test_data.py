"""Every dashboard target and every rule expression against a real stack: a real Prometheus
(1 s scrape, our rules loaded, the job names of dashboards/config.py) scraping a replaying
exporter (the reference recording at speed 20 with a 5 s warm-up, so Friction, Direction and
Energy exist within seconds), an eBPF exporter on this kernel (histograms, BPF programs, maps,
PSI per resource; per-pod series from a kubepods-like cgroup tree with a CPU hog and a
latency-sensitive task pinned to one CPU in two pods, as tests/exporter/test_pods_real.py does),
a scorer reading that Prometheus over TLS (scores, decisions, webhook latency after a few real
AdmissionReviews, certificate expiry) and a second scorer pointed at a dead Prometheus (query
errors). Each expression must parse, and return data unless EMPTY_BY_DESIGN
says why not; alerts must parse and each of their watched signals must return data.
"""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from common import names as n
from dashboards import build, config, rules
from dashboards import queries as q
from tests import support
from tests.conftest import REAL_KERNEL_CSV, bcc_available, real_parts_required, require
from tests.exporter.podtree import PodTree
from tests.exporter.test_pods_real import HOG, VICTIM
from tests.scorer import promserver
from tests.support import REPO

pytestmark = pytest.mark.real

REPLAY_NODE = "replay-node"
EBPF_NODE = "ebpf-node"
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval at a 1 s scrape is ≥ 4 s
DEADLINE_S = 40.0
ADMISSION_REQUEST = REPO / "tests" / "scorer" / "fixtures" / "admission" / "v1_pod_create.request.json"
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")

_SCHEDULER = "the scheduler is not run here (it needs a Kubernetes API and is tested in tests/scheduler)"
#: expression -> why it returns nothing in this stack.
EMPTY_BY_DESIGN = {
    q.rate_by(n.SCHEDULER_BINDS.name, n.LABEL_RESULT): _SCHEDULER,
    q.rate_by(n.SCHEDULER_UNSCHEDULABLE.name, n.LABEL_REASON): _SCHEDULER,
    q.pending_pods(): _SCHEDULER,
    q.quantile_of(n.SCHEDULER_ATTEMPT_DURATION, 0.99): _SCHEDULER,
    q.scheduler_leader(): _SCHEDULER,
    q.component_cpu(config.JOB_SCHEDULER): _SCHEDULER,
    q.component_rss(config.JOB_SCHEDULER): _SCHEDULER,
}
#: Needs the eBPF exporter: allowed empty only off CI on a machine without root/bcc.
NEEDS_EBPF = (
    *(r.record for h in q.HISTOGRAMS for r in h.all),
    n.RUNQUEUE_LATENCY_MAX.name, n.RUNQUEUE_LATENCY_DROPPED.name, n.DSTATE_DURATION.name,
    n.SOFTIRQ_NET_RX_DURATION.name, n.RUNQUEUE_LATENCY.name, n.PRESSURE.name + "{", n.PRESSURE_AVAILABLE.name,
    n.BPF_PROGRAM_ATTACHED.name, n.BPF_PROGRAM_RUN_SECONDS.name, n.BPF_PROGRAM_RUNS.name, n.BPF_MAP_ENTRIES.name,
    n.BPF_MAP_UPDATE_FAILURES.name, *(r.record for r in q.POD_TOPS), n.POD_PRESSURE.name,
)


def _query(url: str, expr: str) -> tuple[str, list]:
    """(error or "", result) of an instant query; a parse error is an answer, not an exception."""
    try:
        body = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    except (requests.RequestException, ValueError) as exc:
        return f"request failed: {exc}", []
    if body.get("status") != "success":
        return f"{body.get('errorType')}: {body.get('error')}", []
    return "", body["data"]["result"]


def _substitute(expr: str) -> str:
    out = expr.replace(f"${config.NODE_VAR}", ".+").replace("$__rate_interval", RATE_INTERVAL)
    assert "$" not in out, out
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require(promserver.prometheus_binary() is not None, "needs /usr/bin/prometheus (Debian package prometheus)")
    require(REAL_KERNEL_CSV.exists(), f"needs the reference recording {REAL_KERNEL_CSV}")
    require(importlib.util.find_spec("trustme") is not None, "needs trustme (requirements/dev.txt)")
    import trustme
    ebpf = bcc_available()
    if not ebpf and real_parts_required():
        pytest.fail("real part missing in CI: the eBPF exporter needs root, bcc and tracefs")
    work = tmp_path_factory.mktemp("dashboards-data")
    started: list[support.Process] = []
    tree = None
    pods: dict[str, str] = {}  # role -> pod uid
    old_stats = BPF_STATS.read_text() if ebpf else None
    try:
        if ebpf:
            BPF_STATS.write_text("1\n")  # the BPF run-time panels need kernel.bpf_stats_enabled=1
        replay_env = {"KSENSE_WARMUP_S": "5", "KSENSE_STATE_DIR": str(work / "replay-state")}
        exporters = [promserver.start_exporter(work, REAL_KERNEL_CSV, node=REPLAY_NODE, speed=20.0, env=replay_env,
                                               csv_out=work / "replay.csv")]
        started += exporters
        if ebpf:
            # Two pods on the eBPF node: a hog (aggressor) and a task it keeps waiting (victim).
            tree = PodTree()
            pods["aggressor"], _, hog = tree.add_pod(qos="burstable")
            pods["victim"], _, victim = tree.add_pod(qos="besteffort")
            tree.run_in(hog, HOG)
            tree.run_in(victim, VICTIM)
            port = support.free_port()
            exporters.append(support.start_module(work, "ebpf-exporter", [
                "-m", "exporter", "--source", "ebpf", "--host", "127.0.0.1", "--port", str(port),
                "--node", EBPF_NODE, "--csv", str(work / "ebpf.csv"), "--state-dir", str(work / "state")],
                port, "/readyz", {"KSENSE_WARMUP_S": "5", "KSENSE_RUN_AS": "0",  # CSV in root's tmp
                                  "KSENSE_CGROUP_ROOT": str(tree.root)}))
            started.append(exporters[-1])

        rules_file = REPO / config.RULES_FILE
        prom = promserver.start_prometheus(work / "prom", [], rule_files=[rules_file])
        started.append(prom)

        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        cert, key, ca_pem = work / "tls.crt", work / "tls.key", work / "ca.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        ca.cert_pem.write_to_path(str(ca_pem))
        api, metrics, broken_metrics = (support.free_port() for _ in range(3))
        dead = support.free_port()  # nothing listens: the second scorer's queries fail

        # Our job names, then reload: the fixture's own config has one job for everything.
        nodes = [REPLAY_NODE, EBPF_NODE][:len(exporters)]
        jobs = [
            promserver.exporter_job({node: f"127.0.0.1:{e.port}" for node, e in zip(nodes, exporters, strict=True)}),
            promserver.component_job(config.JOB_SCORER, [f"127.0.0.1:{metrics}", f"127.0.0.1:{broken_metrics}"]),
        ]
        (work / "prom" / "prometheus.yml").write_text(promserver.prometheus_config(jobs, [rules_file]))
        assert requests.post(f"{prom.url}/-/reload", timeout=10).status_code == 200

        scorer_env = {"KSENSE_SCORER_INTERVAL_S": "1", "KSENSE_SCORER_REPLAY_S": "0"}
        scorer = support.start_module(work, "scorer", [
            "-m", "scorer", "--prometheus-url", prom.url, "--host", "127.0.0.1", "--port", str(api),
            "--metrics-port", str(metrics), "--no-csv", "--tls-cert", str(cert), "--tls-key", str(key)],
            metrics, "/metrics", scorer_env)
        started.append(scorer)
        broken = support.start_module(work, "scorer-broken", [
            "-m", "scorer", "--prometheus-url", f"http://127.0.0.1:{dead}", "--host", "127.0.0.1",
            "--port", str(support.free_port()), "--metrics-port", str(broken_metrics), "--no-csv"],
            broken_metrics, "/metrics", scorer_env)
        started.append(broken)

        # A scored node through Prometheus, then a few real admission reviews.
        support.wait_for(lambda: promserver.instant(prom.url, q.per_node(q.SCORE).replace(
            f"${config.NODE_VAR}", REPLAY_NODE)), 60, "a recorded score for the replayed node")
        review = json.loads(ADMISSION_REQUEST.read_text())
        for _ in range(5):
            review["request"]["uid"] = str(uuid.uuid4())
            r = requests.post(f"https://127.0.0.1:{api}/validate", json=review, verify=str(ca_pem), timeout=10)
            assert r.status_code == 200 and r.json()["response"]["allowed"] is True
        yield {"url": prom.url, "ebpf": ebpf, "pods": pods}
    finally:
        for server in reversed(started):
            server.stop()
        if tree is not None:
            tree.close()
        if old_stats is not None:
            BPF_STATS.write_text(old_stats)


def _panel_targets() -> list[tuple[str, str]]:
    out = []
    for module in build.DASHBOARD_MODULES:
        data = json.loads(build.dashboard_json(module.build()))
        for panel in data["panels"]:
            for t in panel.get("targets") or []:
                out.append((f"{data['title']} / {panel['title']} / {t['refId']}", t["expr"]))
    return out


def _check(url: str, items: list[tuple[str, str]], *, ebpf: bool, need_data: bool = True) -> list[str]:
    """Poll every expression until it has data or the shared deadline passes; return failures."""
    failures = []
    end = time.monotonic() + DEADLINE_S
    for where, expr in items:
        if expr in EMPTY_BY_DESIGN:
            assert EMPTY_BY_DESIGN[expr]
            error, _ = _query(url, _substitute(expr))
            if error:
                failures.append(f"{where}: does not parse: {error}\n  {expr}")
            continue
        allowed_empty = not need_data or (not ebpf and any(token in expr for token in NEEDS_EBPF))
        while True:
            error, result = _query(url, _substitute(expr))
            if error:
                failures.append(f"{where}: does not parse: {error}\n  {expr}")
                break
            if result or allowed_empty:
                break
            if time.monotonic() > end:
                failures.append(f"{where}: no data\n  {expr}")
                break
            time.sleep(0.5)
    return failures


def test_every_panel_target_parses_and_returns_data(stack):
    failures = _check(stack["url"], _panel_targets(), ebpf=stack["ebpf"])
    assert failures == [], "\n".join(failures)


def test_every_recording_rule_returns_data(stack):
    items = [(f"recorded {r.record}", r.record) for r in rules.recordings()]
    failures = _check(stack["url"], items, ebpf=stack["ebpf"])
    assert failures == [], "\n".join(failures)


def test_the_rules_loaded_healthy(stack):
    body = requests.get(f"{stack['url']}/api/v1/rules", timeout=5).json()
    loaded = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert len(loaded) == len(rules.recordings()) + len(rules.alerts())
    assert [r["name"] for r in loaded if r["health"] != "ok"] == []


def test_every_alert_parses_and_its_signals_return_data(stack):
    alerts = [(f"alert {a.name}", a.expr) for a in rules.alerts()]
    failures = _check(stack["url"], alerts, ebpf=stack["ebpf"], need_data=False)
    signals = [(f"alert {a.name} signal", s) for a in rules.alerts() for s in a.signals]
    failures += _check(stack["url"], signals, ebpf=stack["ebpf"])
    assert failures == [], "\n".join(failures)


def test_the_data_is_what_the_panels_claim(stack):
    """Spot checks of meaning: the replayed node is frozen and scored 0–100 with a 0/1
    decision; the second scorer's failed queries are counted under source=prometheus; the
    certificate's expiry is in the future."""
    url = stack["url"]
    support.wait_for(lambda: promserver.instant(url, f'{q.FROZEN.record}{{node="{REPLAY_NODE}"}} == 1'),
                        DEADLINE_S, "the replayed node's frozen baseline")
    score = promserver.instant(url, f'{q.SCORE.record}{{node="{REPLAY_NODE}"}}')
    assert score and 0.0 <= float(score[0]["value"][1]) <= 100.0
    allowed = promserver.instant(url, f'{q.ALLOWED.record}{{node="{REPLAY_NODE}"}}')
    assert allowed and float(allowed[0]["value"][1]) in (0.0, 1.0)
    errors = support.wait_for(lambda: promserver.instant(url, q.prometheus_query_errors_rate("10s") + " > 0"),
                                 DEADLINE_S, "failed Prometheus queries of the broken scorer")
    assert {e["metric"]["reason"] for e in errors} >= {"unreachable"}
    left = promserver.instant(url, rules.CERT_LEFT)
    assert left and float(left[0]["value"][1]) > 0
    reviews = f'sum({n.ADMISSION_REVIEWS.name}{{{n.LABEL_OUTCOME}="recorded"}}) >= 5'
    support.wait_for(lambda: promserver.instant(url, reviews), DEADLINE_S, "the 5 recorded admission reviews")


def test_the_pods_row_names_the_victim_and_the_aggressor(stack):
    """The hog is the top pod of the CPU recording and the pod it keeps waiting has a positive
    wait rate in the victims' recording (which pod waits most is not asserted: on a shared
    machine the always-runnable hog also waits behind every other task on its CPU)."""
    if not stack["ebpf"]:
        pytest.skip("per-pod series need the eBPF exporter")
    url, pods = stack["url"], stack["pods"]

    def rates(record: q.Recording) -> dict[str, float]:
        result = promserver.instant(url, f'{record.record}{{node="{EBPF_NODE}"}}')
        return {e["metric"][n.LABEL_POD_UID]: float(e["value"][1]) for e in result}

    def named() -> bool:
        cpu, wait = rates(q.POD_CPU), rates(q.POD_WAIT)
        return bool(cpu) and max(cpu, key=cpu.get) == pods["aggressor"] and wait.get(pods["victim"], 0) > 0

    support.wait_for(named, DEADLINE_S, "the hog on top of the CPU recording and the victim's wait recorded")

"""A 200-node fleet through a real Prometheus and a real VictoriaMetrics, the same assertions on
each: every node scored by the scorer's PrometheusSource, a stepped node denied within the
bound and its top pods named (only the denied nodes' pods are asked for), the scheduler
(scores read from the database) choosing only allowed nodes; and every dashboard query and
recording rule checked on VictoriaMetrics against Prometheus.

One loopback server (bench/fleet.ScrapeServer) serves the 200 nodes' expositions (the
exporter's own collector over the real recording, 3 pods per node) and each backend's scorer
/metrics; both databases scrape it every second with deploy/'s job labels (honor_labels off,
`node` from the scrape). Prometheus loads the shipped rules file; on VictoriaMetrics, Debian's
vmalert evaluates the same file and writes the recorded series back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests

from bench import fleet as f
from common import names as n
from dashboards import build, config, rules
from scheduler.core.choose import decide
from scheduler.core.filters import NodeTable, ScoreTable, node_info, pod_view
from scheduler.scores import PrometheusScores
from tests.conftest import require
from tests.support import REPO, free_port, wait_for

pytestmark = pytest.mark.real

NODES = 200
#: Pods per node (their series as the exporter's): the denied nodes' reasons name their top pods.
PODS = 3
SCRAPE_S = 1.0
TICK_S = 1.0
LONG_WIN_S = 10.0
#: The issue's bound: step change → decision ≤ 10 s (at a 5 s tick; here the tick is 1 s).
STEP_BOUND_S = 10.0
RATE_INTERVAL = "10s"


@dataclass
class Backend:
    name: str
    url: str
    scorer: f.ScorerOnDb


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict]:
    for exe in ("prometheus", "victoria-metrics", "vmalert"):
        require(f.binary(exe) is not None, f"needs /usr/bin/{exe} (Debian packages prometheus, victoria-metrics)")
    work = tmp_path_factory.mktemp("fleet")
    fleet = f.make_fleet(f.node_names(NODES), stressed_share=0.05, stepped=3, rows_per_pool=40, pods=PODS)
    scorers: dict[str, f.ScorerOnDb] = {}

    def scorer_metrics(backend: str) -> Callable[[], bytes]:
        return lambda: scorers[backend].metrics() if backend in scorers else b""

    server = f.ScrapeServer(fleet, SCRAPE_S, extra={f"/scorer/{b}/metrics": scorer_metrics(b) for b in f.BACKENDS})
    server.start()
    started: list[f.Server] = []
    try:
        def jobs(backend: str) -> list[dict]:
            return [f.exporter_scrape_job(fleet, server.port),
                    f.scorer_scrape_job(server.port, f"/scorer/{backend}/metrics")]

        rules_file = REPO / config.RULES_FILE
        prom = f.start_prometheus(work / "prom", f.scrape_config(jobs(f.PROMETHEUS), SCRAPE_S, [rules_file]),
                                  receiver=False)
        started.append(prom)
        vm = f.start_victoria(work / "vm", f.scrape_config(jobs(f.VICTORIA), SCRAPE_S))
        started.append(vm)
        port = free_port()
        vmalert_exe = f.binary("vmalert")
        assert vmalert_exe is not None
        vmalert = f._spawn("vmalert", [
            vmalert_exe, f"-rule={rules_file}", f"-datasource.url={vm.url}", f"-remoteWrite.url={vm.url}",
            # vmalert 1.79 insists on a notifier when a file has alerts; none is needed here
            # (alert expressions are checked by query), so the scrape server's 404 takes them.
            f"-notifier.url=http://127.0.0.1:{server.port}", "-evaluationInterval=1s",
            # A rule over another recording sees it only once vmalert's remote write has flushed
            # (default every 5 s; two chained levels could exceed the 10 s the comparison waits).
            "-remoteWrite.flushInterval=1s",
            f"-httpListenAddr=127.0.0.1:{port}", "-loggerLevel=ERROR"], work, port, "/health")
        started.append(vmalert)
        backends = {}
        for name, db in ((f.PROMETHEUS, prom), (f.VICTORIA, vm)):
            scorers[name] = f.ScorerOnDb(db.url, None, long_win_s=LONG_WIN_S, interval_s=TICK_S)
            backends[name] = Backend(name, db.url, scorers[name])
        selector = f"{n.FRICTION.name}{{{n.EXPORTER_SELECTOR}}}"
        for b in backends.values():
            def all_nodes_in(url: str = b.url) -> bool:
                return f.count_of(url, selector) >= NODES

            wait_for(all_nodes_in, 30, f"{NODES} nodes in {b.name}", poll_s=0.2)
        yield {"fleet": fleet, "server": server, "backends": backends}
    finally:
        server.stop()
        for s in reversed(started):
            s.stop()


@pytest.fixture(params=f.BACKENDS)
def backend(request, stack) -> Backend:
    return stack["backends"][request.param]


def _tick_until(b: Backend, done, deadline_s: float, what: str):
    """Tick the scorer every TICK_S until `done(decisions)` holds; returns the decisions."""
    end = time.monotonic() + deadline_s
    while True:
        started = time.monotonic()
        decisions = b.scorer.tick()
        if done(decisions):
            return decisions
        if time.monotonic() > end:
            raise AssertionError(f"{b.name}: timed out after {deadline_s:g}s waiting for {what}")
        time.sleep(max(0.0, TICK_S - (time.monotonic() - started)))


def test_every_node_is_scored_and_the_stressed_denied(stack, backend):
    _settle(stack, backend)


def _settle(stack: dict, backend: Backend) -> None:
    """Tick until every node is scored with all four inputs, exactly the stressed (and, after
    the step, the stepped) nodes denied."""
    fleet = stack["fleet"]
    stressed = set(fleet.stressed_names) | (set(fleet.stepped_names) if fleet.step_round is not None else set())

    def settled(decisions: dict[str, str]) -> bool:
        reports = backend.scorer.evaluator.latest().reports
        return (set(fleet.names) <= decisions.keys() and all(reports[x].missing == () for x in fleet.names)
                and all((decisions[x] == n.DECISION_DENY) == (x in stressed) for x in fleet.names))

    _tick_until(backend, settled, 20, "every node scored, the stressed denied and the quiet allowed")


def test_a_stepped_node_is_denied_within_the_bound_and_the_scheduler_binds_only_allowed_nodes(stack, backend):
    fleet, server = stack["fleet"], stack["server"]
    _settle(stack, backend)
    stepped = set(fleet.stepped_names)
    if fleet.step_round is None:  # the first backend to get here steps the shared fleet
        fleet.step_round = server.round() + 1
        wait_for(lambda: server.stepped_at is not None, 3 * SCRAPE_S, "a scrape of a stepped node's stressed row")
    _tick_until(backend, lambda d: all(d[x] == n.DECISION_DENY for x in stepped), 3 * STEP_BOUND_S,
                "the stepped nodes denied")
    late = max(backend.scorer.denied_at[x] for x in stepped) - server.stepped_at
    print(f"{backend.name}: step → deny {late:.2f} s")
    assert late <= STEP_BOUND_S
    # The tick named the pods of its denied nodes only (pod-0 has the most of everything).
    reports = backend.scorer.evaluator.latest().reports
    for x in stepped:
        assert reports[x].inputs.victim.shown == "fleet/pod-0", reports[x].reason
        assert "victim fleet/pod-0" in reports[x].reason and "aggressor fleet/pod-0" in reports[x].reason
    assert all(r.inputs.victim is None for r in reports.values() if r.decision == n.DECISION_ALLOW)

    # The scheduler reads the decisions the database scraped from the scorer.
    scores = PrometheusScores(backend.url, long_win_s=LONG_WIN_S)
    denied = stepped | set(fleet.stressed_names)
    got = wait_for(lambda: (s := scores.fetch()).records and all(
        x in s.records and not s.records[x].allowed for x in denied) and s, STEP_BOUND_S,
        "the scheduler's read of the stepped nodes' deny")
    assert set(got.records) == set(fleet.names)
    nodes = NodeTable.build([node_info(x) for x in f.scheduler_nodes(fleet.names)])
    table = ScoreTable(got.records)
    chosen = {decide(pod_view(f.PLAIN_POD), nodes, table).node for _ in range(3)}
    assert chosen and None not in chosen and not chosen & denied
    assert all(got.records[x].allowed and got.records[x].fresh for x in chosen)
    pinned = dict(f.PLAIN_POD, spec=dict(f.PLAIN_POD["spec"], affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": sorted(stepped)}]}]}}}))
    assert decide(pod_view(pinned), nodes, table).node is None  # only denied nodes match: nothing bound


def _query(url: str, expr: str) -> tuple[str, list]:
    """(error or "", the samples that are numbers). VictoriaMetrics leaves NaN points out where
    Prometheus returns them (histogram_quantile over an idle histogram): both mean no value."""
    body = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    if body.get("status") != "success":
        return f"{body.get('errorType')}: {body.get('error')}", []
    return "", [r for r in body["data"]["result"] if r["value"][1] != "NaN"]


def _expressions() -> list[tuple[str, str]]:
    out = []
    for module in build.DASHBOARD_MODULES:
        data = json.loads(build.dashboard_json(module.build()))
        for panel in data["panels"]:
            for t in panel.get("targets") or []:
                expr = t["expr"].replace(f"${config.NODE_VAR}", ".+").replace("$__rate_interval", RATE_INTERVAL)
                out.append((f"{data['title']} / {panel['title']}", expr))
    out += [(f"rule {r.record}", r.expr) for r in rules.recordings()]
    out += [(f"recorded {r.record}", r.record) for r in rules.recordings()]
    out += [(f"alert {a.name}", a.expr) for a in rules.alerts()]
    return out


def test_every_dashboard_query_and_rule_behaves_alike_on_victoriametrics(stack):
    """Each expression parses on both, and returns data on VictoriaMetrics whenever it does on
    Prometheus (same fleet, same scrape; VictoriaMetrics' recorded series come from vmalert)."""
    prom, vm = stack["backends"][f.PROMETHEUS], stack["backends"][f.VICTORIA]
    for b in (prom, vm):  # the scorer series exist on both
        _tick_until(b, lambda d: len(d) >= NODES, 20, "a scored fleet")
    failures = []
    for where, expr in _expressions():
        p_error, p_result = _query(prom.url, expr)
        v_error, v_result = _query(vm.url, expr)
        if p_error or v_error:
            failures.append(f"{where}: prometheus {p_error or 'ok'}, victoriametrics {v_error or 'ok'}\n  {expr}")
            continue
        if p_result and not v_result:
            # Recorded series need one vmalert evaluation after the scorer's first scrape, and a
            # rule over another recording one remote-write flush more per level of the chain
            # (docs/sizing.md): up to three levels (rate2m -> quantile) on a loaded machine.
            try:
                wait_for(lambda e=expr: _query(vm.url, e)[1], 30, f"{where} on victoriametrics")
            except AssertionError:
                failures.append(f"{where}: data on prometheus, none on victoriametrics\n  {expr}")
    assert failures == [], "\n".join(failures)


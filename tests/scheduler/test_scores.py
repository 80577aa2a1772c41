"""Score sources: the one PromQL query against a REAL Prometheus scraping two fake scorer
replicas (min/max aggregation, staleness by sample timestamp), whose series it selects (the
scorers' scrape identity, configurable), a trickling source bounded by its deadline, the
scorer's /score over verified TLS, and the pure parsers with literal answers."""

from __future__ import annotations

import json
import math
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from common import names as n
from common.envconf import ConfigError
from scheduler.config import from_env
from scheduler.core.filters import ScoreRecord
from scheduler.scores import (
    PrometheusScores,
    ScorerScores,
    parse_prometheus,
    parse_scorer,
    prometheus_query,
)
from tests.conftest import require
from tests.kubeapi.fixtures import KubeAPI
from tests.scheduler.conftest import add_nodes, add_pods, node_of, wait_for
from tests.scorer import promserver
from tests.scorer.trickle import TrickleServer, http_response
from tests.support import TextServer


def scorer_metrics(values: dict[str, tuple[float, int]], timestamp_ms: int | None = None,
                   pods: dict[str, list[tuple[str, str, str, str, float]]] | None = None) -> str:
    """Exposition text of one scorer replica: node -> (score, allowed), and a denied node's top
    pods as ScorerCollector exports them: node -> [(role, namespace, name, uid, rate)]."""
    stamp = f" {timestamp_ms}" if timestamp_ms is not None else ""
    lines = [f"# HELP {n.NODE_SCORE.name} {n.NODE_SCORE.help}", f"# TYPE {n.NODE_SCORE.name} gauge"]
    lines += [f'{n.NODE_SCORE.name}{{node="{node}"}} {s}{stamp}' for node, (s, _) in values.items()]
    lines += [f"# HELP {n.NODE_ADMISSION_ALLOWED.name} {n.NODE_ADMISSION_ALLOWED.help}",
              f"# TYPE {n.NODE_ADMISSION_ALLOWED.name} gauge"]
    lines += [f'{n.NODE_ADMISSION_ALLOWED.name}{{node="{node}"}} {a}{stamp}' for node, (_, a) in values.items()]
    lines += [f"# HELP {n.NODE_TOP_POD.name} {n.NODE_TOP_POD.help}", f"# TYPE {n.NODE_TOP_POD.name} gauge"]
    for node, named in (pods or {}).items():
        lines += [f'{n.NODE_TOP_POD.name}{{node="{node}",role="{role}",pod_namespace="{ns}",pod_name="{name}",'
                  f'pod_uid="{uid}"}} {rate}{stamp}' for role, ns, name, uid, rate in named]
    return "\n".join(lines) + "\n"


# Replica A and B disagree: A allows w1, B denies it (and names its victim); both deny w3, each
# naming the pods its own tick saw: B's victim has the higher rate, both name u-2 the aggressor
# at the same rate but only B knows its name, only B names an IO aggressor.
REPLICA_A = scorer_metrics({"w1": (20.0, 1), "w2": (30.0, 1), "w3": (90.0, 0)}, pods={"w3": [
    (n.POD_ROLE_VICTIM, "shop", "checkout", "u-1", 0.3), (n.POD_ROLE_AGGRESSOR, "", "", "u-2", 0.9)]})
REPLICA_B = scorer_metrics({"w1": (25.0, 0), "w2": (35.0, 1), "w3": (80.0, 0)}, pods={
    "w1": [(n.POD_ROLE_VICTIM, "team", "api", "u-5", 0.2)],
    "w3": [(n.POD_ROLE_VICTIM, "shop", "cart", "u-3", 0.5), (n.POD_ROLE_AGGRESSOR, "batch", "nightly", "u-2", 0.9),
           (n.POD_ROLE_IO_AGGRESSOR, "backup", "restic", "u-4", 0.6)]})


@pytest.fixture
def prometheus_with_two_scorers(tmp_path: Path) -> Iterator[str]:
    require(promserver.prometheus_binary() is not None, "needs Debian's prometheus")
    a, b = TextServer(lambda: REPLICA_A), TextServer(lambda: REPLICA_B)
    prom = promserver.start_prometheus(tmp_path, [promserver.component_job(n.JOB_SCORER, [
        f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])])
    try:
        yield prom.url
    finally:
        prom.stop()
        a.stop()
        b.stop()


def test_prometheus_source_aggregates_two_replicas(prometheus_with_two_scorers, kube_api: KubeAPI,
                                                   start_scheduler) -> None:
    url = prometheus_with_two_scorers
    wait_for(lambda: len(promserver.instant(url, n.NODE_SCORE.name)) == 6, 30, "both replicas scraped", poll_s=0.2)
    source = PrometheusScores(url, long_win_s=60.0)
    got = source.fetch()
    assert got.error is None
    assert got.records == {
        "w1": ScoreRecord(False, 25.0, True, victim="team/api"),  # deny wins (min), worst score (max)
        "w2": ScoreRecord(True, 35.0, True),
        # Per role the highest rate, then a named pod over the same pod known by UID only.
        "w3": ScoreRecord(False, 90.0, True, victim="shop/cart", aggressor="batch/nightly",
                          io_aggressor="backup/restic"),
    }
    # End to end: only w2 is allowed, so every pod lands there.
    k = kube_api
    add_nodes(k, "w1", "w2", "w3")
    start_scheduler(k.url, source)
    add_pods(k, "p1", "p2")
    wait_for(lambda: node_of(k, "p1") and node_of(k, "p2"), 10, "pods bound")
    assert {node_of(k, "p1"), node_of(k, "p2")} == {"w2"}


def test_prometheus_source_names_the_denied_nodes_pods_in_the_event(prometheus_with_two_scorers,
                                                                   kube_api: KubeAPI, start_scheduler) -> None:
    """The default score source (Prometheus) names the pods behind a fuzzy deny as the scorer
    source does: the pod fits on no node (w2 allowed but too small), the event names w1's and
    w3's top pods, reconciled across the two replicas."""
    url = prometheus_with_two_scorers
    wait_for(lambda: len(promserver.instant(url, n.NODE_TOP_POD.name)) == 6, 30, "both replicas' pods scraped",
             poll_s=0.2)
    k = kube_api
    add_nodes(k, "w2", cpu="1")
    add_nodes(k, "w1", "w3", cpu="8")
    start_scheduler(k.url, PrometheusScores(url, long_win_s=60.0))
    add_pods(k, "big", cpu="2")
    events = wait_for(lambda: [e for e in k.store.events("default") if e["reason"] == "FailedScheduling"],
                      10, "the FailedScheduling event")
    assert [e["message"] for e in events] == [
        "0/3 nodes are available: 1 Insufficient cpu, 1 fuzzy deny (score < 45), 1 fuzzy deny (score ≥ 70). "
        "Node w1: victim team/api. Node w3: victim shop/cart, aggressor batch/nightly, io aggressor backup/restic."]


def test_prometheus_stale_samples_mean_no_score_and_no_binds(tmp_path: Path, kube_api: KubeAPI,
                                                              start_scheduler) -> None:
    require(promserver.prometheus_binary() is not None, "needs Debian's prometheus")
    # Samples carry their own timestamp, 120 s old: Prometheus serves them (5 min lookback),
    # timestamp() exposes their age, and 120 s > FUZZY_LONG_WIN_S = 60 s.
    old_ms = int((time.time() - 120) * 1000)
    scorer = TextServer(lambda: scorer_metrics({"w1": (10.0, 1)}, timestamp_ms=old_ms))
    prom = promserver.start_prometheus(tmp_path, [promserver.component_job(n.JOB_SCORER, [f"127.0.0.1:{scorer.port}"])])
    try:
        wait_for(lambda: promserver.instant(prom.url, n.NODE_SCORE.name), 30, "scraped", poll_s=0.2)
        source = PrometheusScores(prom.url, long_win_s=60.0)
        assert source.fetch().records == {"w1": ScoreRecord(True, 10.0, False)}
        assert PrometheusScores(prom.url, long_win_s=600.0).fetch().records["w1"].fresh
        k = kube_api
        add_nodes(k, "w1")
        inst = start_scheduler(k.url, source)
        add_pods(k, "p")
        wait_for(lambda: inst.stats.unschedulable_counts()["no_score"] >= 1, 10, "no_score attempt")
        assert node_of(k, "p") == ""
        assert inst.stats.binds()["bound"] == 0
    finally:
        prom.stop()
        scorer.stop()


def test_prometheus_down_is_an_error_not_an_exception() -> None:
    got = PrometheusScores("http://127.0.0.1:9", timeout_s=0.5).fetch()
    assert got.records == {} and got.error == "unreachable"


def test_query_is_one_expression_built_from_the_names() -> None:
    q = prometheus_query()
    identity = 'job="ksense-scorer",namespace="ksense"'
    assert identity == n.SCORER_SELECTOR
    assert f"min by (node) ({n.NODE_ADMISSION_ALLOWED.name}{{{identity}}})" in q
    assert f"max by (node) ({n.NODE_SCORE.name}{{{identity}}})" in q
    assert f"timestamp({n.NODE_SCORE.name}{{{identity}}})" in q
    assert f"max by (node, role, pod_namespace, pod_name, pod_uid) ({n.NODE_TOP_POD.name}{{{identity}}})" in q
    assert q.count("timestamp(") == 2 and q.count(" or ") == 4 and q.count(identity) == 5
    assert f"min by (node) ({n.NODE_ADMISSION_ALLOWED.name}{{}})" in prometheus_query("")


def test_the_selector_is_configurable_and_checked() -> None:
    env = {"KSENSE_PROMETHEUS_URL": "http://prometheus:9090"}
    assert from_env(env).scorer_selector == n.SCORER_SELECTOR
    assert from_env({**env, "KSENSE_SCORER_SELECTOR": ' job = "s" , namespace=~"a|b" '}).scorer_selector == \
        'job="s",namespace=~"a|b"'
    assert from_env({**env, "KSENSE_SCORER_SELECTOR": ""}).scorer_selector == ""
    for bad in ('job="s"} or vector(1) or x{a="b"', "job=s", '{job="s"}'):
        with pytest.raises(ConfigError, match="KSENSE_SCORER_SELECTOR"):
            from_env({**env, "KSENSE_SCORER_SELECTOR": bad})


def test_a_trickling_prometheus_fails_the_cycle_at_the_deadline() -> None:
    """A byte every 0.1 s, status line included: a per-read timeout of 0.5 s never fires; the
    deadline bounds the whole answer."""
    server = TrickleServer(lambda method, target: http_response(b'{"status": "success"}'), byte_every_s=0.1)
    try:
        done: list = []
        started = time.monotonic()
        worker = threading.Thread(target=lambda: done.append(PrometheusScores(server.url, timeout_s=0.5).fetch()),
                                  daemon=True)
        worker.start()
        worker.join(timeout=5)
        assert done, "fetch still waiting on a trickling answer after 5 s (deadline 0.5 s)"
        assert done[0].records == {} and done[0].error == "timeout"
        assert time.monotonic() - started < 0.5 + 0.4
    finally:
        server.close()


def _vector(*samples: tuple[str, str, float, float]) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"node": node, "ksense_q": tag}, "value": [at, str(value)]} for node, tag, at, value in samples]}}


@pytest.mark.parametrize(("name", "body", "expected"), [
    ("fresh allow", _vector(("a", "allowed", 1000, 1), ("a", "score", 1000, 12.5),
                            ("a", "allowed_ts", 1000, 990), ("a", "score_ts", 1000, 995)),
     {"a": ScoreRecord(True, 12.5, True)}),
    ("one series too old", _vector(("a", "allowed", 1000, 1), ("a", "score", 1000, 12.5),
                                   ("a", "allowed_ts", 1000, 930), ("a", "score_ts", 1000, 995)),
     {"a": ScoreRecord(True, 12.5, False)}),
    ("exactly the window is fresh", _vector(("a", "allowed", 1000, 0), ("a", "score", 1000, 80),
                                            ("a", "allowed_ts", 1000, 940), ("a", "score_ts", 1000, 940)),
     {"a": ScoreRecord(False, 80.0, True)}),
    ("incomplete node left out", _vector(("a", "allowed", 1000, 1), ("a", "allowed_ts", 1000, 999)), {}),
    ("empty", _vector(), {}),
])
def test_parse_prometheus(name: str, body: dict, expected: dict) -> None:
    assert parse_prometheus(body, 60.0) == expected, name


def test_parse_prometheus_names_pods_of_denied_nodes_only_whatever_the_order() -> None:
    def pod(node: str, role: str, ns: str, name: str, uid: str, rate: float) -> dict:
        return {"metric": {"node": node, "ksense_q": "pod", "role": role, "pod_namespace": ns, "pod_name": name,
                           "pod_uid": uid}, "value": [1000, str(rate)]}

    body = _vector(*((node, tag, 1000, value) for node, allowed in (("a", 0), ("b", 1)) for tag, value in (
        ("allowed", allowed), ("score", 80), ("allowed_ts", 999), ("score_ts", 999))))
    pods = [pod("a", "victim", "", "", "u-2", 0.5), pod("a", "victim", "shop", "cart", "u-2", 0.5),
            pod("a", "victim", "x", "y", "u-1", 0.4), pod("a", "aggressor", "", "", "u-9", 0.7),
            pod("a", "aggressor", "", "", "u-8", 0.7), pod("a", "bystander", "z", "z", "u-7", 9.0),
            pod("b", "victim", "s", "t", "u-3", 0.9)]
    for order in (pods, pods[::-1]):
        got = parse_prometheus({**body, "data": {**body["data"], "result": body["data"]["result"] + order}}, 60.0)
        assert got == {"a": ScoreRecord(False, 80.0, True, victim="shop/cart", aggressor="uid u-8"),
                       "b": ScoreRecord(True, 80.0, True)}


def test_parse_prometheus_rejects_errors() -> None:
    with pytest.raises(ValueError):
        parse_prometheus({"status": "error", "error": "bad query"}, 60.0)


def test_parse_scorer() -> None:
    body = {"time": "2026-01-01T00:00:10Z", "source": "prometheus", "nodes": [
        {"node": "a", "time": "2026-01-01T00:00:00.000Z", "decision": "allow", "score": 17.9},
        {"node": "b", "time": "2025-12-31T23:58:00Z", "decision": "allow", "score": 17.9},
        {"node": "c", "time": "2026-01-01T00:00:00Z", "decision": "deny", "score": None},
        {"node": "d", "time": "garbage", "decision": "allow", "score": 1.0},
    ]}
    now = 1767225610.0  # 2026-01-01T00:00:10Z
    got = parse_scorer(body, now, 60.0)
    assert got["a"] == ScoreRecord(True, 17.9, True)
    assert got["b"].fresh is False
    assert got["c"].allowed is False and math.isinf(got["c"].score)
    assert got["d"].fresh is False
    with pytest.raises(ValueError):
        parse_scorer({"error": "not ready"}, now, 60.0)


def test_scorer_source_verifies_tls(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    body = f'{{"time": "{stamp}", "source": "local", "nodes": [{{"node": "a", "time": "{stamp}", ' \
           f'"decision": "allow", "score": 20.0}}]}}'
    server = TextServer(lambda: body, "application/json", ssl_context=ctx)
    try:
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        url = f"https://127.0.0.1:{server.port}"
        untrusted = ScorerScores(url, timeout_s=2.0, session=requests.Session()).fetch()
        assert untrusted.records == {} and untrusted.error == "unreachable", "verification must be on"
        trusted = ScorerScores(url, ca_file=ca_file, timeout_s=2.0).fetch()
        assert trusted.error is None and trusted.records == {"a": ScoreRecord(True, 20.0, True)}
    finally:
        server.stop()


def test_scorer_source_names_the_victim_and_aggressor_in_the_event(kube_api: KubeAPI, start_scheduler) -> None:
    """/score's `victim`/`aggressor` (docs/api.md) reach the FailedScheduling event of a pod
    that fits nowhere: w1 is allowed but too small, w2 is denied with its top pods known, w3
    denied with none known (not named)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def report(node: str, decision: str, score: float, victim: dict | None, aggressor: dict | None) -> dict:
        return {"node": node, "time": stamp, "decision": decision, "score": score, "victim": victim,
                "aggressor": aggressor}

    body = json.dumps({"time": stamp, "source": "prometheus", "nodes": [
        report("w1", "allow", 20.0, None, None),
        report("w2", "deny", 75.0, {"namespace": "shop", "name": "checkout", "uid": "u-1", "rate": 0.4},
               {"namespace": "", "name": "", "uid": "u-2", "rate": 0.98}),
        report("w3", "deny", 80.0, None, None),
    ]})
    server = TextServer(lambda: body, "application/json")
    try:
        k = kube_api
        add_nodes(k, "w1", cpu="1")
        add_nodes(k, "w2", "w3", cpu="8")
        start_scheduler(k.url, ScorerScores(f"http://127.0.0.1:{server.port}", timeout_s=2.0))
        add_pods(k, "big", cpu="2")
        events = wait_for(lambda: [e for e in k.store.events("default") if e["reason"] == "FailedScheduling"],
                          10, "the FailedScheduling event")
        assert [e["message"] for e in events] == [
            "0/3 nodes are available: 1 Insufficient cpu, 2 fuzzy deny (score ≥ 70). "
            "Node w2: victim shop/checkout, aggressor uid u-2."]
    finally:
        server.stop()

"""PrometheusSource against a fake Prometheus HTTP API on a real socket: answers, failures of
every shape (a trickling answer included), how many requests a failure costs, known nodes, the
range-query history, and whose series the queries select."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime

import pytest

from common import names as n
from scorer.core import inputs as core
from scorer.sources import prometheus as prom
from scorer.sources import shown
from scorer.sources.prometheus import (
    FORM_QUERY_CHARS,
    POD_QUERY_CHARS,
    POD_QUERY_GROUPS,
    TS_LABEL,
    PrometheusSource,
    chunks,
    detail_query,
    queries,
    stale_query,
    tick_queries,
)
from tests.scorer.conftest import Reply
from tests.scorer.trickle import TrickleServer, prometheus_answer
from tests.support import free_port

NOW = datetime(2027, 1, 15, 12, 0, 0, tzinfo=UTC)
AT = NOW.timestamp()
LONG_WIN_S = 60.0
QUERIES = tick_queries(n.EXPORTER_SELECTOR, LONG_WIN_S)
HISTORY_QUERIES = queries(n.EXPORTER_SELECTOR)
SIGNAL_OF = {expr: signal for signal, expr in (*QUERIES.items(), *HISTORY_QUERIES.items())}
#: A pod query's family -> its role.
ROLE_OF_FAMILY = {family: role for role, family in core.POD_SERIES.items()}
#: The stale follow-up query of each signal -> the signal.
STALE_OF_SIGNAL = {signal: stale_query(sel, LONG_WIN_S) for signal, sel in core.selectors(n.EXPORTER_SELECTOR).items()}
STALE_OF = {expr: signal for signal, expr in STALE_OF_SIGNAL.items()}
#: Queries per tick: one per signal (pods are asked apart, for the denied nodes: `top_pods`).
PER_TICK = len(core.SIGNALS)
#: Until a node is known, one more per input: the stale follow-up (nodes whose series are all stale).
STALE_ASKED = [STALE_OF_SIGNAL[s] for s in core.REASONED_SIGNALS if s in STALE_OF_SIGNAL]
FIRST_TICK = PER_TICK + len(STALE_ASKED)

#: node -> signal -> raw value (ratios as exported)
FLEET = {
    "a": {"friction": 4.0, "direction": 1.0, "energy": 0.5, "cpu": 0.2, "psi": 0.05, "frozen": 1.0, "warmup": 0.0},
    "b": {"friction": 9.0, "direction": -1.0, "energy": 2.0, "cpu": 0.9, "psi": 0.5, "frozen": 1.0, "warmup": 0.0},
}


def role_of(expr: str) -> str | None:
    """The role of a pod query (`core.pod_queries`), None for any other query."""
    if not expr.startswith("topk by (node)"):
        return None
    return next(role for family, role in ROLE_OF_FAMILY.items() if f"rate({family}{{" in expr)


def pod_body(role: str, expr: str, pods, at: float = AT) -> str:
    """A pod query's answer from `pods` (role -> node -> (namespace, name, uid, rate)), for the
    nodes the query names."""
    named = re.search(r'node=~"((?:[^"\\]|\\.)*)"', expr)
    wanted = re.compile(json.loads(f'"{named.group(1)}"')) if named else None  # as the database reads it
    result = [{"metric": {"node": node, "pod_namespace": ns, "pod_name": name, "pod_uid": uid},
               "value": [at, repr(rate)]}
              for node, (ns, name, uid, rate) in (pods.get(role) or {}).items()
              if wanted is None or wanted.fullmatch(node)]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


def vector_body(signal: str, fleet=FLEET, age_s: float = 1.0, at: float = AT) -> str:
    # The tick query's answer for one series per node: each node's value when fresh.
    result = [{"metric": {"node": node, "ksense_value": repr(values[signal])}, "value": [at, "1"]}
              for node, values in fleet.items() if signal in values and age_s <= LONG_WIN_S]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


def stale_body(signal: str, fleet=FLEET, age_s: float = 1.0, at: float = AT) -> str:
    """The stale follow-up's answer: the newest timestamp of the nodes without a fresh series."""
    result = [{"metric": {"node": node}, "value": [at, repr(at - age_s)]}
              for node, values in fleet.items() if signal in values and age_s > LONG_WIN_S]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


def answering(fleet=FLEET, age_s: float = 1.0, overrides=None, pods=None):
    overrides = overrides or {}

    def handler(path, params):
        if (role := role_of(params["query"][0])) is not None:
            return Reply(body=pod_body(role, params["query"][0], pods or {}))
        if params["query"][0] in STALE_OF:
            return Reply(body=stale_body(STALE_OF[params["query"][0]], fleet, age_s))
        signal = SIGNAL_OF[params["query"][0]]
        if signal in overrides:
            return overrides[signal]
        return Reply(body=vector_body(signal, fleet, age_s))

    return handler


def in_waves(asked: list[str]) -> list:
    """A tick's queries as the source sends them: the first alone, then every other input's
    together (in any order), then the stale follow-ups (in any order)."""
    return [asked[0], sorted(asked[1:PER_TICK]), sorted(asked[PER_TICK:])]


def source(url: str, **kwargs) -> PrometheusSource:
    kwargs.setdefault("timeout_s", 2.0)
    kwargs.setdefault("long_win_s", LONG_WIN_S)
    return PrometheusSource(url, **kwargs)


def test_one_query_per_signal_all_at_the_same_time(fake_server):
    fake_server.handler = answering()
    src = source(fake_server.url)
    assert len(src.fetch(NOW).nodes) == 2 and len(fake_server.requests) == FIRST_TICK
    fake_server.requests.clear()
    got = src.fetch(NOW)
    assert got.ok and dict(got.errors) == {}
    assert len(fake_server.requests) == PER_TICK
    assert {p["time"][0] for _, p in fake_server.requests} == {f"{AT:.3f}"}
    assert {path for path, _ in fake_server.requests} == {"/api/v1/query"}
    a, b = got.nodes["a"], got.nodes["b"]
    assert a.missing == () and b.missing == ()
    assert a.friction_signed == 4.0 and b.friction_signed == -9.0
    assert b.cpu_pct == pytest.approx(90.0) and b.psi_pct == pytest.approx(50.0)


def test_the_tick_query_is_each_nodes_value_and_its_exceptions():
    """Per node one value (`max by (node)`, exact for one fresh series), plus the nodes with
    duplicate series and the stale series, tagged; the history reads every series with its own
    timestamp (the pairing is per series, in scorer/core/inputs.py)."""
    identity = 'job="ksense-exporter",namespace="ksense"'
    assert identity == n.EXPORTER_SELECTOR
    for signal, expr in QUERIES.items():
        sel = core.selectors(identity)[signal]
        assert sel.startswith(f"{{{identity}", sel.index("{"))
        assert expr == f'count_values by (node) ("ksense_value", last_over_time({sel}[60s]))'
        assert stale_query(sel, LONG_WIN_S) == f"max by (node) (timestamp({sel})) < time() - 60"
        assert HISTORY_QUERIES[signal] == f'{sel} or label_replace(timestamp({sel}), "{TS_LABEL}", "1", "", "")'
    assert f'last_over_time({n.SOURCE_INFO.name}{{{identity},source="procfs"}}[60s])' in QUERIES[core.PROCFS]
    assert f"last_over_time({n.PRESSURE_WORST.name}{{{identity}}}[60s])" in QUERIES[core.PSI]
    assert "[75s]" in tick_queries(identity, 75.0)[core.CPU]


def test_the_source_asks_for_its_selector_only(fake_server):
    """Whose series: the default is the deploy/ scrape identity; a configured one replaces it;
    "" (every publisher) is the bare family name."""
    fake_server.handler = answering()
    source(fake_server.url).fetch(NOW)
    asked = [p["query"][0] for _, p in fake_server.requests]
    assert in_waves(asked) == in_waves([*QUERIES.values(), *STALE_ASKED])
    fake_server.requests.clear()
    fake_server.handler = lambda path, params: Reply(body=vector_body("friction"))
    src = source(fake_server.url, selector='job="mine"')
    src.fetch(NOW)
    fake_server.requests.clear()
    src.fetch(NOW)  # nodes known, each with every input fresh: no follow-up
    asked = [p["query"][0] for _, p in fake_server.requests]
    assert in_waves(asked) == in_waves([*tick_queries('job="mine"', LONG_WIN_S).values()])
    assert all('{job="mine"' in q and "ksense-exporter" not in q for q in asked)
    assert queries("")[core.FRICTION].startswith(f"{n.FRICTION.name} or ")
    assert f"last_over_time({n.FRICTION.name}[" in tick_queries("", LONG_WIN_S)[core.FRICTION]


PODS = {n.POD_ROLE_VICTIM: {"a": ("shop", "checkout", "u-1", 0.4), "b": ("", "", "u-9", 0.0)},
        n.POD_ROLE_AGGRESSOR: {"a": ("batch", "nightly", "u-2", 0.97), "b": ("", "", "u-8", 0.5)},
        n.POD_ROLE_IO_AGGRESSOR: {"a": ("backup", "restic", "u-3", 0.7)}}


def test_the_tick_names_no_pods_and_top_pods_names_those_of_the_nodes_asked(fake_server):
    """`fetch` sends no pod query; `top_pods` sends one per role naming only the nodes asked: the
    `other` sum is excluded in PromQL, a rate of 0 names nobody, a pod known by UID only keeps its
    UID."""
    fake_server.handler = answering(pods=PODS)
    src = source(fake_server.url)
    got = src.fetch(NOW)
    assert got.nodes["a"].victim is None and not any(role_of(p["query"][0]) for _, p in fake_server.requests)
    fake_server.requests.clear()
    pods, errors = src.top_pods(["a", "b"], NOW)
    assert errors == {} and len(fake_server.requests) == len(core.POD_SERIES)
    a, b = ({role: by_node.get(node) for role, by_node in pods.items()} for node in "ab")
    assert (a["victim"].shown, a["victim"].rate, a["aggressor"].shown) == ("shop/checkout", 0.4, "batch/nightly")
    assert (a["io_aggressor"].shown, a["io_aggressor"].rate) == ("backup/restic", 0.7)
    assert b["victim"] is None and b["aggressor"].shown == "uid u-8" and b["io_aggressor"] is None
    for _, params in fake_server.requests:
        expr = params["query"][0]
        assert expr.startswith("topk by (node) (1, rate(") and 'pod_uid!="other"' in expr
        assert n.EXPORTER_SELECTOR in expr and 'node=~"a|b"' in expr and params["time"] == [f"{AT:.3f}"]
    fake_server.requests.clear()
    pods, _ = src.top_pods(["b"], NOW)
    assert "a" not in pods[n.POD_ROLE_VICTIM] and pods[n.POD_ROLE_AGGRESSOR]["b"].uid == "u-8"
    fake_server.requests.clear()
    assert src.top_pods([], NOW) == ({}, {}) and fake_server.requests == []
    other = source(fake_server.url, selector='job="mine"')
    other.fetch(NOW)
    fake_server.requests.clear()
    other.top_pods(["a"], NOW)
    assert all('{job="mine",' in p["query"][0] and "ksense-exporter" not in p["query"][0]
               for _, p in fake_server.requests)


def test_many_denied_nodes_are_named_in_bounded_groups_then_read_from_every_nodes_pods(fake_server):
    """Names go POD_QUERY_CHARS at a time, each node in one query per role; past
    POD_QUERY_GROUPS such queries, each role's one query reads every node's pods (no regex) and
    only the nodes asked are kept."""
    fleet = {f"ip-10-0-{i}.eu-west-1.compute.internal": ("ns", f"p{i}", f"u{i}", 1.0) for i in range(2000)}
    many = {role: {**by_node, **fleet} for role, by_node in PODS.items()}
    fake_server.handler = answering(pods=many)
    src = source(fake_server.url)
    some = sorted(fleet)[:600]
    pods, errors = src.top_pods(some, NOW)
    sent = [p["query"][0] for _, p in fake_server.requests]
    assert errors == {} and 1 < len(sent) // len(core.POD_SERIES) <= POD_QUERY_GROUPS
    assert all(len(re.search(r'node=~"([^"]*)"', q).group(1)) <= POD_QUERY_CHARS for q in sent)
    assert all(sorted(by_node) == some for by_node in pods.values())
    fake_server.requests.clear()
    every = sorted(fleet)[:1999]
    pods, errors = src.top_pods(every, NOW)
    sent = [p["query"][0] for _, p in fake_server.requests]
    assert errors == {} and len(sent) == len(core.POD_SERIES) and not any("node=~" in q for q in sent)
    assert all(sorted(by_node) == every for by_node in pods.values())


def test_a_long_expression_goes_as_a_form_post_a_short_one_as_a_get(fake_server):
    fake_server.handler = answering(pods=PODS)
    src = source(fake_server.url)
    src.top_pods(["a", "b"], NOW)
    assert set(fake_server.methods) == {"GET"}
    fake_server.methods.clear()
    fake_server.requests.clear()
    long_names = [f"ip-10-0-{i // 250}-{i % 250}.eu-west-1.compute.internal" for i in range(150)]
    assert len(core.pod_queries(n.EXPORTER_SELECTOR, long_names)[n.POD_ROLE_VICTIM]) > FORM_QUERY_CHARS
    src.top_pods(long_names, NOW)
    assert fake_server.methods == ["POST"] * len(core.POD_SERIES)
    assert all(p["time"] == [f"{AT:.3f}"] and "node=~" in p["query"][0] for _, p in fake_server.requests)


def test_stale_samples_are_missing_not_fresh(fake_server):
    fake_server.handler = answering(age_s=75.0)
    got = source(fake_server.url).fetch(NOW)
    assert got.ok
    assert got.nodes["a"].missing == n.INPUTS
    assert got.nodes["a"].why["friction"] == "stale 75s"


def test_a_node_with_duplicate_series_is_read_per_series_in_one_more_request(fake_server):
    """The tick query names two values of `a` for friction: one more request for friction only,
    whose per-series answer decides `a` (the newest series, 4, not the older larger 90); a
    failed second request fails that input like any other."""
    friction = core.selectors(n.EXPORTER_SELECTOR)[core.FRICTION]
    detail = [
        {"metric": {"__name__": n.FRICTION.name, "node": "a", "instance": "new"}, "value": [AT, "4"]},
        {"metric": {"__name__": n.FRICTION.name, "node": "a", "instance": "old"}, "value": [AT, "90"]},
        {"metric": {"node": "a", "instance": "new", TS_LABEL: "1"}, "value": [AT, repr(AT - 1)]},
        {"metric": {"node": "a", "instance": "old", TS_LABEL: "1"}, "value": [AT, repr(AT - 30)]},
    ]
    tick = json.loads(vector_body(core.FRICTION))
    tick["data"]["result"] = [e for e in tick["data"]["result"] if e["metric"]["node"] != "a"] + [
        {"metric": {"node": "a", "ksense_value": v}, "value": [AT, "1"]} for v in ("4", "90")]
    second = [Reply(body=json.dumps({"status": "success", "data": {"resultType": "vector", "result": detail}}))]
    normal = answering()

    def handler(path, params):
        if params["query"][0] == detail_query(friction, LONG_WIN_S):
            return second[0]
        if SIGNAL_OF.get(params["query"][0]) == core.FRICTION:
            return Reply(body=json.dumps(tick))
        return normal(path, params)

    fake_server.handler = handler
    src = source(fake_server.url)
    got = src.fetch(NOW)
    assert len(fake_server.requests) == FIRST_TICK + 1
    assert [p["query"][0] for _, p in fake_server.requests].count(detail_query(friction, LONG_WIN_S)) == 1
    assert got.nodes["a"].friction == 4.0 and got.nodes["b"].friction == 9.0 and dict(got.errors) == {}
    second[0] = Reply(503, "{}")
    got = src.fetch(NOW)
    assert got.nodes["a"].why["friction"] == "http 503"


def test_partial_answer_leaves_only_the_absent_inputs_missing(fake_server):
    fleet = {"a": FLEET["a"], "b": {k: v for k, v in FLEET["b"].items() if k not in ("energy", "psi")}}
    fake_server.handler = answering(fleet)
    got = source(fake_server.url).fetch(NOW)
    assert got.nodes["a"].missing == ()
    assert got.nodes["b"].missing == ("energy", "psi")
    assert got.nodes["b"].why == {"energy": "absent", "psi": "absent"}


def test_http_503_costs_one_request_and_keeps_known_nodes_denied(fake_server):
    src = source(fake_server.url)
    fake_server.handler = answering()
    src.fetch(NOW)
    fake_server.requests.clear()
    fake_server.handler = lambda path, params: Reply(503, json.dumps({"status": "error", "error": "overloaded"}))
    got = src.fetch(NOW)
    assert len(fake_server.requests) == 1  # the rest of the tick is skipped: no retry storm
    assert not got.ok
    assert dict(got.errors) == {"http_503": 1}
    assert sorted(got.nodes) == ["a", "b"]
    assert got.nodes["a"].missing == n.INPUTS
    assert set(got.nodes["a"].why.values()) == {"http 503"}


class InFlight:
    """Wraps a handler and keeps the most requests in flight at once, and how many were in flight
    beside the tick's first. Each answer but the first is held until `together` requests are in
    flight (or `hold_s` passed: the tail of a wave), so the count does not depend on how fast
    the client's threads get the CPU."""

    def __init__(self, handler, together: int, hold_s: float = 1.0):
        self._handler, self._together, self._hold_s = handler, together, hold_s
        self._cond = threading.Condition()
        self.now = self.most = self.seen = 0
        self.beside_first = 0

    def __call__(self, path, params):
        with self._cond:
            self.now += 1
            self.seen += 1
            first = self.seen == 1
            self.most = max(self.most, self.now)
            self._cond.notify_all()
        try:
            reply = self._handler(path, params)
            with self._cond:
                if first:  # anything sent beside it shows up within this wait
                    self._cond.wait_for(lambda: self.now > 1, timeout=0.2)
                    self.beside_first = self.now - 1
                else:
                    self._cond.wait_for(lambda: self.now >= self._together, timeout=self._hold_s)
            return reply
        finally:
            with self._cond:
                self.now -= 1
                self._cond.notify_all()


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_the_first_request_goes_alone_then_concurrency_at_a_time(fake_server, concurrency):
    """The same answer whatever the concurrency; `concurrency` requests in flight after the first
    (which goes alone), never more."""
    fake_server.handler = answering()
    expected = source(fake_server.url, concurrency=1).fetch(NOW).nodes
    fake_server.handler = counter = InFlight(answering(), together=concurrency)
    got = source(fake_server.url, concurrency=concurrency).fetch(NOW)
    assert got.ok and got.nodes == expected
    assert len(fake_server.requests) == 2 * FIRST_TICK
    assert counter.beside_first == 0
    assert counter.most == concurrency


def test_a_database_dying_mid_tick_costs_the_requests_in_flight_and_keeps_what_was_read(fake_server):
    """The first answer comes, then every request fails (5xx): the 3 requests in flight fail,
    the rest of the tick is not sent, the first input is kept and every other one is missing."""
    src = source(fake_server.url, concurrency=3)
    fake_server.handler = answering()
    src.fetch(NOW)
    fake_server.requests.clear()
    good = answering()
    down = Reply(503, json.dumps({"status": "error", "error": "shutting down"}))
    fake_server.handler = InFlight(lambda path, params: good(path, params) if len(fake_server.requests) == 1
                                   else down, together=3)
    got = src.fetch(NOW)
    assert len(fake_server.requests) == 1 + 3
    assert dict(got.errors) == {"http_503": 3}
    assert next(iter(src.queries)) == core.FRICTION  # read: the others failed or were not asked
    assert got.nodes["a"].friction_signed == 4.0
    assert got.nodes["a"].missing == tuple(i for i in n.INPUTS if i != core.FRICTION)
    assert set(got.nodes["a"].why.values()) == {"http 503"}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_failed_stale_follow_up_loses_only_the_stale_ages(fake_server, concurrency):
    """On the first tick every input gets a stale follow-up; when those fail (5xx), the fresh
    values read before them stay and nothing more is sent."""
    stale_down = Reply(503, json.dumps({"status": "error", "error": "overloaded"}))
    good = answering()
    fake_server.handler = lambda path, params: stale_down if params["query"][0] in STALE_OF else good(path, params)
    got = source(fake_server.url, concurrency=concurrency).fetch(NOW)
    assert 1 <= got.errors["http_503"] <= min(concurrency, len(STALE_ASKED)) and len(got.errors) == 1
    assert got.nodes["a"].missing == () and got.nodes["a"].friction_signed == 4.0
    assert got.nodes["b"].missing == () and got.nodes["b"].cpu_pct == pytest.approx(90.0)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_failed_pod_queries_are_counted_and_name_nobody(fake_server, concurrency):
    """A database failing at the pod queries (5xx), or answering them with the wrong shape:
    every failed request counted by reason, nobody named, nothing raised."""
    src = source(fake_server.url, concurrency=concurrency)
    down = Reply(503, json.dumps({"status": "error", "error": "shutting down"}))
    fake_server.handler = lambda path, params: down
    pods, errors = src.top_pods(["a", "b"], NOW)
    # After a fatal failure the roles not yet sent are not (`Skipped`, not counted).
    assert not any(pods.values()) and set(errors) == {"http_503"}
    assert errors["http_503"] == len(fake_server.requests) <= min(concurrency, len(core.POD_SERIES))
    odd = Reply(body=json.dumps({"status": "success", "data": {"resultType": "vector", "result": ["x", "y"]}}))
    fake_server.handler = lambda path, params: odd
    pods, errors = src.top_pods(["a", "b"], NOW)
    assert errors == {"bad_response": len(core.POD_SERIES)} and not any(pods.values())


def test_no_pod_query_after_a_tick_that_found_the_database_failing(fake_server):
    """The database dies after the tick's first answer: `top_pods` sends nothing then (a dying
    database costs the tick's requests in flight, no more); once a tick succeeds, it asks again."""
    src = source(fake_server.url, concurrency=3)
    good = answering(pods=PODS)
    fake_server.handler = good
    src.fetch(NOW)
    fake_server.requests.clear()
    down = Reply(503, json.dumps({"status": "error", "error": "shutting down"}))
    fake_server.handler = lambda path, params: good(path, params) if len(fake_server.requests) == 1 else down
    assert src.fetch(NOW).ok
    sent = len(fake_server.requests)
    assert src.top_pods(["a"], NOW) == ({}, {}) and len(fake_server.requests) == sent
    fake_server.handler = good
    src.fetch(NOW)
    assert src.top_pods(["a"], NOW)[0][n.POD_ROLE_VICTIM]["a"].uid == "u-1"


def test_concurrency_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        PrometheusSource("http://127.0.0.1:1", concurrency=0)


def test_http_422_on_one_query_fails_only_that_input(fake_server):
    bad = Reply(422, json.dumps({"status": "error", "errorType": "execution", "error": "many-to-many"}))
    fake_server.handler = answering(overrides={core.PSI: bad})
    got = source(fake_server.url).fetch(NOW)
    assert len(fake_server.requests) == FIRST_TICK - 1  # no stale follow-up for the failed input
    assert got.ok
    assert dict(got.errors) == {"http_422": 1}
    assert got.nodes["a"].missing == ("psi",)
    assert got.nodes["a"].why == {"psi": "http 422"}


def test_timeout_costs_one_request(fake_server):
    fake_server.handler = lambda path, params: Reply(body=vector_body("friction"), delay_s=2.0)
    src = source(fake_server.url, timeout_s=0.2)
    got = src.fetch(NOW)
    assert len(fake_server.requests) == 1
    assert not got.ok and dict(got.errors) == {"timeout": 1}
    assert got.nodes == {}  # nothing known yet


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(200, "<html>proxy login</html>", "text/html"), "bad_response"),
        (Reply(200, json.dumps({"status": "error", "error": "boom"})), "query_error"),
        (Reply(200, json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}})),
         "bad_response"),
        (Reply(200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": [{"x": 1}]}})),
         "bad_response"),
    ],
    ids=["not json", "status error", "wrong result type", "malformed element"],
)
def test_malformed_answers_are_counted_per_query(fake_server, reply, reason):
    src = source(fake_server.url)
    fake_server.handler = answering()
    src.fetch(NOW)
    fake_server.handler = lambda path, params: reply
    got = src.fetch(NOW)
    assert not got.ok
    assert dict(got.errors) == {reason: PER_TICK}
    assert got.nodes["a"].missing == n.INPUTS
    assert got.nodes["a"].why["friction"] == shown(reason, prom.NAME)


def test_empty_vectors_mean_absent_and_are_counted(fake_server):
    src = source(fake_server.url)
    fake_server.handler = answering()
    src.fetch(NOW)
    fake_server.handler = answering(fleet={})
    got = src.fetch(NOW)
    assert got.ok
    assert dict(got.errors) == {"empty": 2}  # frozen and cpu: every exporter exports them
    assert got.nodes["b"].missing == n.INPUTS
    assert set(got.nodes["b"].why.values()) == {"absent"}


def test_a_trickling_prometheus_fails_the_tick_at_the_deadline_not_per_read():
    """A byte every 0.1 s: a per-read timeout of 0.5 s never fires. The deadline bounds the
    query's whole answer, the rest of the tick is skipped (timeout is fatal), and known nodes
    turn missing."""
    server = TrickleServer(prometheus_answer(("a",)), trickle=False, byte_every_s=0.1)
    try:
        src = source(server.url, timeout_s=0.5)
        assert src.fetch(NOW).nodes["a"].missing == ()
        server.trickle = True
        done: list = []
        worker = threading.Thread(target=lambda: done.append(src.fetch(NOW)), daemon=True)
        worker.start()
        worker.join(timeout=5)
        assert done, "fetch still waiting on a trickling answer after 5 s (deadline 0.5 s)"
        got = done[0]
        assert dict(got.errors) == {"timeout": 1} and not got.ok
        assert got.nodes["a"].missing == n.INPUTS and set(got.nodes["a"].why.values()) == {"timeout"}
        trickled = [s for s in server.settled() if s.trickled]
        assert len(trickled) == 1 and trickled[0].seconds < 0.5 + 0.4
    finally:
        server.close()


def test_connection_refused_is_prometheus_down():
    src = source(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    got = src.fetch(NOW)
    assert not got.ok and dict(got.errors) == {"unreachable": 1}


def test_known_nodes_are_forgotten_after_forget_after_s(fake_server):
    wall = [1000.0]
    src = source(fake_server.url, forget_after_s=600.0, clock=lambda: wall[0])
    fake_server.handler = answering()
    src.fetch(NOW)
    fake_server.handler = answering(fleet={"a": FLEET["a"]})
    wall[0] += 599
    assert sorted(src.fetch(NOW).nodes) == ["a", "b"]
    wall[0] += 2
    assert sorted(src.fetch(NOW).nodes) == ["a"]


def test_chunks_respect_the_point_limit_and_align_to_start():
    spans = list(chunks(0.0, 25_000.0, 1.0))
    assert spans == [(0.0, 10_999.0), (11_000.0, 21_999.0), (22_000.0, 25_000.0)]
    assert list(chunks(10.0, 10.0, 1.0)) == [(10.0, 10.0)]


def test_history_rebuilds_inputs_per_step(fake_server):
    start = AT - 3

    def handler(path, params):
        assert path == "/api/v1/query_range"
        signal = SIGNAL_OF[params["query"][0]]
        lo, hi, step = (float(params[k][0]) for k in ("start", "end", "step"))
        steps = [lo + k * step for k in range(int((hi - lo) / step) + 1)]
        result = []
        for node, values in FLEET.items():
            if signal not in values or (node == "b" and signal == "friction"):
                continue
            result.append({"metric": {"node": node}, "values": [[t, repr(values[signal])] for t in steps]})
            # the sample is 90 s old at the first step only
            stamps = [[t, repr(t - (90 if t == lo else 1))] for t in steps]
            result.append({"metric": {"node": node, TS_LABEL: "1"}, "values": stamps})
        return Reply(body=json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}))

    fake_server.handler = handler
    src = source(fake_server.url)
    history = src.history(datetime.fromtimestamp(start, UTC), NOW, 1.0)
    assert len(fake_server.requests) == len(core.SIGNALS)
    assert [h.time.timestamp() for h in history] == [start, start + 1, start + 2, start + 3]
    assert history[0].nodes["a"].missing == n.INPUTS  # stale at that step
    assert history[1].nodes["a"].missing == ()
    assert history[1].nodes["b"].missing == ("friction",)
    assert history[1].nodes["b"].why == {"friction": "absent"}


def test_history_is_empty_when_prometheus_fails(fake_server):
    fake_server.handler = lambda path, params: Reply(503, "{}")
    src = source(fake_server.url)
    assert src.history(datetime.fromtimestamp(AT - 10, UTC), NOW, 1.0) == []

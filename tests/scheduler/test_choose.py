"""Node choice (scheduler.core.choose) and queue order (scheduler.core.queue)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.choose import Candidate, choice_key, choose, choose_node, decide
from scheduler.core.filters import NodeInfo, NodeTable, ScoreRecord, ScoreTable, node_info, pod_view
from scheduler.core.pods import Resources, creation_key, parse_timestamp
from scheduler.core.queue import queue_key
from tests.scheduler.test_filters import make_node, make_pod


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        ("nothing feasible", [], None),
        ("single", [Candidate("a", 50.0, 0)], "a"),
        ("lowest score wins", [Candidate("a", 40.0, 100), Candidate("b", 30.0, 0)], "b"),
        ("lowest score wins over more free cpu", [Candidate("a", 30.1, 9000), Candidate("b", 30.0, 10)], "b"),
        ("score tie: most free cpu", [Candidate("a", 30.0, 100), Candidate("b", 30.0, 900)], "b"),
        ("score and cpu tie: name", [Candidate("b", 30.0, 100), Candidate("a", 30.0, 100)], "a"),
        ("negative free cpu still ordered", [Candidate("a", 30.0, -5), Candidate("b", 30.0, -1)], "b"),
        ("NaN score sorts last", [Candidate("a", math.nan, 9000), Candidate("b", 99.0, 0)], "b"),
        ("order of input is irrelevant", [Candidate("c", 20.0, 5), Candidate("a", 20.0, 5), Candidate("b", 20.0, 5)],
         "a"),
    ],
)
def test_choose(name, candidates, expected):
    got = choose(candidates)
    assert (None if got is None else got.name) == expected, name
    assert choose(reversed(candidates)) == got, name


def test_choice_key_is_score_then_free_cpu_then_name():
    assert choice_key(Candidate("x", 10.0, 250)) == (10.0, -250, "x")


def test_decide_picks_lowest_score_then_free_cpu_after_the_pod():
    nodes = [
        node_info(make_node("busy", cpu="4"), Resources(cpu=3000, pods=1)),
        node_info(make_node("idle", cpu="4")),
        node_info(make_node("calm", cpu="8")),
        node_info(make_node("denied", cpu="64")),
    ]
    scores = {
        "busy": ScoreRecord(True, 20.0, True),
        "idle": ScoreRecord(True, 20.0, True),
        "calm": ScoreRecord(True, 25.0, True),
        "denied": ScoreRecord(False, 10.0, True),
    }
    decision = decide(make_pod(cpu="500m"), nodes, scores)
    assert decision.node == "idle"
    assert decision.chosen == Candidate("idle", 20.0, 3500)  # free cpu after this pod
    assert (decision.feasible, decision.total) == (3, 4)
    assert {n: f.reason for n, f in decision.failures.items()} == {"denied": "fuzzy_deny"}
    # "idle" cannot take a 4-core pod: the tie is gone, the next score wins.
    assert decide(make_pod(cpu="5"), nodes, scores).node == "calm"
    assert decide(make_pod(cpu="100"), nodes, scores).node is None


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 8000), st.integers(0, 8000), st.sampled_from([10.0, 20.0, 20.5, math.inf]),
                  st.booleans()),
        min_size=1, max_size=12,
    ),
    pod_cpu=st.integers(0, 3000),
)
def test_choose_node_equals_choose_over_all_candidates(rows, pod_cpu):
    nodes = [NodeInfo(f"n{i:02d}", Resources(cpu=a, memory=2**40, pods=10), Resources(cpu=r))
             for i, (a, r, _, _) in enumerate(rows)]
    scores = {f"n{i:02d}": ScoreRecord(allowed, s, True) for i, (_, _, s, allowed) in enumerate(rows)}
    table, score_table = NodeTable.build(nodes), ScoreTable(scores)
    view = pod_view(make_pod(cpu=f"{pod_cpu}m"))
    decision = decide(view, table, score_table)
    feasible = [n for n in nodes if n.name not in decision.failures]
    expected = choose(Candidate(n.name, scores[n.name].score, n.allocatable.cpu - n.requested.cpu - pod_cpu)
                      for n in feasible)
    assert decision.chosen == expected
    assert choose_node(view.requests, {n.name for n in feasible}, table, score_table) == expected


# --- queue order ----------------------------------------------------------------------------
def queued(name: str, prio: int | None, created: str | None) -> dict:
    pod = make_pod(name)
    if prio is not None:
        pod["spec"]["priority"] = prio
    if created is not None:
        pod["metadata"]["creationTimestamp"] = created
    return pod


def test_queue_order_priority_then_age_then_name():
    pods = [
        queued("low-old", 0, "2024-05-01T10:00:00Z"),
        queued("high-new", 1000, "2024-05-01T12:00:00Z"),
        queued("high-old", 1000, "2024-05-01T11:00:00Z"),
        queued("default-prio", None, "2024-05-01T09:00:00Z"),
        queued("no-time", 0, None),
        queued("b-same", 0, "2024-05-01T10:00:00Z"),
        queued("negative", -10, "2020-01-01T00:00:00Z"),
    ]
    order = [p["metadata"]["name"] for p in sorted(pods, key=queue_key)]
    assert order == ["high-old", "high-new", "default-prio", "b-same", "low-old", "no-time", "negative"]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("Z", "2024-05-01T12:00:00Z", 1714564800.0),
        ("offset", "2024-05-01T14:00:00+02:00", 1714564800.0),
        ("millis", "2024-05-01T12:00:00.250Z", 1714564800.25),
        ("nanos (RFC 3339 allows any digits)", "2024-05-01T12:00:00.123456789Z", 1714564800.123456),
        ("one fractional digit", "2024-05-01T12:00:00.5Z", 1714564800.5),
        ("no zone is malformed", "2024-05-01T12:00:00", math.inf),
        ("date only", "2024-05-01", math.inf),
        ("garbage", "yesterday", math.inf),
        ("missing", None, math.inf),
    ],
)
def test_parse_timestamp(name, text, expected):
    assert parse_timestamp(text) == pytest.approx(expected), name


def test_creation_key_reads_metadata():
    assert creation_key(queued("p", None, "1970-01-01T00:00:10Z")) == 10.0

"""kube-scheduler extender verbs (scorer/core/extender.py) and their HTTP routes.

fixtures/extender/ holds ExtenderArgs as kube-scheduler's Go client encodes them (field names of
k8s.io/kube-scheduler/extender/v1 without json tags, the unused form as null): one for an
extender with nodeCacheCapable=false (`Nodes`) and one with nodeCacheCapable=true (`NodeNames`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scorer.app import create_app
from scorer.core import extender
from scorer.recorder import Recorder
from tests.scorer.fake_scorer_app import call, fake_explain, report, results

FIXTURES = Path(__file__).parent / "fixtures" / "extender"
DENIED = {
    "worker-3": "ksense fuzzy deny (high score)",
    "worker-4": "ksense fuzzy deny (missing metrics)",
}
UNKNOWN = {"worker-5": "ksense: node unknown to the scorer (no score)"}


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def app(ready: bool = True, stale: bool = False):
    fixed = results() if ready else None
    return create_app(results=lambda: fixed, ready=lambda: ready and not stale, stale=lambda: stale,
                      explain=fake_explain, recorder=Recorder(None))


def test_filter_with_node_names_answers_with_node_names():
    answer = extender.filter(load("filter_nodenames.request.json"), results())
    assert answer == {
        "NodeNames": ["worker-1", "worker-2"],
        "FailedNodes": DENIED,
        "FailedAndUnresolvableNodes": UNKNOWN,
        "Error": "",
    }


def test_filter_with_nodes_answers_with_the_same_node_objects():
    args = load("filter_nodes.request.json")
    answer = extender.filter(args, results())
    assert set(answer) == {"Nodes", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
    assert answer["Nodes"]["items"] == args["Nodes"]["items"][:2]  # whole objects, untouched
    assert answer["Nodes"]["metadata"] == {}
    assert answer["FailedNodes"] == DENIED
    assert answer["FailedAndUnresolvableNodes"] == UNKNOWN
    assert answer["Error"] == ""
    assert len(args["Nodes"]["items"]) == 5  # the input is not modified


def test_filter_messages_are_per_cause_so_kube_scheduler_can_count_them():
    r = results()
    more = {**r.reports, "x": report("x", "deny", 75.0, "high"), "y": report("y", "deny", 58.0, "medium",
                                                                              medium_band="medium-mid")}
    answer = extender.filter({"NodeNames": ["worker-3", "x", "y"]}, type(r)(r.time, r.source, more))
    assert answer["FailedNodes"] == {
        "worker-3": "ksense fuzzy deny (high score)",
        "x": "ksense fuzzy deny (high score)",
        "y": "ksense fuzzy deny (medium-mid score)",
    }


def test_filter_before_the_first_evaluation_is_an_error_in_the_protocol():
    assert extender.filter(load("filter_nodenames.request.json"), None) == {"Error": extender.NOT_READY}


@pytest.mark.parametrize("name", ["filter_nodes.request.json", "filter_nodenames.request.json"])
def test_prioritize_maps_score_to_priority_in_the_order_given(name):
    assert extender.prioritize(load(name), results()) == [
        {"Host": "worker-1", "Score": 8},  # 17.886
        {"Host": "worker-2", "Score": 5},  # 50.256
        {"Host": "worker-3", "Score": 3},  # 73.26
        {"Host": "worker-4", "Score": 0},  # 100 (missing inputs)
        {"Host": "worker-5", "Score": 0},  # unknown
    ]


@pytest.mark.parametrize(
    ("score", "priority"),
    [
        (0.0, 10), (4.99, 10), (5.0, 10), (5.01, 9), (15.0, 9), (17.2, 8), (25.0, 8), (45.0, 6), (50.0, 5),
        (55.0, 5), (60.0, 4), (70.0, 3), (87.9, 1), (95.0, 1), (95.01, 0), (100.0, 0),
        (-3.0, 10), (140.0, 0), (math.nan, 0), (math.inf, 0),
    ],
)
def test_priority_table(score, priority):
    assert extender.priority(score) == priority


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([], "not a JSON object"),
        ({}, "needs Nodes or NodeNames"),
        ({"Nodes": None, "NodeNames": None}, "needs Nodes or NodeNames"),
        ({"NodeNames": "worker-1"}, "list of strings"),
        ({"NodeNames": ["worker-1", 2]}, "list of strings"),
        ({"Nodes": []}, "NodeList with items"),
        ({"Nodes": {"items": None}}, "NodeList with items"),
        ({"Nodes": {"items": [{"metadata": {}}]}}, "metadata.name"),
        ({"Nodes": {"items": ["worker-1"]}}, "metadata.name"),
    ],
)
def test_bad_args(args, why):
    for verb in (lambda a: extender.filter(a, results()), lambda a: extender.prioritize(a, results())):
        with pytest.raises(extender.BadArgs, match=why):
            verb(args)


# --- over HTTP ------------------------------------------------------------------------------------
def test_http_filter_and_prioritize():
    body = (FIXTURES / "filter_nodenames.request.json").read_bytes()
    status, headers, data = call(app(), "POST", "/filter", body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(data)["NodeNames"] == ["worker-1", "worker-2"]
    status, _, data = call(app(), "POST", "/prioritize", body)
    assert status == 200 and json.loads(data)[0] == {"Host": "worker-1", "Score": 8}


def test_http_not_ready():
    body = (FIXTURES / "filter_nodes.request.json").read_bytes()
    status, _, data = call(app(ready=False), "POST", "/filter", body)
    assert (status, json.loads(data)) == (200, {"Error": extender.NOT_READY})
    status, _, data = call(app(ready=False), "POST", "/prioritize", body)
    assert (status, json.loads(data)) == (503, {"error": "not ready"})


def test_stale_results_filter_like_no_results():
    """Old allows must not pass for current ones: the protocol's Error, with its own message."""
    assert extender.filter(load("filter_nodenames.request.json"), results(), stale=True) == {"Error": extender.STALE}
    body = (FIXTURES / "filter_nodes.request.json").read_bytes()
    status, _, data = call(app(stale=True), "POST", "/filter", body)
    assert (status, json.loads(data)) == (200, {"Error": extender.STALE})
    assert call(app(stale=True), "GET", "/readyz")[0] == 503


@pytest.mark.parametrize("path", ["/filter", "/prioritize"])
def test_http_bad_requests(path):
    assert call(app(), "POST", path, b'{"NodeNames": 3}')[0] == 400
    assert call(app(), "POST", path, b"{")[0] == 400
    assert call(app(), "POST", path, b"{}", content_type="text/plain")[0] == 415
    assert call(app(), "POST", path, b"{}", content_length=str(33 << 20))[0] == 413
    assert call(app(), "GET", path)[0] == 405

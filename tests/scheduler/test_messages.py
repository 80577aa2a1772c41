"""FailedScheduling messages, dedupe keys and the PodScheduled condition (scheduler.core.messages)."""

from __future__ import annotations

import pytest

from scheduler.core.filters import NO_SCORE_FAILURE, Failure, ScoreRecord, fuzzy_failure, resource_failure
from scheduler.core.messages import (
    NAMED_NODES,
    NO_NODES_MESSAGE,
    condition_update,
    dedupe_key,
    detail_counts,
    failed_scheduling_message,
    invalid_pod_message,
    reason_counts,
    rfc3339,
    unschedulable_condition,
)
from scheduler.core.quantity import QuantityError

DENY = fuzzy_failure(80.0)
CPU = resource_failure(("cpu",))
CPU_MEM = resource_failure(("cpu", "memory"))
TAINT = Failure("taint", ("node(s) had untolerated taint {gpu: }",))


@pytest.mark.parametrize(
    ("name", "total", "failures", "expected"),
    [
        ("spec example", 5, [DENY, DENY, DENY, CPU, CPU],
         "0/5 nodes are available: 2 Insufficient cpu, 3 fuzzy deny (score ≥ 70)."),
        ("one reason", 1, [NO_SCORE_FAILURE], "0/1 nodes are available: 1 node(s) had no fresh fuzzy score."),
        ("a node short of two resources counts in both", 2, [CPU_MEM, CPU],
         "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."),
        ("plain string order like Go sort.Strings: 10 before 2", 12, [CPU] * 2 + [TAINT] * 10,
         "0/12 nodes are available: 10 node(s) had untolerated taint {gpu: }, 2 Insufficient cpu."),
        ("same count sorts by text", 2, [TAINT, CPU],
         "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {gpu: }."),
        ("deny bands are separate entries", 3, [fuzzy_failure(71.0), fuzzy_failure(50.0), fuzzy_failure(99.0)],
         "0/3 nodes are available: 1 fuzzy deny (score ≥ 45), 2 fuzzy deny (score ≥ 70)."),
        ("no nodes at all", 0, [], NO_NODES_MESSAGE),
    ],
)
def test_failed_scheduling_message(name, total, failures, expected):
    assert failed_scheduling_message(total, failures) == expected, name


def test_message_accepts_the_failures_mapping_from_feasible():
    failures = {"a": DENY, "b": CPU}
    assert failed_scheduling_message(2, failures) == failed_scheduling_message(2, [CPU, DENY])
    assert reason_counts(failures) == {"fuzzy_deny": 1, "resources": 1}
    assert detail_counts([CPU_MEM]) == {"Insufficient cpu": 1, "Insufficient memory": 1}


def test_invalid_pod_message_names_field_and_value():
    err = QuantityError("abc", "spec.containers[app].resources.requests.cpu", "no digits")
    assert invalid_pod_message(err) == (
        "pod has an invalid resource quantity: spec.containers[app].resources.requests.cpu: "
        "invalid quantity 'abc': no digits"
    )


def test_dedupe_key_changes_only_with_pod_or_message():
    msg = failed_scheduling_message(5, [DENY] * 5)
    assert dedupe_key("uid-1", msg) == dedupe_key("uid-1", failed_scheduling_message(5, [fuzzy_failure(75.0)] * 5))
    assert dedupe_key("uid-1", msg) != dedupe_key("uid-2", msg)
    assert dedupe_key("uid-1", msg) != dedupe_key("uid-1", failed_scheduling_message(5, [CPU] * 5))
    assert dedupe_key("uid-1", msg).startswith("uid-1/")


def test_unschedulable_condition_shape():
    assert unschedulable_condition("0/1 nodes are available: 1 Insufficient cpu.", 1714564800.9) == {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient cpu.",
        "lastProbeTime": None,
        "lastTransitionTime": "2024-05-01T12:00:00Z",
    }
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("name", "conditions", "expected_time", "writes"),
    [
        ("no condition yet", [], "2024-05-01T12:00:00Z", True),
        ("same message already set", [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                       "message": "M", "lastTransitionTime": "2024-01-01T00:00:00Z"}], None, False),
        ("new message keeps the transition time", [{"type": "PodScheduled", "status": "False",
                                                    "reason": "Unschedulable", "message": "old",
                                                    "lastTransitionTime": "2024-01-01T00:00:00Z"}],
         "2024-01-01T00:00:00Z", True),
        ("was True: a new transition", [{"type": "PodScheduled", "status": "True",
                                         "lastTransitionTime": "2024-01-01T00:00:00Z"}], "2024-05-01T12:00:00Z", True),
        ("other conditions ignored", [{"type": "Ready", "status": "False", "reason": "Unschedulable",
                                       "message": "M"}], "2024-05-01T12:00:00Z", True),
    ],
)
def test_condition_update(name, conditions, expected_time, writes):
    pod = {"status": {"conditions": conditions}}
    got = condition_update(pod, "M", 1714564800.0)
    if not writes:
        assert got is None, name
    else:
        assert got["message"] == "M" and got["status"] == "False", name
        assert got["lastTransitionTime"] == expected_time, name


def _denied(victim: str = "", aggressor: str = "") -> ScoreRecord:
    return ScoreRecord(False, 80.0, True, victim=victim, aggressor=aggressor)


def test_the_message_names_the_pods_behind_at_most_two_fuzzy_denies_in_node_order() -> None:
    failures = {"w4": DENY, "w3": DENY, "w2": DENY, "w1": CPU, "w0": DENY}
    scores = {
        "w0": _denied(),  # denied, but nobody is known: not named
        "w1": _denied("a/x", "b/y"),  # named pods, but it failed on cpu first: not named
        "w2": _denied("shop/checkout", "batch/nightly"),
        "w3": _denied(aggressor="uid 6c3c"),
        "w4": _denied("c/z", "d/w"),  # past the bound
    }
    assert failed_scheduling_message(5, failures, scores) == (
        "0/5 nodes are available: 1 Insufficient cpu, 4 fuzzy deny (score ≥ 70). "
        "Node w2: victim shop/checkout, aggressor batch/nightly. Node w3: aggressor uid 6c3c.")
    assert NAMED_NODES == 2
    # Without pod names the message is kube-scheduler's, unchanged.
    assert failed_scheduling_message(5, failures, {k: _denied() for k in scores}) == \
        failed_scheduling_message(5, failures)

"""Scheduler filters (scheduler.core.filters, scheduler.core.pods): named tables per rule.

Every table case runs through both implementations — `first_failure` (one node) and `feasible`
(the indexed batch) — and they must agree; a Hypothesis test checks the same on random
clusters.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.names import UNSCHEDULABLE_REASONS
from scheduler.core import filters as f
from scheduler.core.filters import (
    Failure,
    NodeInfo,
    NodeTable,
    NodeUsage,
    ScoreRecord,
    ScoreTable,
    Taint,
    feasible,
    first_failure,
    node_info,
    pod_view,
)
from scheduler.core.pods import (
    ZERO,
    Resources,
    Toleration,
    being_deleted,
    pod_requests,
    priority,
    usage_key,
)
from scheduler.core.quantity import QuantityError

FRESH_ALLOW = ScoreRecord(allowed=True, score=30.0, fresh=True)
MI = 2**20
GI = 2**30


# --- builders: wire-format dicts as the API returns them ------------------------------------
def make_node(
    name: str = "n1",
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    eph: str | None = "100Gi",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    ready: str | None = "True",
    unschedulable: bool = False,
) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods}
    if eph is not None:
        allocatable["ephemeral-storage"] = eph
    conditions = [{"type": "MemoryPressure", "status": "False"}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready})
    spec: dict[str, Any] = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {"allocatable": allocatable, "conditions": conditions},
    }


def container(name: str = "app", **requests: str) -> dict[str, Any]:
    reqs = {k.replace("_", "-"): v for k, v in requests.items()}
    return {"name": name, "image": "busybox", "resources": {"requests": reqs} if reqs else {}}


def make_pod(
    name: str = "p",
    *,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    overhead: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    selector: dict[str, str] | None = None,
    terms: list[dict[str, Any]] | None = None,
    **requests: str,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": "fuzzy-scheduler",
        "containers": containers if containers is not None else [container(**requests)],
    }
    if init:
        spec["initContainers"] = init
    if overhead:
        spec["overhead"] = overhead
    if tolerations is not None:
        spec["tolerations"] = tolerations
    if selector is not None:
        spec["nodeSelector"] = selector
    if terms is not None:
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
        }
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"}, "spec": spec,
            "status": {"phase": "Pending"}}


def check(pod: dict, node: dict, requested: Resources = ZERO, score: ScoreRecord | None = FRESH_ALLOW):
    """First failure of `pod` on `node`, asserting the batch path agrees with the reference."""
    view = pod_view(pod)
    info = node_info(node, requested)
    one = first_failure(view.requests, view, info, requested, score)
    scores = {} if score is None else {info.name: score}
    passing, failures = feasible(view, [info], scores)
    assert failures.get(info.name) == one
    assert passing == (frozenset({info.name}) if one is None else frozenset())
    return one


def reason(failure: Failure | None) -> str | None:
    return None if failure is None else failure.reason


def test_reason_labels_are_the_contract_names():
    assert {f.FUZZY_DENY, f.RESOURCES_FIT, f.TAINT, f.SELECTOR, f.AFFINITY, f.NOT_READY, f.NO_SCORE} == set(
        UNSCHEDULABLE_REASONS
    )


# --- taints × tolerations -------------------------------------------------------------------
TAINT_KEY, TAINT_VALUE = "dedicated", "gpu"
TOLERATION_CASES = [
    # name, tolerations, tolerated (for NoSchedule / NoExecute; PreferNoSchedule never blocks)
    ("no tolerations", [], False),
    ("Equal, same key value, effect matches", [{"key": TAINT_KEY, "operator": "Equal", "value": TAINT_VALUE,
                                                "effect": "{effect}"}], True),
    ("Equal, value mismatch", [{"key": TAINT_KEY, "operator": "Equal", "value": "cpu", "effect": "{effect}"}], False),
    ("Equal, key mismatch", [{"key": "other", "operator": "Equal", "value": TAINT_VALUE}], False),
    ("operator omitted means Equal", [{"key": TAINT_KEY, "value": TAINT_VALUE}], True),
    ("operator omitted, value mismatch", [{"key": TAINT_KEY, "value": "x"}], False),
    ("Exists on the key, any value", [{"key": TAINT_KEY, "operator": "Exists"}], True),
    ("Exists on another key", [{"key": "other", "operator": "Exists"}], False),
    ("empty key with Exists tolerates everything", [{"operator": "Exists"}], True),
    ("empty effect matches every effect", [{"key": TAINT_KEY, "operator": "Equal", "value": TAINT_VALUE}], True),
    ("effect set to another effect", [{"key": TAINT_KEY, "operator": "Exists", "effect": "{other}"}], False),
    ("empty key Exists but other effect", [{"operator": "Exists", "effect": "{other}"}], False),
    ("tolerationSeconds is irrelevant", [{"key": TAINT_KEY, "operator": "Exists", "tolerationSeconds": 0}], True),
    ("unknown operator tolerates nothing", [{"key": TAINT_KEY, "operator": "Gt", "value": TAINT_VALUE}], False),
    ("second toleration matches", [{"key": "x", "operator": "Exists"}, {"key": TAINT_KEY, "operator": "Exists"}],
     True),
]
OTHER_EFFECT = {"NoSchedule": "NoExecute", "NoExecute": "NoSchedule", "PreferNoSchedule": "NoSchedule"}


def _fill(tols: list[dict[str, Any]], effect: str) -> list[dict[str, Any]]:
    out = []
    for tol in tols:
        tol = dict(tol)
        if "effect" in tol:
            tol["effect"] = tol["effect"].format(effect=effect, other=OTHER_EFFECT[effect])
        out.append(tol)
    return out


@pytest.mark.parametrize("effect", ["NoSchedule", "NoExecute", "PreferNoSchedule"])
@pytest.mark.parametrize(("name", "tols", "tolerated"), TOLERATION_CASES, ids=[c[0] for c in TOLERATION_CASES])
def test_taint_effect_x_toleration(effect, name, tols, tolerated):
    node = make_node(taints=[{"key": TAINT_KEY, "value": TAINT_VALUE, "effect": effect}])
    got = check(make_pod(tolerations=_fill(tols, effect)), node)
    if effect == "PreferNoSchedule" or tolerated:
        assert got is None, name
    else:
        assert got == Failure("taint", ("node(s) had untolerated taint {dedicated: gpu}",)), name


def test_first_untolerated_taint_is_reported_in_node_order():
    node = make_node(taints=[
        {"key": "a", "value": "1", "effect": "PreferNoSchedule"},
        {"key": "b", "value": "2", "effect": "NoSchedule"},
        {"key": "c", "effect": "NoExecute"},
    ])
    assert check(make_pod(), node).details == ("node(s) had untolerated taint {b: 2}",)
    got = check(make_pod(tolerations=[{"key": "b", "operator": "Exists"}]), node)
    assert got.details == ("node(s) had untolerated taint {c: }",)
    assert check(make_pod(tolerations=[{"key": "b", "operator": "Exists"}, {"key": "c", "operator": "Exists"}]),
                 node) is None


@pytest.mark.parametrize(
    ("name", "tol", "taint", "expected"),
    [
        ("empty key Equal matches any key with that value (ToleratesTaint)", Toleration("", "Equal", "v", ""),
         Taint("k", "v", "NoSchedule"), True),
        ("Equal with empty values", Toleration("k", "Equal", "", ""), Taint("k", "", "NoSchedule"), True),
        ("Exists ignores a value given", Toleration("k", "Exists", "zzz", ""), Taint("k", "v", "NoExecute"), True),
    ],
)
def test_tolerates_edge_cases(name, tol, taint, expected):
    assert f.tolerates(tol, taint) is expected, name


# --- readiness and cordon -------------------------------------------------------------------
UNSCHED = Failure("not_ready", ("node(s) were unschedulable",))
NOT_READY = Failure("not_ready", ("node(s) were not ready",))


@pytest.mark.parametrize(
    ("name", "node", "tolerations", "expected"),
    [
        ("ready", make_node(), None, None),
        ("Ready False", make_node(ready="False"), None, NOT_READY),
        ("Ready Unknown", make_node(ready="Unknown"), None, NOT_READY),
        ("no Ready condition", make_node(ready=None), None, NOT_READY),
        ("not ready even with every toleration", make_node(ready="False"), [{"operator": "Exists"}], NOT_READY),
        ("cordoned", make_node(unschedulable=True), None, UNSCHED),
        ("cordoned, tolerates the unschedulable taint", make_node(unschedulable=True),
         [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}], None),
        ("cordoned, empty-key Exists tolerates it", make_node(unschedulable=True), [{"operator": "Exists"}], None),
        ("cordoned, toleration with NoExecute effect does not", make_node(unschedulable=True),
         [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoExecute"}], UNSCHED),
        ("not ready wins over cordon", make_node(ready="False", unschedulable=True), None, NOT_READY),
        ("cordon wins over taints", make_node(unschedulable=True, taints=[{"key": "x", "effect": "NoSchedule"}]),
         None, UNSCHED),
    ],
)
def test_readiness_and_cordon(name, node, tolerations, expected):
    assert check(make_pod(tolerations=tolerations), node) == expected, name


# --- nodeSelector ---------------------------------------------------------------------------
SEL = Failure("selector", ("node(s) didn't match Pod's node affinity/selector",))
AFF = Failure("affinity", ("node(s) didn't match Pod's node affinity/selector",))
ZONE_A = {"zone": "a", "pool": "web", "gen": "5"}


@pytest.mark.parametrize(
    ("name", "selector", "expected"),
    [
        ("no selector", None, None),
        ("empty selector", {}, None),
        ("one label equal", {"zone": "a"}, None),
        ("all labels equal", {"zone": "a", "pool": "web"}, None),
        ("one of two differs", {"zone": "a", "pool": "db"}, SEL),
        ("label missing", {"disk": "ssd"}, SEL),
        ("value case matters", {"zone": "A"}, SEL),
        ("hostname label", {"kubernetes.io/hostname": "n1"}, None),
    ],
)
def test_node_selector(name, selector, expected):
    assert check(make_pod(selector=selector), make_node(labels=ZONE_A)) == expected, name


# --- required node affinity -----------------------------------------------------------------
def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": op}
    if values:
        out["values"] = list(values)
    return out


def term(*expressions: dict[str, Any], fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if expressions:
        out["matchExpressions"] = list(expressions)
    if fields:
        out["matchFields"] = fields
    return out


@pytest.mark.parametrize(
    ("name", "terms", "matches"),
    [
        ("In, value present", [term(expr("zone", "In", "a", "b"))], True),
        ("In, value absent", [term(expr("zone", "In", "b", "c"))], False),
        ("In, label missing", [term(expr("disk", "In", "ssd"))], False),
        ("In, no values (invalid)", [term(expr("zone", "In"))], False),
        ("NotIn, value listed", [term(expr("zone", "NotIn", "a"))], False),
        ("NotIn, value not listed", [term(expr("zone", "NotIn", "b"))], True),
        ("NotIn, label missing matches", [term(expr("disk", "NotIn", "ssd"))], True),
        ("NotIn, no values (invalid)", [term(expr("zone", "NotIn"))], False),
        ("Exists, present", [term(expr("pool", "Exists"))], True),
        ("Exists, missing", [term(expr("disk", "Exists"))], False),
        ("Exists with values (invalid)", [term(expr("pool", "Exists", "web"))], False),
        ("DoesNotExist, missing", [term(expr("disk", "DoesNotExist"))], True),
        ("DoesNotExist, present", [term(expr("pool", "DoesNotExist"))], False),
        ("Gt, greater", [term(expr("gen", "Gt", "4"))], True),
        ("Gt, equal is not greater", [term(expr("gen", "Gt", "5"))], False),
        ("Gt, negative bound", [term(expr("gen", "Gt", "-1"))], True),
        ("Lt, less", [term(expr("gen", "Lt", "6"))], True),
        ("Lt, equal is not less", [term(expr("gen", "Lt", "5"))], False),
        ("Gt, non-integer label fails", [term(expr("zone", "Gt", "0"))], False),
        ("Lt, non-integer label fails", [term(expr("pool", "Lt", "100"))], False),
        ("Gt, non-integer value fails", [term(expr("gen", "Gt", "4.5"))], False),
        ("Gt, two values (invalid)", [term(expr("gen", "Gt", "1", "2"))], False),
        ("Gt, no value (invalid)", [term(expr("gen", "Gt"))], False),
        ("Gt, label missing", [term(expr("disk", "Gt", "1"))], False),
        ("Lt, value with spaces is not an integer", [term(expr("gen", "Lt", " 9"))], False),
        ("unknown operator", [term(expr("zone", "Equals", "a"))], False),
        ("expressions are ANDed: both hold", [term(expr("zone", "In", "a"), expr("pool", "In", "web"))], True),
        ("expressions are ANDed: one fails", [term(expr("zone", "In", "a"), expr("pool", "In", "db"))], False),
        ("terms are ORed: second matches", [term(expr("zone", "In", "b")), term(expr("pool", "Exists"))], True),
        ("terms are ORed: none matches", [term(expr("zone", "In", "b")), term(expr("disk", "Exists"))], False),
        ("empty term matches nothing", [term()], False),
        ("empty term next to a matching one", [term(), term(expr("zone", "In", "a"))], True),
        ("no terms matches nothing", [], False),
        ("matchFields name In", [term(fields=[expr("metadata.name", "In", "n1")])], True),
        ("matchFields name In other", [term(fields=[expr("metadata.name", "In", "n2")])], False),
        ("matchFields name NotIn other", [term(fields=[expr("metadata.name", "NotIn", "n2")])], True),
        ("matchFields name NotIn self", [term(fields=[expr("metadata.name", "NotIn", "n1")])], False),
        ("matchFields two values (invalid)", [term(fields=[expr("metadata.name", "In", "n1", "n2")])], False),
        ("matchFields unsupported field", [term(fields=[expr("metadata.uid", "In", "n1")])], False),
        ("matchFields Exists unsupported", [term(fields=[expr("metadata.name", "Exists")])], False),
        ("fields AND expressions: both", [term(expr("zone", "In", "a"), fields=[expr("metadata.name", "In", "n1")])],
         True),
        ("fields AND expressions: field fails",
         [term(expr("zone", "In", "a"), fields=[expr("metadata.name", "In", "n9")])], False),
    ],
)
def test_required_node_affinity(name, terms, matches):
    got = check(make_pod(terms=terms), make_node(labels=ZONE_A))
    assert got == (None if matches else AFF), name


def test_affinity_without_required_part_matches_everything():
    pod = make_pod()
    pod["spec"]["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    assert check(pod, make_node()) is None


def test_selector_is_checked_before_affinity():
    pod = make_pod(selector={"zone": "b"}, terms=[term(expr("disk", "Exists"))])
    assert check(pod, make_node(labels=ZONE_A)) == SEL


# --- resources ------------------------------------------------------------------------------
def short(*names: str) -> Failure:
    return Failure("resources", tuple(f.RESOURCE_DETAILS[n] for n in names))


REQ_3500M = Resources(cpu=3500, memory=2 * GI, ephemeral_storage=0, pods=10)


@pytest.mark.parametrize(
    ("name", "pod", "node", "requested", "expected"),
    [
        ("exactly fits cpu", make_pod(cpu="500m"), make_node(cpu="4"), REQ_3500M, None),
        ("one milli over", make_pod(cpu="501m"), make_node(cpu="4"), REQ_3500M, short("cpu")),
        ("exactly fits memory", make_pod(memory="6Gi"), make_node(memory="8Gi"), REQ_3500M, None),
        ("one byte over memory", make_pod(memory=str(6 * GI + 1)), make_node(memory="8Gi"), REQ_3500M,
         short("memory")),
        ("zero request fits an overcommitted node", make_pod(), make_node(cpu="1", memory="1Gi"),
         Resources(cpu=5000, memory=9 * GI, pods=3), None),
        ("zero cpu, some memory, cpu overcommitted", make_pod(memory="1Mi"), make_node(cpu="1"),
         Resources(cpu=5000, pods=1), None),
        ("pods count limit reached", make_pod(cpu="1m"), make_node(pods="10"), Resources(pods=10), short("pods")),
        ("pods count one below limit", make_pod(cpu="1m"), make_node(pods="10"), Resources(pods=9), None),
        ("pods limit applies to a zero-request pod", make_pod(), make_node(pods="0"), ZERO, short("pods")),
        ("ephemeral-storage over", make_pod(ephemeral_storage="2Gi"), make_node(eph="1Gi"), ZERO,
         short("ephemeral-storage")),
        ("ephemeral-storage missing on the node", make_pod(ephemeral_storage="1"), make_node(eph=None), ZERO,
         short("ephemeral-storage")),
        ("every short resource reported, kube order", make_pod(cpu="5", memory="9Gi"), make_node(pods="1"),
         Resources(pods=1), short("pods", "cpu", "memory")),
        ("init container bigger than containers",
         make_pod(containers=[container(cpu="100m")], init=[container("init", cpu="3")]), make_node(cpu="2"), ZERO,
         short("cpu")),
        ("init container smaller than containers fits",
         make_pod(containers=[container(cpu="1500m")], init=[container("init", cpu="1")]), make_node(cpu="2"), ZERO,
         None),
        ("overhead tips it over", make_pod(cpu="1900m", overhead={"cpu": "101m"}), make_node(cpu="2"), ZERO,
         short("cpu")),
        ("overhead exactly fits", make_pod(cpu="1900m", overhead={"cpu": "100m"}), make_node(cpu="2"), ZERO, None),
    ],
)
def test_resources_fit(name, pod, node, requested, expected):
    assert check(pod, node, requested) == expected, name


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        ("no containers", {"containers": []}, Resources(pods=1)),
        ("sum of containers", {"containers": [container(cpu="100m", memory="64Mi"), container("b", cpu="250m")]},
         Resources(cpu=350, memory=64 * MI, pods=1)),
        ("init max per resource", {
            "containers": [container(cpu="1", memory="1Gi")],
            "initContainers": [container("i1", cpu="2", memory="100Mi"), container("i2", cpu="500m", memory="2Gi")],
        }, Resources(cpu=2000, memory=2 * GI, pods=1)),
        ("sidecar adds to containers and later inits", {
            "containers": [container(cpu="1")],
            "initContainers": [
                {**container("proxy", cpu="200m"), "restartPolicy": "Always"},
                container("migrate", cpu="1500m"),
            ],
        }, Resources(cpu=1700, pods=1)),
        ("sidecar then small init: sum wins", {
            "containers": [container(cpu="1")],
            "initContainers": [{**container("proxy", cpu="200m"), "restartPolicy": "Always"}, container("i", cpu="1")],
        }, Resources(cpu=1200, pods=1)),
        ("init before the sidecar does not pay for it", {
            "containers": [container(cpu="100m")],
            "initContainers": [container("i", cpu="1"), {**container("proxy", cpu="200m"), "restartPolicy": "Always"}],
        }, Resources(cpu=1000, pods=1)),
        ("overhead added after the max", {
            "containers": [container(cpu="1")], "initContainers": [container("i", cpu="2")],
            "overhead": {"cpu": "250m", "memory": "120Mi"},
        }, Resources(cpu=2250, memory=120 * MI, pods=1)),
        ("missing request defaults to limit", {
            "containers": [{"name": "a", "resources": {"limits": {"cpu": "2", "memory": "1Gi"},
                                                       "requests": {"cpu": "500m"}}}],
        }, Resources(cpu=500, memory=GI, pods=1)),
        ("pod-level requests replace the container sum", {
            "containers": [container(cpu="1", memory="1Gi", ephemeral_storage="1Gi")],
            "resources": {"requests": {"cpu": "3"}},
        }, Resources(cpu=3000, memory=GI, ephemeral_storage=GI, pods=1)),
        ("extended resources ignored", {"containers": [container(cpu="1", **{"nvidia.com/gpu": "1"})]},
         Resources(cpu=1000, pods=1)),
    ],
)
def test_pod_requests(name, spec, expected):
    assert pod_requests({"metadata": {"name": "p"}, "spec": spec}) == expected, name


@pytest.mark.parametrize(
    ("name", "pod", "field"),
    [
        ("container cpu", make_pod(cpu="abc"), "spec.containers[app].resources.requests.cpu"),
        ("container memory", make_pod(memory="1.2.3"), "spec.containers[app].resources.requests.memory"),
        ("init container", make_pod(init=[container("init", cpu="5q")]),
         "spec.initContainers[init].resources.requests.cpu"),
        ("overhead", make_pod(overhead={"memory": ""}), "spec.overhead.memory"),
    ],
)
def test_malformed_quantity_raises_naming_the_field(name, pod, field):
    with pytest.raises(QuantityError) as err:
        pod_view(pod)
    assert err.value.field == field, name
    with pytest.raises(QuantityError):
        feasible(pod, [node_info(make_node())], {})


# --- fuzzy filter ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "score", "expected"),
    [
        ("allowed and fresh", ScoreRecord(True, 80.0, True), None),
        ("denied high", ScoreRecord(False, 75.5, True), Failure("fuzzy_deny", ("fuzzy deny (score ≥ 70)",))),
        ("denied at exactly 70", ScoreRecord(False, 70.0, True), Failure("fuzzy_deny", ("fuzzy deny (score ≥ 70)",))),
        ("denied medium", ScoreRecord(False, 62.0, True), Failure("fuzzy_deny", ("fuzzy deny (score ≥ 45)",))),
        ("denied low (sticky)", ScoreRecord(False, 30.0, True), Failure("fuzzy_deny", ("fuzzy deny (score < 45)",))),
        ("denied NaN score", ScoreRecord(False, float("nan"), True), Failure("fuzzy_deny", ("fuzzy deny",))),
        ("missing", None, Failure("no_score", ("node(s) had no fresh fuzzy score",))),
        ("stale allow", ScoreRecord(True, 20.0, False), Failure("no_score", ("node(s) had no fresh fuzzy score",))),
        ("stale deny", ScoreRecord(False, 90.0, False), Failure("no_score", ("node(s) had no fresh fuzzy score",))),
    ],
)
def test_fuzzy_filter(name, score, expected):
    assert check(make_pod(cpu="100m"), make_node(), ZERO, score) == expected, name


def test_resources_are_checked_before_the_fuzzy_filter():
    assert reason(check(make_pod(cpu="8"), make_node(), ZERO, None)) == "resources"


# --- node parsing and lifecycle helpers -----------------------------------------------------
def test_node_info_parses_the_wire_format():
    node = make_node("w1", cpu="3920m", memory="15Gi", pods="58", labels={"zone": "a"},
                     taints=[{"key": "k", "value": "v", "effect": "NoSchedule"},
                             {"key": "soft", "effect": "PreferNoSchedule"},
                             {"key": "gone", "effect": "NoExecute", "timeAdded": "2024-01-01T00:00:00Z"}])
    info = node_info(node, Resources(cpu=100, pods=2))
    assert info == NodeInfo(
        name="w1",
        allocatable=Resources(cpu=3920, memory=15 * GI, ephemeral_storage=100 * GI, pods=58),
        requested=Resources(cpu=100, pods=2),
        labels={"kubernetes.io/hostname": "w1", "zone": "a"},
        taints=(Taint("k", "v", "NoSchedule"), Taint("gone", "", "NoExecute")),
        ready=True,
        unschedulable=False,
    )
    with pytest.raises(QuantityError, match=r"allocatable\.cpu"):
        node_info(make_node(cpu="lots"))


def test_being_deleted():
    assert being_deleted({"metadata": {"deletionTimestamp": "2024-05-01T12:00:00Z"}})
    assert not being_deleted({"metadata": {"deletionTimestamp": None}})
    assert not being_deleted({})


def test_priority_and_usage_key():
    assert priority({"spec": {"priority": 1000}}) == 1000
    assert priority({"spec": {}}) == 0
    assert priority({}) == 0
    assert usage_key(make_pod("x")) == "uid-x"
    assert usage_key({"metadata": {"name": "x", "namespace": "ns"}}) == "ns/x"


# --- the batch over many nodes --------------------------------------------------------------
def _table_and_reference(nodes: list[NodeInfo], pod: dict, scores: dict[str, ScoreRecord]):
    view = pod_view(pod)
    expected = {n.name: first_failure(view.requests, view, n, n.requested, scores.get(n.name)) for n in nodes}
    passing, failures = feasible(view, NodeTable.build(nodes), ScoreTable(scores))
    return expected, passing, failures


def test_feasible_mixed_cluster():
    nodes = [
        node_info(make_node("a", labels={"zone": "a"})),
        node_info(make_node("b", labels={"zone": "b"})),
        node_info(make_node("c", labels={"zone": "a"}, ready="False")),
        node_info(make_node("d", labels={"zone": "a"}, taints=[{"key": "gpu", "effect": "NoSchedule"}])),
        node_info(make_node("e", labels={"zone": "a"}, cpu="1")),
        node_info(make_node("f", labels={"zone": "a"})),
        node_info(make_node("g", labels={"zone": "a"})),
    ]
    scores = {"a": FRESH_ALLOW, "b": FRESH_ALLOW, "e": FRESH_ALLOW, "f": ScoreRecord(False, 77.0, True)}
    passing, failures = feasible(make_pod(cpu="2", selector={"zone": "a"}), nodes, scores)
    assert passing == {"a"}
    assert {n: fl.reason for n, fl in failures.items()} == {
        "b": "selector", "c": "not_ready", "d": "taint", "e": "resources", "f": "fuzzy_deny", "g": "no_score",
    }


NAMES = [f"n{i}" for i in range(8)]
label_values = st.sampled_from(["a", "b", "1", "7", "x"])
node_strategy = st.builds(
    lambda name, cpu, mem, pods, rcpu, rmem, rpods, labels, taints, ready, cordon: NodeInfo(
        name=name,
        allocatable=Resources(cpu, mem, 10 * GI, pods),
        requested=Resources(rcpu, rmem, GI, rpods),
        labels=labels,
        taints=taints,
        ready=ready,
        unschedulable=cordon,
    ),
    st.sampled_from(NAMES),
    st.integers(0, 4000), st.integers(0, 8 * GI), st.integers(0, 5),
    st.integers(0, 5000), st.integers(0, 9 * GI), st.integers(0, 6),
    st.dictionaries(st.sampled_from(["zone", "gen", "pool"]), label_values, max_size=3),
    st.lists(st.builds(Taint, st.sampled_from(["k1", "k2"]), st.sampled_from(["", "v"]),
                       st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"])), max_size=2).map(tuple),
    st.booleans(), st.booleans(),
)
expr_strategy = st.builds(
    lambda key, op, values: expr(key, op, *values),
    st.sampled_from(["zone", "gen", "pool", "none"]),
    st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]),
    st.lists(label_values, max_size=2),
)
field_strategy = st.builds(lambda op, v: expr("metadata.name", op, v), st.sampled_from(["In", "NotIn"]),
                           st.sampled_from(NAMES))
pod_strategy = st.builds(
    lambda cpu, mem, tols, selector, terms: make_pod(cpu=f"{cpu}m", memory=str(mem), tolerations=tols,
                                                     selector=selector, terms=terms),
    st.integers(0, 3000), st.integers(0, 4 * GI),
    st.lists(st.builds(lambda k, op, v, e: {"key": k, "operator": op, "value": v, "effect": e},
                       st.sampled_from(["", "k1", "k2", "node.kubernetes.io/unschedulable"]),
                       st.sampled_from(["Equal", "Exists"]), st.sampled_from(["", "v"]),
                       st.sampled_from(["", "NoSchedule", "NoExecute"])), max_size=2),
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["zone", "pool"]), label_values, max_size=2)),
    st.one_of(st.none(), st.lists(st.builds(lambda e, fl: term(*e, fields=fl), st.lists(expr_strategy, max_size=2),
                                            st.lists(field_strategy, max_size=1)), max_size=2)),
)
score_strategy = st.dictionaries(
    st.sampled_from(NAMES), st.builds(ScoreRecord, st.booleans(), st.floats(0, 100), st.booleans())
)


@settings(max_examples=300, deadline=None)
@given(nodes=st.lists(node_strategy, max_size=8, unique_by=lambda n: n.name), pod=pod_strategy, scores=score_strategy)
def test_batch_equals_reference(nodes, pod, scores):
    expected, passing, failures = _table_and_reference(nodes, pod, scores)
    assert failures == {n: fl for n, fl in expected.items() if fl is not None}
    assert passing == {n for n, fl in expected.items() if fl is None}


@settings(max_examples=150, deadline=None)
@given(
    nodes=st.lists(node_strategy, min_size=1, max_size=8, unique_by=lambda n: n.name),
    updates=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 5000), st.integers(0, 6)), max_size=6),
    pod=pod_strategy,
)
def test_incremental_table_equals_rebuilt(nodes, updates, pod):
    table = NodeTable.build(nodes)
    current = {n.name: n for n in nodes}
    for index, cpu, pods in updates:
        name = nodes[index % len(nodes)].name
        requested = Resources(cpu=cpu, memory=current[name].requested.memory, pods=pods)
        table = table.with_requested(name, requested)
        current[name] = NodeInfo(**{**_fields(current[name]), "requested": requested})
    rebuilt = NodeTable.build(current.values())
    scores = {n: FRESH_ALLOW for n in current}
    assert feasible(pod, table, scores) == feasible(pod, rebuilt, scores)
    first = nodes[0]
    moved = NodeInfo(**{**_fields(current[first.name]), "allocatable": Resources(1, 1, 1, 1)})
    relabeled = NodeInfo(**{**_fields(current[first.name]), "labels": {"zone": "zz"}})
    for info in (moved, relabeled):
        updated = {**current, first.name: info}
        assert feasible(pod, table.with_node(info), scores) == feasible(pod, NodeTable.build(updated.values()), scores)
    assert feasible(pod, table.without(first.name), scores) == feasible(
        pod, NodeTable.build(n for name, n in current.items() if name != first.name), scores
    )


def _fields(info: NodeInfo) -> dict[str, Any]:
    return {s: getattr(info, s) for s in NodeInfo.__slots__}


# --- usage ledger ---------------------------------------------------------------------------
resources_strategy = st.builds(Resources, st.integers(0, 10_000), st.integers(0, 2**40), st.integers(0, 2**40),
                               st.integers(0, 1))


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c", "d"]), resources_strategy),
                    max_size=30))
def test_node_usage_add_remove_inverse_and_never_negative(ops):
    usage = NodeUsage()
    for is_add, key, req in ops:
        before = usage
        usage = usage.add(key, req) if is_add else usage.remove(key)
        assert usage.total.nonnegative()
        assert usage.total == sum(usage.pods.values(), ZERO)
        if is_add and key not in before:
            assert usage.remove(key) == before  # add then remove is the identity
        if not is_add and key in before:
            assert usage.add(key, before.pods[key]) == before  # and remove then add
    for key in list(usage.pods):
        usage = usage.remove(key)
    assert usage == NodeUsage()


def test_node_usage_is_idempotent_per_pod():
    req = Resources(cpu=100, memory=MI, pods=1)
    assumed = NodeUsage().add("uid-1", req)
    assert assumed.add("uid-1", req) is assumed  # the watch shows the pod we assumed
    resized = assumed.add("uid-1", Resources(cpu=300, memory=MI, pods=1))
    assert resized.total == Resources(cpu=300, memory=MI, pods=1)
    assert resized.remove("unknown") is resized
    assert resized.remove("uid-1").total == ZERO

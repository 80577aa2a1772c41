"""The kube-scheduler extender verbs `filter` and `prioritize`, pure (docs/api.md, docs/api.md).

With these, a cluster can keep the stock kube-scheduler and add the fuzzy admission as an
extender (`KubeSchedulerConfiguration.extenders[]` with `filterVerb: filter`,
`prioritizeVerb: prioritize`). The wire format is k8s.io/kube-scheduler/extender/v1: Go structs
without json tags, so the keys are the Go field names (`Pod`, `Nodes`, `NodeNames`,
`FailedNodes`, `FailedAndUnresolvableNodes`, `Error`, `Host`, `Score`). A `null` field is an
absent one: Go sends `"NodeNames": null` when the extender is not `nodeCacheCapable`, and
`"Nodes": null` when it is. We answer in the form we were asked in, because kube-scheduler reads
`NodeNames` back only from a nodeCacheCapable extender and `Nodes` otherwise.

The pod (`Pod`) is not read: a fuzzy decision is per node, the same for every pod.

Filter: allowed nodes pass; denied nodes go to `FailedNodes` with a message that is the same for
every node denied for the same cause (kube-scheduler counts identical messages into its
"0/5 nodes are available: 3 ..." event); nodes the scorer does not know go to
`FailedAndUnresolvableNodes`, since preempting pods cannot give a node a score. Before the first
evaluation, and while the results are stale (no evaluation for longer than FUZZY_LONG_WIN_S),
the answer is `Error` (kube-scheduler then fails the attempt, or skips the extender when it is
configured `ignorable: true`).

Prioritize: priority = floor((100 − score) / 10 + 0.5) clamped to 0…10 (MaxExtenderPriority),
so a lower score is a higher priority; unknown nodes and non-finite scores get 0.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict, cast

from common.names import DECISION_ALLOW
from scorer.core.model import NodeReport, Results

MAX_PRIORITY = 10
NOT_READY = "ksense scorer not ready: no evaluation yet"
STALE = "ksense scorer not ready: its latest evaluation is stale"
UNKNOWN_NODE = "ksense: node unknown to the scorer (no score)"
DENY_MISSING = "ksense fuzzy deny (missing metrics)"
#: Inputs whose absence makes a deny (docs/design.md#decisions step 1); CPU and PSI count as 0 instead.
_CRITICAL = ("friction", "energy")


class NodeList(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: dict[str, Any]
    items: list[dict[str, Any]]


class ExtenderArgs(TypedDict, total=False):
    Pod: dict[str, Any]
    Nodes: NodeList | None
    NodeNames: list[str] | None


class ExtenderFilterResult(TypedDict, total=False):
    Nodes: NodeList
    NodeNames: list[str]
    FailedNodes: dict[str, str]
    FailedAndUnresolvableNodes: dict[str, str]
    Error: str


class HostPriority(TypedDict):
    Host: str
    Score: int


HostPriorityList = list[HostPriority]


class BadArgs(ValueError):
    """The body is not ExtenderArgs (the message says why); the shell answers 400."""


def filter(  # the verb's name; shadows the builtin
    args: object, results: Results | None, *, stale: bool = False
) -> ExtenderFilterResult:
    """Keep the allowed nodes of ExtenderArgs `args`, report the others; see the module
    docstring. Raises BadArgs when `args` is not ExtenderArgs."""
    names, node_list = _candidates(args)
    if results is None:
        return {"Error": NOT_READY}
    if stale:
        return {"Error": STALE}
    kept: list[str] = []
    failed: dict[str, str] = {}
    unresolvable: dict[str, str] = {}
    for name in names:
        report = results.reports.get(name)
        if report is None:
            unresolvable[name] = UNKNOWN_NODE
        elif report.decision == DECISION_ALLOW:
            kept.append(name)
        else:
            failed[name] = deny_message(report)
    answer: ExtenderFilterResult = {"FailedNodes": failed, "FailedAndUnresolvableNodes": unresolvable, "Error": ""}
    if node_list is None:
        answer["NodeNames"] = kept
    else:
        keep = set(kept)
        answer["Nodes"] = {**node_list, "items": [i for i in node_list["items"] if _item_name(i) in keep]}
    return answer


def prioritize(args: object, results: Results) -> HostPriorityList:
    """One HostPriority per candidate node, in the order given. Raises BadArgs."""
    names, _ = _candidates(args)
    reports = results.reports
    return [{"Host": name, "Score": priority(reports[name].score if name in reports else math.nan)} for name in names]


def priority(score: float) -> int:
    """Score 0…100 (lower = better) → extender priority 10…0 (higher = better), half up."""
    if not math.isfinite(score):
        return 0
    return max(0, min(MAX_PRIORITY, math.floor((100.0 - score) / 10.0 + 0.5)))


def deny_message(report: NodeReport) -> str:
    """Why a denied node is filtered out, worded per cause, not per node (see module docstring)."""
    if any(name in report.missing for name in _CRITICAL):
        return DENY_MISSING
    return f"ksense fuzzy deny ({report.medium_band or report.level} score)"


def _candidates(args: object) -> tuple[list[str], NodeList | None]:
    """(node names, the NodeList when asked with `Nodes`, None when asked with `NodeNames`)."""
    if not isinstance(args, dict):
        raise BadArgs("body is not a JSON object (ExtenderArgs)")
    names = args.get("NodeNames")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadArgs("NodeNames must be a list of strings")
        return names, None
    node_list = args.get("Nodes")
    if node_list is None:
        raise BadArgs("ExtenderArgs needs Nodes or NodeNames")
    if not isinstance(node_list, dict) or not isinstance(node_list.get("items"), list):
        raise BadArgs("Nodes must be a NodeList with items")
    names = [_item_name(item) for item in node_list["items"]]
    if not all(isinstance(n, str) for n in names):
        raise BadArgs("every Nodes.items[] needs metadata.name")
    return names, cast(NodeList, node_list)


def _item_name(item: object) -> str | None:
    meta = item.get("metadata") if isinstance(item, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None

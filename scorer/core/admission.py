"""The admission webhook's answer: a pure function from a request body and the latest results to
the AdmissionReview response, the CSV record and the metrics outcome (docs/api.md, docs/api.md).

Why pure: every rule below is a table test with literal JSON, and the HTTP shell around it (body
limits, content types, timing, recording) stays a few lines. Nothing here calls Prometheus or
reads a clock: `results` is whatever the evaluator published last, `now` is given.

What is answered how. The webhook runs with `failurePolicy: Ignore`, so a 400 never blocks a
pod; but a 200 must be an AdmissionReview the API server accepts, so we answer 200 only when we
can echo a valid envelope:

- **400 `bad_request`**: the body is not a JSON object; `apiVersion` is not
  `admission.k8s.io/v1` or `admission.k8s.io/v1beta1`; `kind` is not `AdmissionReview`;
  `request` is missing or not an object; `request.uid` is missing, not a string, empty or
  longer than MAX_UID.
- **200 `ignored`** (allowed, no status, no annotations, not recorded): `request.kind` is not
  core `Pod` (group "" or absent), `operation` is not `CREATE`, or a subresource is named.
- **200 `dry_run`**: a Pod CREATE whose `dryRun` is anything but false, null or absent (with
  `sideEffects: NoneOnDryRun` a dry run must not write, so doubt counts as dry): full answer,
  not recorded.
- **200 `recorded`**: every other Pod CREATE, however odd the pod: a missing or malformed
  `object`, `metadata` or `spec` only means no name or no target node. The recorder turns
  `recorded` into `duplicate` for a retried uid.

The decision the pod would meet is `allow` when at least one node is allowed (the fuzzy
scheduler can place it), else `deny`; the best node is the allowed node with the lowest score
(ties by name). A Pod CREATE is always allowed whatever the decision: the webhook observes, the
scheduler enforces. The target node is `spec.nodeName`, else the value of the
`kubernetes.io/hostname` key of `spec.nodeSelector` when it names a known node (the scorer
knows node names, not node labels; the hostname label equals the node name on kubelet defaults,
so this is the one selector that matches exactly one known node). A `nodeName` the scorer does
not know is still reported, with decision `unknown` and no score.

Lengths are Kubernetes' own: a value longer than a real API server can send is not a review
(uid: 400) or not a name (namespace, name, generateName, nodeName: taken as absent), so no
client can make the CSV, the annotations or the uid de-duplication hold long strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, cast

from common.core.csvrow import format_number, format_time
from common.names import DECISION_ALLOW, DECISION_DENY
from scorer.core.model import NodeReport, Results

API_V1 = "admission.k8s.io/v1"
API_V1BETA1 = "admission.k8s.io/v1beta1"
API_VERSIONS = (API_V1, API_V1BETA1)
KIND = "AdmissionReview"
HOSTNAME_LABEL = "kubernetes.io/hostname"
#: docs/api.md caps audit annotation values; node names alone may be 253 characters long.
MAX_ANNOTATION = 250
OVERRIDE = " (CREATE override: allowed=true)"
#: The API server's review uids are 36-character UUIDs; 128 leaves room for any other issuer.
MAX_UID = 128
#: Object names (pods, nodes) are DNS subdomains: at most 253 characters.
MAX_NAME = 253
#: Namespaces are DNS labels: at most 63 characters.
MAX_NAMESPACE = 63
TARGET_UNKNOWN = "unknown"

OUTCOME_RECORDED = "recorded"
OUTCOME_DRY_RUN = "dry_run"
OUTCOME_IGNORED = "ignored"
OUTCOME_BAD_REQUEST = "bad_request"


# --- wire formats (the subset we read and write) -------------------------------------------------
class GroupVersionKind(TypedDict, total=False):
    group: str
    version: str
    kind: str


class AdmissionRequest(TypedDict, total=False):
    uid: str
    kind: GroupVersionKind
    subResource: str
    name: str
    namespace: str
    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    object: dict[str, Any]
    dryRun: bool


class AdmissionReviewRequest(TypedDict):
    apiVersion: str
    kind: str
    request: AdmissionRequest


class Status(TypedDict):
    message: str


class AdmissionResponse(TypedDict, total=False):
    uid: str
    allowed: bool
    status: Status
    auditAnnotations: dict[str, str]


class AdmissionReviewResponse(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponse


class ErrorBody(TypedDict):
    error: str


# --- values ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreRecord:
    """One fuzzy_score.csv row (docs/metrics.md#fuzzy_scorecsv) before formatting. None = empty cell."""

    time: datetime
    uid: str
    namespace: str
    name: str
    allowed_nodes: int
    total_nodes: int
    best_node: str | None
    best_score: float | None
    target_node: str | None
    target_score: float | None
    target_decision: str | None


@dataclass(frozen=True)
class Outcome:
    """The answer to one /validate body: HTTP status, JSON body, metrics outcome, and the record
    to write when `outcome` is `recorded` (None otherwise)."""

    status: int
    body: AdmissionReviewResponse | ErrorBody
    outcome: str
    record: ScoreRecord | None = None


@dataclass(frozen=True)
class Placement:
    """What the pod would meet right now: the fleet's decision and the named node's."""

    decision: str
    allowed_nodes: int
    total_nodes: int
    best: NodeReport | None
    target_node: str | None
    target: NodeReport | None


# --- the builder -----------------------------------------------------------------------------
def review(body: object, results: Results | None, *, now: datetime) -> Outcome:
    """The webhook's answer to one parsed JSON body (an AdmissionReviewRequest when well formed;
    anything at all otherwise); see the module docstring for the rules. `results` None (no
    evaluation yet) means no known node: decision deny, still allowed."""
    envelope = _envelope(body)
    if isinstance(envelope, str):
        return _bad_request(envelope)
    api_version, request, uid = envelope
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if not _is_pod_create(request):
        return Outcome(200, _review_body(api_version, response), OUTCOME_IGNORED)

    pod = request.get("object")
    place = placement(pod, results)
    response["status"] = {"message": status_message(place)}
    response["auditAnnotations"] = audit_annotations(place)
    answer = _review_body(api_version, response)
    if request.get("dryRun") not in (None, False):
        return Outcome(200, answer, OUTCOME_DRY_RUN)
    namespace, name = _identity(request, pod)
    record = ScoreRecord(
        time=now,
        uid=uid,
        namespace=namespace,
        name=name,
        allowed_nodes=place.allowed_nodes,
        total_nodes=place.total_nodes,
        best_node=place.best.node if place.best else None,
        best_score=place.best.score if place.best else None,
        target_node=place.target_node,
        target_score=place.target.score if place.target else None,
        target_decision=_target_decision(place),
    )
    return Outcome(200, answer, OUTCOME_RECORDED, record)


def fallback(body: object) -> Outcome:
    """The answer when building the real one failed unexpectedly (a bug): allowed and untouched
    when the envelope is valid, else 400. Uses only the envelope checks, so it cannot fail the
    same way."""
    envelope = _envelope(body)
    if isinstance(envelope, str):
        return _bad_request(envelope)
    api_version, _, uid = envelope
    return Outcome(200, _review_body(api_version, {"uid": uid, "allowed": True}), OUTCOME_IGNORED)


def placement(pod: object, results: Results | None) -> Placement:
    """Decision = allow when at least one node is allowed; best = the first of `results.allowed`
    (lowest score, ties by name); target as in the module docstring."""
    reports = results.reports if results is not None else {}
    allowed = results.allowed if results is not None else ()
    target_node = _target_node(pod, reports)
    return Placement(
        decision=DECISION_ALLOW if allowed else DECISION_DENY,
        allowed_nodes=len(allowed),
        total_nodes=len(reports),
        best=allowed[0] if allowed else None,
        target_node=target_node,
        target=reports.get(target_node) if target_node is not None else None,
    )


def status_message(place: Placement) -> str:
    """`decision=<d> allowed_nodes=<n>/<total> best=<node>:<score>` (`best=none` when no node is
    allowed), plus the CREATE override note when the decision is deny."""
    best = f"{place.best.node}:{_score(place.best.score)}" if place.best else "none"
    message = f"decision={place.decision} allowed_nodes={place.allowed_nodes}/{place.total_nodes} best={best}"
    return message + OVERRIDE if place.decision == DECISION_DENY else message


def audit_annotations(place: Placement) -> dict[str, str]:
    """The `fuzzy.*` audit annotations; best node and score are empty when no node is allowed,
    the target keys appear only when the pod names a node. Values are cut to 250 characters."""
    notes = {
        "fuzzy.decision": place.decision,
        "fuzzy.allowed_nodes": str(place.allowed_nodes),
        "fuzzy.total_nodes": str(place.total_nodes),
        "fuzzy.best_node": place.best.node if place.best else "",
        "fuzzy.best_score": _score(place.best.score) if place.best else "",
    }
    if place.target_node is not None:
        notes["fuzzy.target_node"] = place.target_node
        if place.target is not None:
            notes["fuzzy.target_score"] = _score(place.target.score)
        notes["fuzzy.target_decision"] = _target_decision(place) or ""
    return {key: value[:MAX_ANNOTATION] for key, value in notes.items()}


def csv_row(record: ScoreRecord) -> list[str]:
    """The fuzzy_score.csv cells in docs/metrics.md#fuzzy_scorecsv order; scores with 3 decimals like the monitor
    file's Score, empty cells for no value."""

    return [
        format_time(record.time),
        record.uid,
        record.namespace,
        record.name,
        str(record.allowed_nodes),
        str(record.total_nodes),
        record.best_node or "",
        format_number(record.best_score, 3),
        record.target_node or "",
        format_number(record.target_score, 3),
        record.target_decision or "",
    ]


# --- internals -------------------------------------------------------------------------------
def _envelope(body: object) -> tuple[str, AdmissionRequest, str] | str:
    """(apiVersion, request, uid) of a well-formed review, else the reason it is not one."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    api_version = body.get("apiVersion")
    if api_version not in API_VERSIONS:
        return f"apiVersion must be {API_V1} or {API_V1BETA1}"
    if body.get("kind") != KIND:
        return f"kind must be {KIND}"
    request = body.get("request")
    if not isinstance(request, dict):
        return "request is missing or not an object"
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return "request.uid is missing or not a non-empty string"
    if len(uid) > MAX_UID:
        return f"request.uid is longer than {MAX_UID} characters"
    return api_version, cast(AdmissionRequest, request), uid


def _bad_request(why: str) -> Outcome:
    return Outcome(400, {"error": why}, OUTCOME_BAD_REQUEST)


def _review_body(api_version: str, response: AdmissionResponse) -> AdmissionReviewResponse:
    return {"apiVersion": api_version, "kind": KIND, "response": response}


def _is_pod_create(request: AdmissionRequest) -> bool:
    kind = request.get("kind")
    if not isinstance(kind, dict) or kind.get("kind") != "Pod" or kind.get("group", "") != "":
        return False
    return request.get("operation") == "CREATE" and not request.get("subResource")


def _target_node(pod: object, reports: Any) -> str | None:
    spec = pod.get("spec") if isinstance(pod, dict) else None
    if not isinstance(spec, dict):
        return None
    node_name = spec.get("nodeName")
    if isinstance(node_name, str) and 0 < len(node_name) <= MAX_NAME:
        return node_name
    selector = spec.get("nodeSelector")
    if isinstance(selector, dict):
        host = selector.get(HOSTNAME_LABEL)
        if isinstance(host, str) and host in reports:
            return host
    return None


def _target_decision(place: Placement) -> str | None:
    if place.target_node is None:
        return None
    return place.target.decision if place.target is not None else TARGET_UNKNOWN


def _identity(request: AdmissionRequest, pod: object) -> tuple[str, str]:
    """(namespace, name). A pod created with `generateName` has no name yet at admission: its
    prefix is the best identifier there is."""
    meta = pod.get("metadata") if isinstance(pod, dict) else None
    meta = meta if isinstance(meta, dict) else {}

    def first(limit: int, *values: object) -> str:
        return next((v for v in values if isinstance(v, str) and 0 < len(v) <= limit), "")

    namespace = first(MAX_NAMESPACE, request.get("namespace"), meta.get("namespace"))
    name = first(MAX_NAME, meta.get("name"), request.get("name"), meta.get("generateName"))
    return namespace, name


def _score(score: float) -> str:
    return f"{score:.3f}" if math.isfinite(score) else "nan"

"""Which nodes can take a pod, and why the others cannot (docs/design.md#the-fuzzy-scheduler filters), pure.

Filters run in this order and a node reports only the FIRST one it fails (reason labels from
`common.names.UNSCHEDULABLE_REASONS`, details in kube-scheduler's words so `kubectl describe`
reads as usual):

1. not_ready  — Ready condition not "True": "node(s) were not ready"; or spec.unschedulable
   and the pod does not tolerate `node.kubernetes.io/unschedulable:NoSchedule`
   (NodeUnschedulable): "node(s) were unschedulable".
2. taint      — the first NoSchedule/NoExecute taint no toleration tolerates:
   "node(s) had untolerated taint {key: value}".
3. selector   — a `spec.nodeSelector` label missing or different, and
4. affinity   — no required nodeSelectorTerm matches: both
   "node(s) didn't match Pod's node affinity/selector" (kube-scheduler's one NodeAffinity text).
5. resources  — pods: requested + 1 > allocatable ("Too many pods"); cpu, memory,
   ephemeral-storage: request > 0 and request > allocatable − requested ("Insufficient cpu");
   every short resource of the node is reported, in that order, as kube-scheduler does.
6. no_score   — no score record for the node, or a stale one: "node(s) had no fresh fuzzy score";
   fuzzy_deny — the node's fresh decision is deny: "fuzzy deny (score ≥ 70)" (see below).

Toleration matching (`Toleration.ToleratesTaint`): a set effect must equal the taint's; a set key
must equal the taint's (empty key + Exists tolerates everything); Exists ignores the value,
Equal (or "") compares it; other operators tolerate nothing. PreferNoSchedule taints never
block. Ready is checked directly (docs/design.md#the-fuzzy-scheduler) rather than through the `not-ready` taint.

Node affinity: terms are ORed, a term's matchExpressions and matchFields are ANDed; a term
with neither matches nothing; In/NotIn need ≥ 1 value (NotIn and DoesNotExist match a node
without the label); Exists/DoesNotExist take no values; Gt/Lt need one value and compare
int64s, a non-integer label or value fails; matchFields supports `metadata.name` In/NotIn with
exactly one value. Anything kube-scheduler would reject as an invalid requirement matches
nothing.

Fuzzy deny details are grouped by the scorer's level bands (docs/design.md#fuzzy-controller: high ≥ 70, medium
≥ 45, low) instead of the exact score, so the FailedScheduling message — and its dedupe key —
stay the same while scores jitter.

Two implementations of the same rules: `first_failure` for one (pod, node) — the reference,
easy to read — and `feasible` for one pod over all nodes, which works on set algebra over a
`NodeTable` (label / taint / free-capacity indexes built once when nodes change) so 5,000
nodes cost about a millisecond in pure Python. A property test holds them equal.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from common.names import POD_ROLES, UNSCHEDULABLE_REASONS
from scheduler.core.pods import (
    RESOURCES,
    ZERO,
    Requirement,
    Resources,
    Term,
    Toleration,
    node_selector,
    pod_key,
    pod_requests,
    required_affinity,
    tolerations,
)

_REASON = {r: r for r in UNSCHEDULABLE_REASONS}  # a renamed label fails here, at import
FUZZY_DENY, RESOURCES_FIT, TAINT = _REASON["fuzzy_deny"], _REASON["resources"], _REASON["taint"]
SELECTOR, AFFINITY = _REASON["selector"], _REASON["affinity"]
NOT_READY, NO_SCORE = _REASON["not_ready"], _REASON["no_score"]
HARD_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"
FIELD_NODE_NAME = "metadata.name"
HIGH_SCORE, MEDIUM_SCORE = 70.0, 45.0  # docs/design.md#fuzzy-controller level bands


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one node cannot take the pod: the reason label and kube-scheduler-style details (more
    than one only for resources, where kube-scheduler reports every insufficient resource)."""

    reason: str
    details: tuple[str, ...]

    @property
    def detail(self) -> str:
        return ", ".join(self.details)


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    """The scheduler's view of one node's fuzzy decision (the shell decides `fresh` from the
    sample age and `FUZZY_LONG_WIN_S`). `victim`, `aggressor` and `io_aggressor` name the
    node's top pods per role (common.names.POD_ROLES, shown by common.names.pod_shown) when the
    source knows them, for the message only ("" = unknown)."""

    allowed: bool
    score: float
    fresh: bool
    victim: str = ""
    aggressor: str = ""
    io_aggressor: str = ""

    @property
    def top_pods(self) -> tuple[tuple[str, str], ...]:
        """(role, pod shown) for every role whose pod is known, in common.names.POD_ROLES order."""
        pods = (self.victim, self.aggressor, self.io_aggressor)
        return tuple((role, pod) for role, pod in zip(POD_ROLES, pods, strict=True) if pod)


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


NOT_READY_FAILURE = Failure(NOT_READY, ("node(s) were not ready",))
UNSCHEDULABLE_FAILURE = Failure(NOT_READY, ("node(s) were unschedulable",))
SELECTOR_FAILURE = Failure(SELECTOR, ("node(s) didn't match Pod's node affinity/selector",))
AFFINITY_FAILURE = Failure(AFFINITY, ("node(s) didn't match Pod's node affinity/selector",))
NO_SCORE_FAILURE = Failure(NO_SCORE, ("node(s) had no fresh fuzzy score",))
RESOURCE_DETAILS = {
    "pods": "Too many pods",
    "cpu": "Insufficient cpu",
    "memory": "Insufficient memory",
    "ephemeral-storage": "Insufficient ephemeral-storage",
}
_FIT_ORDER = ("pods", "cpu", "memory", "ephemeral-storage")  # kube-scheduler's fitsRequest order


def taint_failure(taint: Taint) -> Failure:
    return Failure(TAINT, (f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}",))


def fuzzy_failure(score: float) -> Failure:
    """`fuzzy_deny` with the level band of the score (stable text for messages and dedupe)."""
    if not math.isfinite(score):
        return Failure(FUZZY_DENY, ("fuzzy deny",))
    if score >= HIGH_SCORE:
        band = f"≥ {HIGH_SCORE:g}"
    elif score >= MEDIUM_SCORE:
        band = f"≥ {MEDIUM_SCORE:g}"
    else:
        band = f"< {MEDIUM_SCORE:g}"
    return Failure(FUZZY_DENY, (f"fuzzy deny (score {band})",))


def resource_failure(resources: tuple[str, ...]) -> Failure:
    """`resources` failure for these resource names (in fitsRequest order)."""
    return _RESOURCE_FAILURES.get(resources) or Failure(RESOURCES_FIT, tuple(RESOURCE_DETAILS[r] for r in resources))


# Every combination, built once: the batch shares these instances across nodes and pods.
_RESOURCE_FAILURES = {
    combo: Failure(RESOURCES_FIT, tuple(RESOURCE_DETAILS[r] for r in combo))
    for mask in range(1, 1 << len(_FIT_ORDER))
    for combo in [tuple(r for i, r in enumerate(_FIT_ORDER) if mask >> i & 1)]
}


# --- the pod, parsed once per attempt -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PodView:
    """Everything the filters read from a pod, parsed once per scheduling attempt."""

    key: str
    requests: Resources
    tolerations: tuple[Toleration, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    affinity: tuple[Term, ...] | None = None


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """Parse a wire-format pod. Raises `QuantityError` for a malformed request: that pod is
    unschedulable with the parse error as its message, the others go on."""
    return PodView(
        key=pod_key(pod),
        requests=pod_requests(pod),
        tolerations=tolerations(pod),
        node_selector=tuple(sorted(node_selector(pod).items())),
        affinity=required_affinity(pod),
    )


# --- a node, parsed once when it changes ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node as the filters see it. `requested` is the sum over the non-terminated pods bound
    to it, including pods this scheduler assumed but the watch has not shown yet (see
    `NodeUsage`). `taints` holds only NoSchedule/NoExecute taints, in node order."""

    name: str
    allocatable: Resources
    requested: Resources = ZERO
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False

    def static_part(self) -> tuple[object, ...]:
        """What the non-resource filters read; nodes equal here filter alike."""
        return (self.labels, self.taints, self.ready, self.unschedulable)


def node_info(node: Mapping[str, Any], requested: Resources = ZERO) -> NodeInfo:
    """Parse a wire-format node (metadata.labels, spec.taints, spec.unschedulable,
    status.allocatable, status.conditions). Raises `QuantityError` for malformed allocatable."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    name = meta.get("name") or ""
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ()
    )
    taints = tuple(
        Taint(t.get("key") or "", "" if t.get("value") is None else str(t.get("value")), t.get("effect") or "")
        for t in spec.get("taints") or ()
        if t.get("effect") in HARD_EFFECTS
    )
    return NodeInfo(
        name=name,
        allocatable=Resources.from_mapping(status.get("allocatable"), f"node {name} status.allocatable"),
        requested=requested,
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        taints=taints,
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
    )


# --- per-node usage ledger ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NodeUsage:
    """Requests of the pods counted on one node, keyed by pod (`pods.usage_key`: uid), so the
    shell can feed it watch events and its own assumptions without double counting: `add` of a
    known key replaces that pod's entry (assumed → seen by the watch, or resized), `remove` of
    an unknown key is a no-op. `total` is always the sum of the entries, hence never negative.
    Immutable; each call returns a new ledger (the copy is of one node's ≤ ~110 pods)."""

    pods: Mapping[str, Resources] = field(default_factory=dict)
    total: Resources = ZERO

    def add(self, key: str, requests: Resources) -> NodeUsage:
        old = self.pods.get(key)
        if old == requests:
            return self
        pods = dict(self.pods)
        pods[key] = requests
        total = self.total + requests if old is None else self.total - old + requests
        return NodeUsage(pods, total)

    def remove(self, key: str) -> NodeUsage:
        old = self.pods.get(key)
        if old is None:
            return self
        pods = dict(self.pods)
        del pods[key]
        return NodeUsage(pods, self.total - old if pods else ZERO)

    def __contains__(self, key: object) -> bool:
        return key in self.pods


# --- the rules, one node at a time (reference) ----------------------------------------------
def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """`Toleration.ToleratesTaint` (module docstring)."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator == "Exists":
        return True
    if toleration.operator in ("", "Equal"):
        return toleration.value == taint.value
    return False


def untolerated(tols: Sequence[Toleration], taints: Iterable[Taint]) -> Taint | None:
    """The first NoSchedule/NoExecute taint no toleration tolerates, else None."""
    for taint in taints:
        if taint.effect in HARD_EFFECTS and not any(tolerates(t, taint) for t in tols):
            return taint
    return None


def tolerates_unschedulable(tols: Sequence[Toleration]) -> bool:
    """NodeUnschedulable: the pod may go to a cordoned node if it tolerates this taint."""
    taint = Taint(UNSCHEDULABLE_TAINT_KEY, "", "NoSchedule")
    return any(tolerates(t, taint) for t in tols)


_INT64 = re.compile(r"[+-]?[0-9]+")


def parse_int64(text: str) -> int | None:
    """Go `strconv.ParseInt(s, 10, 64)`: no spaces, no underscores, within int64; else None."""
    if not _INT64.fullmatch(text) or len(text) > 20:
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def _bound(req: Requirement) -> int | None:
    return parse_int64(req.values[0]) if len(req.values) == 1 else None


def requirement_matches(req: Requirement, labels: Mapping[str, str]) -> bool:
    """One matchExpressions entry against node labels (module docstring)."""
    op, values = req.operator, req.values
    if op == "In":
        return bool(values) and labels.get(req.key) in values
    if op == "NotIn":
        return bool(values) and labels.get(req.key) not in values
    if op == "Exists":
        return not values and req.key in labels
    if op == "DoesNotExist":
        return not values and req.key not in labels
    if op in ("Gt", "Lt"):
        bound = _bound(req)
        have = labels.get(req.key)
        value = None if have is None else parse_int64(have)
        if bound is None or value is None:
            return False
        return value > bound if op == "Gt" else value < bound
    return False


def field_matches(req: Requirement, name: str) -> bool:
    """One matchFields entry: only metadata.name, In/NotIn, exactly one value."""
    if req.key != FIELD_NODE_NAME or len(req.values) != 1:
        return False
    if req.operator == "In":
        return name == req.values[0]
    if req.operator == "NotIn":
        return name != req.values[0]
    return False


def term_matches(term: Term, labels: Mapping[str, str], name: str) -> bool:
    if not term.expressions and not term.fields:
        return False
    return all(requirement_matches(r, labels) for r in term.expressions) and all(
        field_matches(r, name) for r in term.fields
    )


def affinity_matches(terms: tuple[Term, ...] | None, labels: Mapping[str, str], name: str) -> bool:
    """Required node affinity: None → every node; else any term (an empty list → none)."""
    return terms is None or any(term_matches(t, labels, name) for t in terms)


def insufficient(pod_req: Resources, allocatable: Resources, requested: Resources) -> tuple[str, ...]:
    """NodeResourcesFit: names of the resources that do not fit, in fitsRequest order. A zero
    request always fits (even on an overcommitted node); pods always count 1."""
    out = []
    for name in _FIT_ORDER:
        want = pod_req.get(name)
        if name == "pods":
            want = max(want, 1)
        elif want <= 0:
            continue
        if want > allocatable.get(name) - requested.get(name):
            out.append(name)
    return tuple(out)


def score_failure(score: ScoreRecord | None) -> Failure | None:
    """Fuzzy filter: allowed & fresh → pass; missing or stale → no_score; else fuzzy_deny."""
    if score is None or not score.fresh:
        return NO_SCORE_FAILURE
    if not score.allowed:
        return fuzzy_failure(score.score)
    return None


def first_failure(
    pod_req: Resources, pod: PodView, node: NodeInfo, usage: Resources, score: ScoreRecord | None
) -> Failure | None:
    """The first filter (module docstring order) that `node` fails for `pod`, or None when the
    node is feasible. `usage` is what is already requested on the node (normally
    `node.requested`); `pod_req` the pod's effective requests (normally `pod.requests`)."""
    if not node.ready:
        return NOT_READY_FAILURE
    if node.unschedulable and not tolerates_unschedulable(pod.tolerations):
        return UNSCHEDULABLE_FAILURE
    taint = untolerated(pod.tolerations, node.taints)
    if taint is not None:
        return taint_failure(taint)
    labels = node.labels
    if any(labels.get(k) != v for k, v in pod.node_selector):
        return SELECTOR_FAILURE
    if not affinity_matches(pod.affinity, labels, node.name):
        return AFFINITY_FAILURE
    short = insufficient(pod_req, node.allocatable, usage)
    if short:
        return resource_failure(short)
    return score_failure(score)


# --- the same rules over all nodes at once --------------------------------------------------
_EMPTY: frozenset[str] = frozenset()


class NodeTable:
    """All nodes, parsed and indexed for `feasible`. Build it when nodes change (`build`,
    `with_node`, `without`) and when usage changes (`with_requested`), never per pod. Immutable:
    every change returns a new table sharing what did not change.

    Indexes: not-ready and cordoned name sets; nodes grouped by their hard-taint tuple; labels
    as key → value → names; per resource the nodes sorted by free amount (allocatable −
    requested), so "request > free" is a prefix found by bisection.
    """

    __slots__ = ("_by_taints", "_free_names", "_free_vals", "_has_key", "_labels", "infos", "names",
                 "not_ready", "unschedulable")

    infos: dict[str, NodeInfo]
    names: frozenset[str]
    not_ready: frozenset[str]
    unschedulable: frozenset[str]
    _by_taints: dict[tuple[Taint, ...], frozenset[str]]
    _labels: dict[str, dict[str, frozenset[str]]]
    _has_key: dict[str, frozenset[str]]
    _free_vals: dict[str, list[int]]
    _free_names: dict[str, list[str]]

    @classmethod
    def build(cls, nodes: Iterable[NodeInfo]) -> NodeTable:
        """Index `nodes` (a later node with the same name replaces an earlier one)."""
        self = cls.__new__(cls)
        infos = {n.name: n for n in nodes}
        self.infos = infos
        self.names = frozenset(infos)
        self.not_ready = frozenset(n for n, i in infos.items() if not i.ready)
        self.unschedulable = frozenset(n for n, i in infos.items() if i.ready and i.unschedulable)
        by_taints: dict[tuple[Taint, ...], set[str]] = {}
        labels: dict[str, dict[str, set[str]]] = {}
        for name, info in infos.items():
            if info.taints:
                by_taints.setdefault(info.taints, set()).add(name)
            for k, v in info.labels.items():
                labels.setdefault(k, {}).setdefault(v, set()).add(name)
        self._by_taints = {t: frozenset(s) for t, s in by_taints.items()}
        self._labels = {k: {v: frozenset(s) for v, s in vs.items()} for k, vs in labels.items()}
        self._has_key = {k: frozenset().union(*vs.values()) for k, vs in self._labels.items()}
        self._free_vals, self._free_names = {}, {}
        for resource in RESOURCES:
            pairs = sorted((i.allocatable.get(resource) - i.requested.get(resource), n) for n, i in infos.items())
            self._free_vals[resource] = [p[0] for p in pairs]
            self._free_names[resource] = [p[1] for p in pairs]
        return self

    def __len__(self) -> int:
        return len(self.infos)

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self.infos.values())

    def __getitem__(self, name: str) -> NodeInfo:
        return self.infos[name]

    def __contains__(self, name: object) -> bool:
        return name in self.infos

    def with_node(self, info: NodeInfo) -> NodeTable:
        """Add or replace a node. When only allocatable / requested changed (a status update)
        the indexes are reused; otherwise the table is rebuilt (coalesce node events per cycle)."""
        old = self.infos.get(info.name)
        if old is not None and old.static_part() == info.static_part():
            return self._with_resources(info)
        return NodeTable.build([*(i for n, i in self.infos.items() if n != info.name), info])

    def without(self, name: str) -> NodeTable:
        if name not in self.infos:
            return self
        return NodeTable.build(i for n, i in self.infos.items() if n != name)

    def with_requested(self, name: str, requested: Resources) -> NodeTable:
        """The same nodes with `name`'s requested sum replaced (after a bind, an assumption, or a
        pod event); unknown names are ignored."""
        old = self.infos.get(name)
        if old is None or old.requested == requested:
            return self
        return self._with_resources(replace(old, requested=requested))

    def _with_resources(self, info: NodeInfo) -> NodeTable:
        old = self.infos[info.name]
        new = NodeTable.__new__(NodeTable)
        for slot in NodeTable.__slots__:
            setattr(new, slot, getattr(self, slot))
        new.infos = dict(self.infos)
        new.infos[info.name] = info
        new._free_vals, new._free_names = dict(self._free_vals), dict(self._free_names)
        for resource in RESOURCES:
            before = old.allocatable.get(resource) - old.requested.get(resource)
            after = info.allocatable.get(resource) - info.requested.get(resource)
            if before == after:
                continue
            vals, names = list(self._free_vals[resource]), list(self._free_names[resource])
            at = names.index(info.name, bisect_left(vals, before))
            del vals[at], names[at]
            at = bisect_left(vals, after)
            vals.insert(at, after)
            names.insert(at, info.name)
            new._free_vals[resource], new._free_names[resource] = vals, names
        return new

    # -- set queries used by `feasible`
    def with_label(self, key: str, value: str) -> frozenset[str]:
        return self._labels.get(key, {}).get(value, _EMPTY)

    def requirement_set(self, req: Requirement) -> frozenset[str]:
        """Names whose labels satisfy one matchExpressions entry (same rules as
        `requirement_matches`)."""
        op, values = req.operator, req.values
        by_value = self._labels.get(req.key, {})
        if op == "In":
            return frozenset().union(*(by_value.get(v, _EMPTY) for v in values)) if values else _EMPTY
        if op == "NotIn":
            return self.names.difference(*(by_value.get(v, _EMPTY) for v in values)) if values else _EMPTY
        if op == "Exists":
            return _EMPTY if values else self._has_key.get(req.key, _EMPTY)
        if op == "DoesNotExist":
            return _EMPTY if values else self.names - self._has_key.get(req.key, _EMPTY)
        if op in ("Gt", "Lt"):
            bound = _bound(req)
            if bound is None:
                return _EMPTY
            hits = []
            for text, names in by_value.items():
                value = parse_int64(text)
                if value is not None and (value > bound if op == "Gt" else value < bound):
                    hits.append(names)
            return frozenset().union(*hits)
        return _EMPTY

    def field_set(self, req: Requirement) -> frozenset[str]:
        if req.key != FIELD_NODE_NAME or len(req.values) != 1:
            return _EMPTY
        if req.operator == "In":
            return self.names & {req.values[0]}
        if req.operator == "NotIn":
            return self.names - {req.values[0]}
        return _EMPTY

    def term_set(self, term: Term) -> frozenset[str]:
        if not term.expressions and not term.fields:
            return _EMPTY
        sets = [self.requirement_set(r) for r in term.expressions] + [self.field_set(r) for r in term.fields]
        sets.sort(key=len)
        return sets[0].intersection(*sets[1:])

    def short_of(self, resource: str, want: int) -> list[str]:
        """Names whose free `resource` is below `want` (request > allocatable − requested)."""
        return self._free_names[resource][: bisect_left(self._free_vals[resource], want)]


class ScoreTable:
    """Score records indexed for `feasible` and `choose`: build once per score refresh (one
    query per cycle), not per pod."""

    __slots__ = ("allowed", "denied", "order", "score")

    allowed: frozenset[str]
    denied: dict[Failure, frozenset[str]]
    score: dict[str, float]
    order: list[str]

    def __init__(self, records: Mapping[str, ScoreRecord]) -> None:
        allowed: dict[str, float] = {}
        denied: dict[Failure, set[str]] = {}
        for name, record in records.items():
            failure = score_failure(record)
            if failure is None:
                allowed[name] = record.score if math.isfinite(record.score) else math.inf
            elif failure is not NO_SCORE_FAILURE:
                denied.setdefault(failure, set()).add(name)
        self.allowed = frozenset(allowed)
        self.denied = {f: frozenset(s) for f, s in denied.items()}
        self.score = allowed
        self.order = sorted(allowed, key=lambda n: (allowed[n], n))  # choice walks this


def feasible(
    pod: PodView | Mapping[str, Any],
    nodes: NodeTable | Sequence[NodeInfo],
    scores: ScoreTable | Mapping[str, ScoreRecord],
) -> tuple[frozenset[str], dict[str, Failure]]:
    """(names of the nodes that pass every filter, {other node: its first failure}).

    Equal to `first_failure(pod.requests, pod, node, node.requested, scores.get(node.name))` per
    node. Pass a prebuilt `NodeTable` and `ScoreTable` (the shell keeps both); plain sequences
    and mappings are indexed on the spot. A wire-format pod is parsed here (may raise
    `QuantityError`)."""
    view = pod if isinstance(pod, PodView) else pod_view(pod)
    table = nodes if isinstance(nodes, NodeTable) else NodeTable.build(nodes)
    score_table = scores if isinstance(scores, ScoreTable) else ScoreTable(scores)
    failures: dict[str, Failure] = {}
    remaining = table.names

    def fail(names: Iterable[str], failure: Failure) -> None:
        failures.update(dict.fromkeys(names, failure))

    if table.not_ready:
        fail(table.not_ready, NOT_READY_FAILURE)
        remaining = remaining - table.not_ready
    if table.unschedulable and not tolerates_unschedulable(view.tolerations):
        fail(table.unschedulable, UNSCHEDULABLE_FAILURE)
        remaining = remaining - table.unschedulable
    tainted = []
    for taints, group in table._by_taints.items():
        taint = untolerated(view.tolerations, taints)
        if taint is not None:
            bad = group & remaining
            if bad:
                fail(bad, taint_failure(taint))
                tainted.append(bad)
    if tainted:
        remaining = remaining.difference(*tainted)
    if view.node_selector and remaining:
        sets = sorted((table.with_label(k, v) for k, v in view.node_selector), key=len)
        ok = remaining.intersection(*sets)
        fail(remaining - ok, SELECTOR_FAILURE)
        remaining = ok
    if view.affinity is not None and remaining:
        ok = remaining & frozenset().union(*(table.term_set(t) for t in view.affinity))
        fail(remaining - ok, AFFINITY_FAILURE)
        remaining = ok
    if remaining:
        remaining = _resources_filter(view.requests, table, remaining, failures)
    if remaining:
        passing = remaining & score_table.allowed
        rest = remaining - passing
        for failure, group in score_table.denied.items():
            bad = group & rest
            if bad:
                fail(bad, failure)
                rest = rest - bad
        fail(rest, NO_SCORE_FAILURE)
        remaining = passing
    return remaining, failures


def _resources_filter(
    req: Resources, table: NodeTable, remaining: frozenset[str], failures: dict[str, Failure]
) -> frozenset[str]:
    short: list[tuple[str, frozenset[str]]] = []
    for resource in _FIT_ORDER:
        want = max(req.pods, 1) if resource == "pods" else req.get(resource)
        if resource != "pods" and want <= 0:
            continue
        bad = remaining.intersection(table.short_of(resource, want))
        if bad:
            short.append((resource, bad))
    if not short:
        return remaining
    if len(short) == 1:
        resource, bad = short[0]
        failures.update(dict.fromkeys(bad, resource_failure((resource,))))
        return remaining - bad
    union = frozenset().union(*(bad for _, bad in short))
    # Every combination of short resources, by inclusion–exclusion over ≤ 4 sets.
    for mask in range(1, 1 << len(short)):
        inside = [bad for i, (_, bad) in enumerate(short) if mask >> i & 1]
        outside = [bad for i, (_, bad) in enumerate(short) if not mask >> i & 1]
        group = inside[0].intersection(*inside[1:]).difference(*outside)
        if group:
            combo = tuple(r for i, (r, _) in enumerate(short) if mask >> i & 1)
            failures.update(dict.fromkeys(group, resource_failure(combo)))
    return remaining - union


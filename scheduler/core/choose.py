"""Which feasible node gets the pod (docs/design.md#the-fuzzy-scheduler choice), pure and deterministic.

    key(node) = (score, −free_cpu_after, name)        chosen = argmin key

Lowest fuzzy score first (less friction); ties by most free CPU after placing this pod
(allocatable − requested − pod request, millicores); then by name. A non-finite score sorts
last. `choose` is the rule over explicit candidates; `choose_node` is the same rule over the
indexes (`ScoreTable.order` is sorted by score once per score refresh, so a pod costs a walk to
the first feasible node plus its score ties); `decide` is filters + choice for one pod.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.core.filters import (
    Failure,
    NodeInfo,
    NodeTable,
    PodView,
    ScoreRecord,
    ScoreTable,
    feasible,
    pod_view,
)
from scheduler.core.pods import Resources


@dataclass(frozen=True, slots=True)
class Candidate:
    """A feasible node: its name, fuzzy score and free CPU after this pod (millicores)."""

    name: str
    score: float
    free_cpu: int


def choice_key(candidate: Candidate) -> tuple[float, int, str]:
    score = candidate.score if math.isfinite(candidate.score) else math.inf
    return (score, -candidate.free_cpu, candidate.name)


def choose(candidates: Iterable[Candidate]) -> Candidate | None:
    """The candidate with the smallest `choice_key`, None when there is none."""
    return min(candidates, key=choice_key, default=None)


def candidate(name: str, pod_req: Resources, table: NodeTable, scores: ScoreTable) -> Candidate:
    info = table[name]
    return Candidate(name, scores.score[name], info.allocatable.cpu - info.requested.cpu - pod_req.cpu)


def choose_node(
    pod_req: Resources, passing: Collection[str], table: NodeTable, scores: ScoreTable
) -> Candidate | None:
    """`choose` over the feasible names `passing` (each must be in `scores.allowed`)."""
    if not passing:
        return None
    order = scores.order
    start = next((i for i, name in enumerate(order) if name in passing), None)
    if start is None:
        return None
    best = scores.score[order[start]]
    ties = [order[start]]
    for name in order[start + 1 :]:
        if scores.score[name] != best:
            break
        if name in passing:
            ties.append(name)
    if len(ties) == 1:
        return candidate(ties[0], pod_req, table, scores)
    return choose(candidate(n, pod_req, table, scores) for n in ties)


@dataclass(frozen=True, slots=True)
class Decision:
    """One pod attempt: the chosen node (None → unschedulable), how many nodes passed, and the
    first failure of every other node (for the message and the unschedulable counter)."""

    chosen: Candidate | None
    feasible: int
    total: int
    failures: Mapping[str, Failure]

    @property
    def node(self) -> str | None:
        return None if self.chosen is None else self.chosen.name


def decide(
    pod: PodView | Mapping[str, Any],
    nodes: NodeTable | Collection[NodeInfo],
    scores: ScoreTable | Mapping[str, ScoreRecord],
) -> Decision:
    """Filters + choice for one pod. A wire-format pod is parsed here and may raise
    `QuantityError` (report that pod unschedulable with the error; others go on)."""
    view = pod if isinstance(pod, PodView) else pod_view(pod)
    table = nodes if isinstance(nodes, NodeTable) else NodeTable.build(nodes)
    score_table = scores if isinstance(scores, ScoreTable) else ScoreTable(scores)
    passing, failures = feasible(view, table, score_table)
    chosen = choose_node(view.requests, passing, table, score_table)
    return Decision(chosen, len(passing), len(table), failures)

"""What an unschedulable pod is told (docs/design.md#the-fuzzy-scheduler feedback): the FailedScheduling message, its
dedupe key, and the PodScheduled=False condition, pure.

Message format is kube-scheduler's `FitError.Error()`:

    "0/<total> nodes are available: " + ", ".join(sorted(f"{count} {detail}")) + "."

one entry per distinct failure detail (a node short of cpu and memory counts in both), sorted as
plain strings — Go's `sort.Strings`, so "10 …" sorts before "2 …", exactly as `kubectl describe`
shows for the stock scheduler. No nodes at all: "no nodes available to schedule pods". There is
no preemption suffix: this scheduler does not preempt. Where kube-scheduler would stop, this one
adds who is behind a fuzzy deny when the score source knows (`pods_suffix`):
`0/3 nodes are available: 3 fuzzy deny (score ≥ 70). Node w1: victim shop/checkout, aggressor
batch/nightly, io aggressor backup/restic.` — the aggregated counts before it are unchanged.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from common.names import role_shown
from scheduler.core.filters import FUZZY_DENY, Failure, ScoreRecord
from scheduler.core.quantity import QuantityError

NO_NODES_MESSAGE = "no nodes available to schedule pods"
#: Fuzzy-denied nodes whose top victim and aggressor pods a message names, at most.
NAMED_NODES = 2
EVENT_REASON = "FailedScheduling"
CONDITION_TYPE = "PodScheduled"
CONDITION_REASON = "Unschedulable"


def _failures(failures: Mapping[str, Failure] | Iterable[Failure]) -> Iterable[Failure]:
    return failures.values() if isinstance(failures, Mapping) else failures


def detail_counts(failures: Mapping[str, Failure] | Iterable[Failure]) -> Counter[str]:
    """How many nodes report each detail text."""
    return Counter(d for f in _failures(failures) for d in f.details)


def reason_counts(failures: Mapping[str, Failure] | Iterable[Failure]) -> Counter[str]:
    """How many nodes failed first at each reason label (`ksense_scheduler_unschedulable_total`)."""
    return Counter(f.reason for f in _failures(failures))


def failed_scheduling_message(
    total_nodes: int,
    failures: Mapping[str, Failure] | Iterable[Failure],
    scores: Mapping[str, ScoreRecord] | None = None,
) -> str:
    """`0/5 nodes are available: 2 Insufficient cpu, 3 fuzzy deny (score ≥ 70).`, then the pods
    behind the fuzzy denies when `scores` names them (`pods_suffix`)."""
    if total_nodes <= 0:
        return NO_NODES_MESSAGE
    parts = sorted(f"{count} {detail}" for detail, count in detail_counts(failures).items())
    message = f"0/{total_nodes} nodes are available:"
    if parts:
        message += " " + ", ".join(parts) + "."
    if scores and isinstance(failures, Mapping):
        message += pods_suffix(failures, scores)
    return message


def pods_suffix(failures: Mapping[str, Failure], scores: Mapping[str, ScoreRecord]) -> str:
    """` Node w3: victim shop/checkout, aggressor batch/nightly, io aggressor backup/restic.` (each
    role only when known) for the first `NAMED_NODES`
    fuzzy-denied nodes (by name) whose top pods the score source knows; "" when none.

    Bounded and stable on purpose: at most `NAMED_NODES` nodes, names only (rates move every
    tick and would defeat the one-event-per-distinct-message dedupe), nodes in name order (the
    same set of denied nodes names the same nodes whatever their scores do)."""
    named = []
    for node in sorted(failures):
        record = scores.get(node)
        if failures[node].reason != FUZZY_DENY or record is None or not record.top_pods:
            continue
        who = [f"{role_shown(role)} {pod}" for role, pod in record.top_pods]
        named.append(f"Node {node}: {', '.join(who)}.")
        if len(named) == NAMED_NODES:
            break
    return "".join(f" {part}" for part in named)


def invalid_pod_message(error: QuantityError) -> str:
    """Message for a pod whose requests do not parse (no node was tried)."""
    return f"pod has an invalid resource quantity: {error}"


def dedupe_key(pod_uid: str, message: str) -> str:
    """One event per distinct message per pod: the shell writes a FailedScheduling event only
    when this key differs from the last one it wrote for the pod (and forgets the pod when it
    is bound or deleted). Same inputs → same key, across replicas and restarts."""
    digest = hashlib.sha256(f"{EVENT_REASON}\0{message}".encode()).hexdigest()[:16]
    return f"{pod_uid}/{digest}"


def rfc3339(now: float) -> str:
    """Unix seconds → `2024-05-01T12:00:00Z` (Kubernetes metav1.Time, second precision)."""
    return datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unschedulable_condition(message: str, now: float) -> dict[str, Any]:
    """The `PodScheduled=False` condition (wire format) kube-scheduler sets."""
    return {
        "type": CONDITION_TYPE,
        "status": "False",
        "reason": CONDITION_REASON,
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": rfc3339(now),
    }


def condition_update(pod: Mapping[str, Any], message: str, now: float) -> dict[str, Any] | None:
    """The condition to write, or None when the pod already carries it with this message (no
    status write per cycle). The transition time is kept while the status stays False."""
    current = next(
        (c for c in (pod.get("status") or {}).get("conditions") or () if c.get("type") == CONDITION_TYPE), None
    )
    wanted = unschedulable_condition(message, now)
    if current is None:
        return wanted
    if (current.get("status"), current.get("reason"), current.get("message")) == ("False", CONDITION_REASON, message):
        return None
    if current.get("status") == "False" and current.get("lastTransitionTime"):
        wanted["lastTransitionTime"] = current["lastTransitionTime"]
    return wanted

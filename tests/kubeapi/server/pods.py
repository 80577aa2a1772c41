"""Pod semantics the store applies: conditions (podutil.UpdatePodCondition), scheduling gates
(KEP-3521) and the QoS class.
"""

from __future__ import annotations

from tests.kubeapi.server.timefmt import now_rfc3339


def set_condition(status: dict, cond: dict) -> None:
    """podutil.UpdatePodCondition: replace by type; lastTransitionTime moves only when status changes."""
    conds = status.setdefault("conditions", [])
    now = now_rfc3339()
    for i, c in enumerate(conds):
        if c.get("type") == cond["type"]:
            ltt = c.get("lastTransitionTime") if c.get("status") == cond["status"] else now
            conds[i] = {**cond, "lastProbeTime": None, "lastTransitionTime": ltt or now}
            return
    conds.append({**cond, "lastProbeTime": None, "lastTransitionTime": now})


def scheduling_gates(pod: dict) -> list[str]:
    """Names of the pod's `spec.schedulingGates` (KEP-3521): set at creation only, removable by an
    update, never added; a pod with any is not bound (pods/binding answers 409)."""
    return [g.get("name") or "" for g in (pod.get("spec") or {}).get("schedulingGates") or ()]


def gated_condition(status: dict) -> None:
    """The pod strategy's applySchedulingGatedCondition: a gated pod is created with
    PodScheduled=False reason SchedulingGated, unless it brings a PodScheduled condition."""
    if not any(c.get("type") == "PodScheduled" for c in status.get("conditions") or ()):
        set_condition(status, {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated",
                                "message": "Scheduling is blocked due to non-empty scheduling gates"})


def qos_class(spec: dict) -> str:
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    any_set, guaranteed = False, True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if any(k in req or k in lim for k in ("cpu", "memory")):
            any_set = True
        for k in ("cpu", "memory"):
            if k not in lim or req.get(k, lim[k]) != lim[k]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"

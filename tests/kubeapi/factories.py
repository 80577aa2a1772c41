"""Realistic pod, node, lease and binding objects (plain JSON dicts) for the fake API server.

Shapes follow core/v1 and coordination.k8s.io/v1 as the official client (de)serialises them, so
they pass kubernetes 37's response validation and can be POSTed as-is or stored in-process with
`server.store.create(...)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PAUSE_IMAGE = "registry.k8s.io/pause:3.9"


def pod(
    name: str,
    namespace: str = "default",
    *,
    scheduler_name: str | None = "fuzzy-scheduler",
    cpu: str | None = "100m",
    memory: str | None = "64Mi",
    ephemeral_storage: str | None = None,
    limits: Mapping[str, str] | None = None,
    containers: int = 1,
    node_name: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    affinity: Mapping[str, Any] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    priority: int | None = None,
    priority_class_name: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    phase: str | None = None,
    image: str = PAUSE_IMAGE,
    scheduling_gates: Sequence[str] = (),
) -> dict:
    """A pod; each of `containers` containers requests `cpu`, `memory` (and `ephemeral_storage`).

    `phase` is kept only by `store.create` (a POST resets status like the real server).
    `priority` is set directly for convenience; a real cluster computes it from
    `priorityClassName` and rejects a hand-set value.
    """
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory), ("ephemeral-storage", ephemeral_storage)) if v}
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = dict(requests)
    if limits:
        resources["limits"] = dict(limits)
    spec: dict[str, Any] = {
        "containers": [
            {"name": f"c{i}" if containers > 1 else "main", "image": image, "resources": resources}
            for i in range(containers)
        ],
    }
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    if node_name:
        spec["nodeName"] = node_name
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if affinity:
        spec["affinity"] = dict(affinity)
    if tolerations is not None:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if priority is not None:
        spec["priority"] = priority
    if priority_class_name:
        spec["priorityClassName"] = priority_class_name
    if scheduling_gates:
        spec["schedulingGates"] = [{"name": g} for g in scheduling_gates]
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {"app": name})}
    if annotations:
        meta["annotations"] = dict(annotations)
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str | int = "110",
    ephemeral_storage: str = "50Gi",
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, Any]] | None = None,
    unschedulable: bool = False,
    ready: bool = True,
    capacity: Mapping[str, str] | None = None,
    conditions: Sequence[Mapping[str, Any]] | None = None,
    address: str | None = None,
) -> dict:
    """A node with allocatable cpu/memory/pods/ephemeral-storage, the well-known labels, a Ready
    condition (True unless `ready=False`) and the pressure conditions False."""
    allocatable = {"cpu": str(cpu), "memory": str(memory), "pods": str(pods), "ephemeral-storage": ephemeral_storage}
    lab = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    lab.update(labels or {})
    ts = "2024-01-01T00:00:00Z"
    if conditions is None:
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m,
             "lastHeartbeatTime": ts, "lastTransitionTime": ts}
            for t, r, m in (("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                            ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                            ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"))
        ] + [{"type": "Ready", "status": "True" if ready else "False",
              "reason": "KubeletReady" if ready else "KubeletNotReady",
              "message": "kubelet is posting ready status" if ready else "container runtime is down",
              "lastHeartbeatTime": ts, "lastTransitionTime": ts}]
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    if unschedulable:
        spec["unschedulable"] = True
    status: dict[str, Any] = {
        "capacity": dict(capacity or allocatable),
        "allocatable": allocatable,
        "conditions": [dict(c) for c in conditions],
    }
    if address:
        status["addresses"] = [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": lab}, "spec": spec,
            "status": status}


def taint(key: str, value: str | None = None, effect: str = "NoSchedule") -> dict:
    t = {"key": key, "effect": effect}
    if value is not None:
        t["value"] = value
    return t


def toleration(key: str | None = None, operator: str = "Equal", value: str | None = None,
               effect: str | None = None, seconds: int | None = None) -> dict:
    t: dict[str, Any] = {"operator": operator}
    if key is not None:
        t["key"] = key
    if value is not None:
        t["value"] = value
    if effect is not None:
        t["effect"] = effect
    if seconds is not None:
        t["tolerationSeconds"] = seconds
    return t


def match_expression(key: str, operator: str, values: Iterable[str] | None = None) -> dict:
    """`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt` (Gt/Lt take one integer as a string)."""
    e: dict[str, Any] = {"key": key, "operator": operator}
    if values is not None:
        e["values"] = [str(v) for v in values]
    return e


def required_node_affinity(*terms: Sequence[Mapping[str, Any]]) -> dict:
    """Each term is a list of match expressions (ANDed); terms are ORed, as in the API."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [dict(e) for e in term]} for term in terms]}}}


def lease(name: str, namespace: str, *, holder: str | None = None, duration_s: int = 15,
          renew_time: str | None = None, transitions: int = 0) -> dict:
    spec: dict[str, Any] = {"leaseDurationSeconds": duration_s, "leaseTransitions": transitions}
    if holder is not None:
        spec["holderIdentity"] = holder
        spec["acquireTime"] = spec["renewTime"] = renew_time or "2024-01-01T00:00:00.000000Z"
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def binding(pod_name: str, node_name: str, *, namespace: str | None = None, uid: str | None = None) -> dict:
    meta: dict[str, Any] = {"name": pod_name}
    if namespace:
        meta["namespace"] = namespace
    if uid:
        meta["uid"] = uid
    return {"apiVersion": "v1", "kind": "Binding", "metadata": meta,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}

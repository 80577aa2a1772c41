"""What the scheduler reads from a Pod (Kubernetes wire-format dict, camelCase), pure.

Resource requests follow kube-scheduler's rule (`resourcehelper.PodRequests`), per resource:

    regular   = Σ containers[i].requests
    init      = max over init containers in order of
                  sidecar (restartPolicy: Always):  sidecars_so_far + this   (and sidecars_so_far += this)
                  ordinary init container:          this + sidecars_so_far
    effective = max(regular + Σ sidecars, init) + spec.overhead     (+ 1 pod)

Sidecar init containers (restartPolicy Always, KEP-753) keep running next to the app, so they
add to the regular sum and to every later init container. A container's missing request
defaults to its limit, as API-server defaulting does (objects read from the API already carry
it). Pod-level `spec.resources.requests` (cpu, memory; KEP-2837) replace the container sum of
that resource before the overhead is added. In-place resize (status-side allocated resources)
is not considered: the scheduler places pending pods, which have none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.core.quantity import canonical

RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods")
POD_LEVEL_RESOURCES = ("cpu", "memory")
#: Phases whose pods no longer hold their requests on the node (a pod being deleted still does
#: until it is gone, as in kube-scheduler).
TERMINATED_PHASES = ("Succeeded", "Failed")

Pod = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Resources:
    """Requests or capacity in canonical integers: millicores, bytes, bytes, pod count."""

    cpu: int = 0
    memory: int = 0
    ephemeral_storage: int = 0
    pods: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu + other.cpu,
            self.memory + other.memory,
            self.ephemeral_storage + other.ephemeral_storage,
            self.pods + other.pods,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu - other.cpu,
            self.memory - other.memory,
            self.ephemeral_storage - other.ephemeral_storage,
            self.pods - other.pods,
        )

    def maximum(self, other: Resources) -> Resources:
        """Per-resource max (the init-container rule)."""
        return Resources(
            max(self.cpu, other.cpu),
            max(self.memory, other.memory),
            max(self.ephemeral_storage, other.ephemeral_storage),
            max(self.pods, other.pods),
        )

    def get(self, resource: str) -> int:
        """Value by Kubernetes resource name ("cpu", "memory", "ephemeral-storage", "pods")."""
        value: int = getattr(self, _ATTR[resource])
        return value

    def nonnegative(self) -> bool:
        return self.cpu >= 0 and self.memory >= 0 and self.ephemeral_storage >= 0 and self.pods >= 0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, field: str) -> Resources:
        """Parse a `{resource: quantity}` map (requests, allocatable, overhead); other resources
        (hugepages, GPUs) are ignored; a malformed quantity raises `QuantityError`."""
        if not values:
            return ZERO
        kwargs = {}
        for name in RESOURCES:
            if name in values and values[name] is not None:
                kwargs[_ATTR[name]] = canonical(name, values[name], f"{field}.{name}")
        return cls(**kwargs)


_ATTR = {"cpu": "cpu", "memory": "memory", "ephemeral-storage": "ephemeral_storage", "pods": "pods"}
ZERO = Resources()
ONE_POD = Resources(pods=1)


# --- requests -------------------------------------------------------------------------------
def container_requests(container: Mapping[str, Any], field: str) -> Resources:
    """One container's requests, a missing request defaulting to its limit (pods = 0)."""
    resources = container.get("resources") or {}
    requests = dict(resources.get("requests") or {})
    for name, limit in (resources.get("limits") or {}).items():
        requests.setdefault(name, limit)
    requests.pop("pods", None)
    return Resources.from_mapping(requests, f"{field}.resources.requests")


def _container_field(kind: str, index: int, container: Mapping[str, Any]) -> str:
    return f"spec.{kind}[{container.get('name') or index}]"


def pod_requests(pod: Pod) -> Resources:
    """Effective requests of the pod (module docstring), including 1 pod. Raises `QuantityError`
    naming the field, e.g. `spec.containers[app].resources.requests.cpu: invalid quantity 'abc'`."""
    spec = pod.get("spec") or {}
    regular = ZERO
    for i, c in enumerate(spec.get("containers") or ()):
        regular += container_requests(c, _container_field("containers", i, c))
    init = ZERO
    sidecars = ZERO
    for i, c in enumerate(spec.get("initContainers") or ()):
        this = container_requests(c, _container_field("initContainers", i, c))
        if c.get("restartPolicy") == "Always":
            sidecars += this
            init = init.maximum(sidecars)
        else:
            init = init.maximum(this + sidecars)
    effective = (regular + sidecars).maximum(init)
    pod_level = ((spec.get("resources") or {}).get("requests")) or {}
    if pod_level:
        level = Resources.from_mapping({k: v for k, v in pod_level.items() if k in POD_LEVEL_RESOURCES},
                                       "spec.resources.requests")
        effective = Resources(
            level.cpu if "cpu" in pod_level else effective.cpu,
            level.memory if "memory" in pod_level else effective.memory,
            effective.ephemeral_storage,
            0,
        )
    overhead = Resources.from_mapping(spec.get("overhead"), "spec.overhead")
    return Resources(
        effective.cpu + overhead.cpu,
        effective.memory + overhead.memory,
        effective.ephemeral_storage + overhead.ephemeral_storage,
        1,
    )


# --- identity, lifecycle, queue fields ------------------------------------------------------
def pod_key(pod: Pod) -> str:
    """`namespace/name` (namespace defaults to "default")."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}"


def usage_key(pod: Pod) -> str:
    """Key of a pod in the cache (usage ledger, assumptions, tombstones): its uid (a recreated pod
    with the same name is a different pod), else `namespace/name`."""
    return (pod.get("metadata") or {}).get("uid") or pod_key(pod)


def being_deleted(pod: Pod) -> bool:
    """`metadata.deletionTimestamp` is set: kube-scheduler does not schedule such a pod (and the
    API would refuse the binding)."""
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def gated(pod: Pod) -> bool:
    """`spec.schedulingGates` is not empty (KEP-3521): kube-scheduler's PreEnqueue keeps the pod
    off its queue until an update removes the last gate (gates cannot be added after creation,
    and the API refuses to bind a gated pod)."""
    return bool((pod.get("spec") or {}).get("schedulingGates"))


def node_name(pod: Pod) -> str:
    """`spec.nodeName`, "" when unbound."""
    return (pod.get("spec") or {}).get("nodeName") or ""


def priority(pod: Pod) -> int:
    """`spec.priority` (set by the Priority admission plugin from the class), default 0."""
    value = (pod.get("spec") or {}).get("priority")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


_FRACTION = re.compile(r"\.(\d+)")


def parse_timestamp(text: object) -> float:
    """RFC 3339 (`2024-05-01T12:00:00Z`, optional fraction and offset) → Unix seconds; missing or
    malformed → +inf, so such a pod sorts last instead of starving the queue."""
    if not isinstance(text, str) or "T" not in text:
        return math.inf
    # Python 3.11 fromisoformat takes 3 or 6 fractional digits only; RFC 3339 allows any number.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return math.inf
    if stamp.tzinfo is None:
        return math.inf
    return stamp.timestamp()


def creation_key(pod: Pod) -> float:
    """Sortable creation time: `metadata.creationTimestamp` as Unix seconds (+inf if absent)."""
    return parse_timestamp((pod.get("metadata") or {}).get("creationTimestamp"))


# --- placement constraints ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Toleration:
    """`spec.tolerations[i]`; operator "" means Equal. tolerationSeconds is irrelevant to
    scheduling (it bounds how long a NoExecute taint lets a running pod stay)."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One `matchExpressions` / `matchFields` entry: key, operator, values."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Term:
    """One `nodeSelectorTerms` entry: all expressions and all fields must match (AND)."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()


def tolerations(pod: Pod) -> tuple[Toleration, ...]:
    """`spec.tolerations` as value objects."""
    out = []
    for t in (pod.get("spec") or {}).get("tolerations") or ():
        out.append(Toleration(
            key=t.get("key") or "",
            operator=t.get("operator") or "Equal",
            value="" if t.get("value") is None else str(t.get("value")),
            effect=t.get("effect") or "",
        ))
    return tuple(out)


def node_selector(pod: Pod) -> dict[str, str]:
    """`spec.nodeSelector` (every label must be present with that value)."""
    return {str(k): str(v) for k, v in ((pod.get("spec") or {}).get("nodeSelector") or {}).items()}


def _requirements(items: Sequence[Mapping[str, Any]] | None) -> tuple[Requirement, ...]:
    return tuple(
        Requirement(r.get("key") or "", r.get("operator") or "", tuple(str(v) for v in r.get("values") or ()))
        for r in items or ()
    )


def required_affinity(pod: Pod) -> tuple[Term, ...] | None:
    """`spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`
    (terms ORed); None when the pod has no required node affinity (every node matches). An
    empty term list matches no node, like kube-scheduler."""
    node_affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return None
    return tuple(
        Term(_requirements(t.get("matchExpressions")), _requirements(t.get("matchFields")))
        for t in required.get("nodeSelectorTerms") or ()
    )

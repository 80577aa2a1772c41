"""The resource types served (pods, nodes, events, leases, events.k8s.io events, services):
their group/version/kind, the field selectors each supports, and lookup by URL path or name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.kubeapi.server.selectors import META_FIELDS, getter


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    fields: Mapping[str, Callable[[dict], str]]
    status_subresource: bool = False
    delete_returns_object: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`pods`, `leases.coordination.k8s.io`: how error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def name(self) -> str:
        """Store and counter key: the plural, qualified only where two groups share a plural."""
        return self.qualified if self.group == "events.k8s.io" else self.plural


_POD_FIELDS = {
    **META_FIELDS,
    "spec.nodeName": getter("spec", "nodeName"),
    "spec.schedulerName": getter("spec", "schedulerName"),
    "spec.restartPolicy": getter("spec", "restartPolicy"),
    "spec.serviceAccountName": getter("spec", "serviceAccountName"),
    "spec.hostNetwork": lambda o: "true" if (o.get("spec") or {}).get("hostNetwork") else "false",
    "status.phase": getter("status", "phase"),
    "status.podIP": getter("status", "podIP"),
    "status.nominatedNodeName": getter("status", "nominatedNodeName"),
}
_NODE_FIELDS = {
    "metadata.name": getter("metadata", "name"),
    "spec.unschedulable": lambda o: "true" if (o.get("spec") or {}).get("unschedulable") else "false",
}
_EVENT_FIELDS = {
    **META_FIELDS,
    **{f"involvedObject.{f}": getter("involvedObject", f)
       for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
    "reason": getter("reason"),
    "reportingComponent": getter("reportingComponent"),
    "source": getter("source", "component"),
    "type": getter("type"),
}
_NEW_EVENT_FIELDS = {
    **META_FIELDS,
    **{f"regarding.{f}": getter("regarding", f) for f in ("kind", "namespace", "name", "uid")},
    "reason": getter("reason"),
    "reportingController": getter("reportingController"),
    "type": getter("type"),
}

PODS = ResourceType("", "v1", "pods", "Pod", True, _POD_FIELDS, status_subresource=True, delete_returns_object=True)
NODES = ResourceType("", "v1", "nodes", "Node", False, _NODE_FIELDS, status_subresource=True)
EVENTS = ResourceType("", "v1", "events", "Event", True, _EVENT_FIELDS)
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, META_FIELDS)
NEW_EVENTS = ResourceType("events.k8s.io", "v1", "events", "Event", True, _NEW_EVENT_FIELDS)
# The lifecycle load tool creates NodePort Services next to its pods (nodePort uniqueness and
# cluster IP allocation are not emulated).
SERVICES = ResourceType("", "v1", "services", "Service", True, META_FIELDS, status_subresource=True,
                        delete_returns_object=True)
RESOURCES: tuple[ResourceType, ...] = (PODS, NODES, EVENTS, LEASES, NEW_EVENTS, SERVICES)
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_NAME = {r.name: r for r in RESOURCES}


def resource(name: str | ResourceType) -> ResourceType:
    if isinstance(name, ResourceType):
        return name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown resource {name!r}; known: {sorted(_BY_NAME)}") from None

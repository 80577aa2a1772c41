"""URL paths to routes (resource, namespace, name, subresource) and HTTP methods to API verbs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.kubeapi.server.resources import BY_PATH, NODES, PODS, ResourceType


@dataclass(frozen=True)
class Route:
    rt: ResourceType | None
    namespace: str | None
    name: str | None
    sub: str | None
    special: str | None = None  # version, healthz, api, apis, bindings


def route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if path in ("/healthz", "/readyz", "/livez"):
        return Route(None, None, None, None, "healthz")
    if path == "/version":
        return Route(None, None, None, None, "version")
    if parts == ["api"]:
        return Route(None, None, None, None, "api")
    if parts == ["apis"]:
        return Route(None, None, None, None, "apis")
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    if (group, rest[0]) == ("", "bindings") and ns and len(rest) == 1:
        return Route(PODS, ns, None, "binding", "bindings")
    rt = BY_PATH.get((group, version, rest[0]))
    if rt is None or (ns is not None and not rt.namespaced):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if rt.namespaced and name is not None and ns is None:
        return None
    if sub is not None and not ((rt is PODS and sub in ("status", "binding")) or (rt is NODES and sub == "status")):
        return None
    return Route(rt, ns, name, sub)


def route_verb(method: str, r: Route, watch: bool) -> str:
    if method == "GET":
        if watch:
            return "watch"
        return "list" if r.name is None else "get"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if r.name is not None else "deletecollection"
    return method.lower()

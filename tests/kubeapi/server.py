"""A fake Kubernetes API server over real HTTP, for tests that drive the official `kubernetes` client.

No kube-apiserver can be installed on our machines (docs/development.md), and kmock 0.8 has no selectors,
uids, resourceVersions or PUT. This module implements, in memory, the slice of API semantics the
scheduler relies on, so that `scheduler.kube` runs its real client code against it:

- one global resourceVersion counter (like etcd) and a bounded history of watch events;
- core/v1 pods (+ `binding`, `status`), nodes (+ `status`), events; coordination.k8s.io/v1 leases;
  events.k8s.io/v1 events (stored apart from core events, no conversion between the two);
- pod scheduling gates (KEP-3521): a gated pod is created with PodScheduled=False reason
  SchedulingGated, its gates can be removed by an update but none added, and its binding is
  refused (409, as the real pods/binding);
- list with `fieldSelector`, `labelSelector`, `limit`/`continue`; get; create (uid,
  creationTimestamp, pod defaulting); update (PUT) with resourceVersion/uid preconditions;
  patch (strategic merge, JSON merge, JSON patch); delete with preconditions; deletecollection;
- watch from a resourceVersion, streamed as chunked JSON lines, with selector-aware
  ADDED/MODIFIED/DELETED conversion (an object that stops matching is sent as DELETED with its
  previous content, as the watch cache does), bookmarks, and `410 Expired` as an ERROR event
  when the resourceVersion is older than the retained history;
- Status error bodies shaped like the real ones (NotFound, AlreadyExists, Conflict, Invalid, ...);
- fault injection (fail / hang / reset the next N matching requests), dropping or expiring open
  watches, compacting the history, and request counting by (verb, resource).

Written by hand because no maintained Python library emulates these semantics. What it does not
emulate is listed in `NOT_EMULATED`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import select
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

NOT_EMULATED = (
    "authentication, authorization, admission webhooks, API priority and fairness (no 429s unless injected)",
    "protobuf, CBOR, YAML and server-side apply (apply-patch answers 415); table output",
    "dryRun (answers 400 instead of pretending)",
    "graceful deletion: DELETE removes a pod at once, bound or not (no kubelet, no deletionTimestamp phase)",
    "finalizers, ownerReferences and garbage collection; namespaces (any namespace name is accepted)",
    "field validation of objects beyond pods' containers/image, names, event involvedObject.namespace",
    "ResourceQuota, LimitRange, PriorityClass objects (known class names are a dict on the store)",
    "events.k8s.io/v1 <-> core/v1 event conversion (two separate stores); event TTL",
    "list consistency: `continue` pages read the current state, not the first page's snapshot; "
    "resourceVersionMatch=Exact and rv-too-large (504) for lists and watches",
    "per-resource watch caches: one global history shared by all resources (like etcd compaction)",
    "managedFields, generation bumps, selfLink, per-item kind/apiVersion stripping in lists",
    "the `/watch/` legacy paths, discovery beyond /version, /api, /apis, health endpoints",
)

# --------------------------------------------------------------------------------------------
# Errors: Status bodies as the real API server writes them


class ApiError(Exception):
    """An error the server answers with a `kind: Status` body."""

    REASONS: Mapping[int, str] = {
        400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
        409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
        429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
    }

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }
    if details:
        body["details"] = details
    return body


def _details(rt: ResourceType, name: str, kind: str | None = None) -> dict:
    d = {"name": name, "kind": kind or rt.plural}
    if rt.group:
        d["group"] = rt.group
    return d


def _not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.qualified} "{name}" not found', "NotFound", _details(rt, name))


def _conflict(rt: ResourceType, name: str, why: str, qualified: str | None = None, kind: str | None = None) -> ApiError:
    what = qualified or rt.qualified
    return ApiError(409, f'Operation cannot be fulfilled on {what} "{name}": {why}', "Conflict",
                    _details(rt, name, kind))


def _invalid(rt: ResourceType, name: str, causes: str) -> ApiError:
    return ApiError(422, f'{rt.kind} "{name}" is invalid: {causes}', "Invalid", _details(rt, name, rt.kind))


MODIFIED_MSG = "the object has been modified; please apply your changes to the latest version and try again"

# --------------------------------------------------------------------------------------------
# Selectors


def _getter(*path: str) -> Callable[[dict], str]:
    def get(obj: dict) -> str:
        cur: Any = obj
        for p in path:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(p)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)
    return get


_META_FIELDS = {"metadata.name": _getter("metadata", "name"), "metadata.namespace": _getter("metadata", "namespace")}


@dataclass(frozen=True)
class Selector:
    """Field and label requirements (all ANDed) plus an optional namespace."""

    fields: tuple[tuple[Callable[[dict], str], bool, str], ...] = ()  # (getter, equal?, value)
    labels: tuple[tuple[str, str, frozenset[str]], ...] = ()  # (key, op, values)
    namespace: str | None = None

    def matches(self, obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        for get, equal, value in self.fields:
            if (get(obj) == value) != equal:
                return False
        if self.labels:
            have = meta.get("labels") or {}
            for key, op, values in self.labels:
                if not _label_ok(have, key, op, values):
                    return False
        return True


def _label_ok(have: Mapping[str, str], key: str, op: str, values: frozenset[str]) -> bool:
    present = key in have
    if op == "exists":
        return present
    if op == "!":
        return not present
    if op in ("=", "in"):
        return present and have[key] in values
    if op in ("!=", "notin"):
        return not present or have[key] not in values
    if op in (">", "<"):
        try:
            v, bound = int(have[key]), int(next(iter(values)))
        except (KeyError, ValueError):
            return False
        return v > bound if op == ">" else v < bound
    raise AssertionError(op)


def parse_field_selector(text: str, supported: Mapping[str, Callable[[dict], str]]) -> tuple:
    reqs = []
    for term in text.split(","):
        term = term.strip()
        if not term:
            continue
        for op in ("!=", "==", "="):
            i = term.find(op)
            if i >= 0:
                key, value = term[:i].strip(), term[i + len(op):].strip()
                break
        else:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{term}'")
        if key not in supported:
            raise ApiError(400, f'field label not supported: {key}')
        reqs.append((supported[key], op != "!=", value))
    return tuple(reqs)


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VAL = r"[-A-Za-z0-9_.]*"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_EQ_RE = re.compile(rf"^({_KEY})\s*(==|!=|=)\s*({_VAL})$")
_CMP_RE = re.compile(rf"^({_KEY})\s*([<>])\s*(-?\d+)$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")


def _split_top_level(text: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def parse_label_selector(text: str) -> tuple:
    reqs = []
    for term in _split_top_level(text):
        term = term.strip()
        if not term:
            continue
        if m := _SET_RE.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), values))
        elif m := _EQ_RE.match(term):
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset([m.group(3)])))
        elif m := _CMP_RE.match(term):
            reqs.append((m.group(1), m.group(2), frozenset([m.group(3)])))
        elif m := _EXISTS_RE.match(term):
            reqs.append((m.group(2), "!" if m.group(1) else "exists", frozenset()))
        else:
            raise ApiError(400, f"unable to parse requirement: {term!r} in label selector {text!r}")
    return tuple(reqs)


# --------------------------------------------------------------------------------------------
# Patches

# Strategic merge keys by field name; good enough for pods, nodes, events and leases.
_MERGE_KEYS = {
    "conditions": "type", "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "volumeMounts": "mountPath", "ports": "containerPort",
    "containerStatuses": "name", "initContainerStatuses": "name", "ownerReferences": "uid",
    "addresses": "type", "imagePullSecrets": "name", "resourceClaims": "name",
}
_MERGE_PRIMITIVE_LISTS = {"finalizers"}


def strategic_merge(orig: Any, patch: Any) -> Any:
    """Apply a strategic-merge patch: maps merge, null deletes, known lists merge by key."""
    if not isinstance(patch, dict) or not isinstance(orig, dict):
        return _strip_directives(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    result = dict(orig)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [x for x in result.get(name) or [] if x not in value]
            continue
        if key.startswith("$"):
            continue  # $setElementOrder/..., $retainKeys: ordering hints we do not need
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = strategic_merge(result[key], value)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, _MERGE_KEYS[key])
        elif isinstance(value, list) and key in _MERGE_PRIMITIVE_LISTS and isinstance(result.get(key), list):
            result[key] = result[key] + [x for x in value if x not in result[key]]
        else:
            result[key] = _strip_directives(value)
    return result


def _merge_list(orig: list, patch: list, key: str) -> list:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    out = list(orig)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            out.append(_strip_directives(item))
            continue
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
        elif idx is None:
            out.append(_strip_directives(item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    return out


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def merge_patch(orig: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(orig) if isinstance(orig, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, test, move, copy."""
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a list of operations")

    def split(pointer: str) -> list[str]:
        if pointer == "":
            return []
        if not pointer.startswith("/"):
            raise ApiError(422, f"invalid JSON pointer {pointer!r}")
        return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]

    def parent(path: list[str]) -> tuple[Any, str]:
        cur = doc
        for p in path[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, path[-1]

    def get(path: list[str]) -> Any:
        cur = doc
        for p in path:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur

    def add(path: list[str], value: Any) -> None:
        nonlocal doc
        if not path:
            doc = value
            return
        cont, last = parent(path)
        if isinstance(cont, list):
            cont.insert(len(cont) if last == "-" else int(last), value)
        else:
            cont[last] = value

    def remove(path: list[str]) -> Any:
        cont, last = parent(path)
        return cont.pop(int(last)) if isinstance(cont, list) else cont.pop(last)

    for op in ops:
        try:
            kind, path = op["op"], split(op["path"])
            if kind == "add":
                add(path, op["value"])
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, op["value"])
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, f"the server rejected our request due to an error in our request: "
                                        f"testing value {op['path']} failed")
            elif kind == "move":
                add(path, remove(split(op["from"])))
            elif kind == "copy":
                add(path, json.loads(json.dumps(get(split(op["from"])))))
            else:
                raise ApiError(400, f"unexpected JSON patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, f"the server rejected our request due to an error in our request: {exc!r}") from exc
    return doc


# --------------------------------------------------------------------------------------------
# Resource types


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
    **_META_FIELDS,
    "spec.nodeName": _getter("spec", "nodeName"),
    "spec.schedulerName": _getter("spec", "schedulerName"),
    "spec.restartPolicy": _getter("spec", "restartPolicy"),
    "spec.serviceAccountName": _getter("spec", "serviceAccountName"),
    "spec.hostNetwork": lambda o: "true" if (o.get("spec") or {}).get("hostNetwork") else "false",
    "status.phase": _getter("status", "phase"),
    "status.podIP": _getter("status", "podIP"),
    "status.nominatedNodeName": _getter("status", "nominatedNodeName"),
}
_NODE_FIELDS = {
    "metadata.name": _getter("metadata", "name"),
    "spec.unschedulable": lambda o: "true" if (o.get("spec") or {}).get("unschedulable") else "false",
}
_EVENT_FIELDS = {
    **_META_FIELDS,
    **{f"involvedObject.{f}": _getter("involvedObject", f)
       for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
    "reason": _getter("reason"),
    "reportingComponent": _getter("reportingComponent"),
    "source": _getter("source", "component"),
    "type": _getter("type"),
}
_NEW_EVENT_FIELDS = {
    **_META_FIELDS,
    **{f"regarding.{f}": _getter("regarding", f) for f in ("kind", "namespace", "name", "uid")},
    "reason": _getter("reason"),
    "reportingController": _getter("reportingController"),
    "type": _getter("type"),
}

PODS = ResourceType("", "v1", "pods", "Pod", True, _POD_FIELDS, status_subresource=True, delete_returns_object=True)
NODES = ResourceType("", "v1", "nodes", "Node", False, _NODE_FIELDS, status_subresource=True)
EVENTS = ResourceType("", "v1", "events", "Event", True, _EVENT_FIELDS)
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, _META_FIELDS)
NEW_EVENTS = ResourceType("events.k8s.io", "v1", "events", "Event", True, _NEW_EVENT_FIELDS)
# The lifecycle load tool creates NodePort Services next to its pods (nodePort uniqueness and
# cluster IP allocation are not emulated).
SERVICES = ResourceType("", "v1", "services", "Service", True, _META_FIELDS, status_subresource=True,
                        delete_returns_object=True)
RESOURCES: tuple[ResourceType, ...] = (PODS, NODES, EVENTS, LEASES, NEW_EVENTS, SERVICES)
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_NAME = {r.name: r for r in RESOURCES}


def resource(name: str | ResourceType) -> ResourceType:
    if isinstance(name, ResourceType):
        return name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown resource {name!r}; known: {sorted(_BY_NAME)}") from None


# --------------------------------------------------------------------------------------------
# Store

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_POD_UPDATABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")
_DEFAULT_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class _Entry:
    obj: dict
    raw: str


@dataclass
class WatchEvent:
    """One committed change, as kept in the history (global resourceVersion order)."""

    rv: int
    resource: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict  # the new object; for DELETED the deleted object carrying the deletion's rv
    raw: str
    old: dict | None
    _old_raw: str | None = None

    def old_as_deleted(self) -> str:
        """The previous content with this event's resourceVersion (what a selector-filtered watch sends)."""
        if self._old_raw is None:
            old = json.loads(_dumps(self.old))
            old["metadata"]["resourceVersion"] = str(self.rv)
            self._old_raw = _dumps(old)
        return self._old_raw


class Store:
    """Thread-safe in-memory object store with a global resourceVersion and a watch history.

    Stored objects are never mutated in place: each write builds a new dict, so the history can
    keep references and responses can reuse the serialised form. Accessors return copies.
    """

    def __init__(self, *, history_limit: int = 1000, default_tolerations: bool = True,
                 priority_classes: Mapping[str, int] | None = None):
        self.cond = threading.Condition()
        self.history_limit = history_limit
        self.default_tolerations = default_tolerations
        self.priority_classes: dict[str, int] = dict(
            priority_classes or {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000})
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], _Entry]] = {r.name: {} for r in RESOURCES}
        self._history: deque[WatchEvent] = deque()
        self._lost_through = 0  # highest rv whose event is no longer in the history
        self.watch_epoch = 0  # bumped by expire_watches(): open watches answer 410
        self.closed = False

    # ---- reading (copies) -------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self.cond:
            return self._rv

    def get(self, rt: str | ResourceType, namespace: str | None, name: str) -> dict | None:
        rt = resource(rt)
        with self.cond:
            e = self._objects[rt.name].get(self._key(rt, namespace, name))
            return json.loads(e.raw) if e else None

    def objects(self, rt: str | ResourceType, namespace: str | None = None) -> list[dict]:
        rt = resource(rt)
        with self.cond:
            raws = [e.raw for k, e in sorted(self._objects[rt.name].items())
                    if namespace is None or k[0] == namespace]
        return [json.loads(r) for r in raws]

    def pods(self, namespace: str | None = None) -> list[dict]:
        return self.objects(PODS, namespace)

    def pod(self, namespace: str, name: str) -> dict | None:
        return self.get(PODS, namespace, name)

    def nodes(self) -> list[dict]:
        return self.objects(NODES)

    def node(self, name: str) -> dict | None:
        return self.get(NODES, None, name)

    def events(self, namespace: str | None = None) -> list[dict]:
        return self.objects(EVENTS, namespace)

    def leases(self, namespace: str | None = None) -> list[dict]:
        return self.objects(LEASES, namespace)

    def lease(self, namespace: str, name: str) -> dict | None:
        return self.get(LEASES, namespace, name)

    def history(self, rt: str | ResourceType | None = None) -> list[tuple[int, str, str, str, str]]:
        """Retained history as (rv, resource, type, namespace, name), oldest first."""
        name = resource(rt).name if rt is not None else None
        with self.cond:
            return [(e.rv, e.resource, e.type, e.obj["metadata"].get("namespace", ""), e.obj["metadata"]["name"])
                    for e in self._history if name is None or e.resource == name]

    # ---- list ------------------------------------------------------------------------

    def list(self, rt: ResourceType, sel: Selector, *, limit: int = 0,
             cont: str = "") -> tuple[int, list[str], str, int]:
        """-> (resourceVersion, raw items, continue token, remaining item count)."""
        start: tuple[str, str] | None = None
        if cont:
            try:
                ns_name = json.loads(base64.urlsafe_b64decode(cont.encode()))["start"]
                start = (str(ns_name[0]), str(ns_name[1]))
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise ApiError(400, f"invalid continue token: {exc}") from exc
        with self.cond:
            rv = self._rv
            table = self._objects[rt.name]
            keys = sorted(k for k in table if start is None or k > start)
            matching = [k for k in keys if sel.matches(table[k].obj)]
            page = matching[:limit] if limit else matching
            items = [table[k].raw for k in page]
        if limit and len(matching) > limit:
            token = base64.urlsafe_b64encode(_dumps({"rv": rv, "start": list(page[-1])}).encode()).decode()
            return rv, items, token, len(matching) - limit
        return rv, items, "", 0

    # ---- writes --------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, etype: str, key: tuple[str, str], new: dict, old: dict | None) -> _Entry:
        """Assign the next resourceVersion, store, append to the history, wake watchers. Holds the lock."""
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        raw = _dumps(new)
        table = self._objects[rt.name]
        if etype == "DELETED":
            table.pop(key, None)
        else:
            table[key] = _Entry(new, raw)
        self._history.append(WatchEvent(self._rv, rt.name, etype, new, raw, old))
        while len(self._history) > self.history_limit:
            self._lost_through = self._history.popleft().rv
        self.cond.notify_all()
        return _Entry(new, raw)

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "", name) if rt.namespaced else ("", name)

    def create(self, rt: str | ResourceType, body: dict, namespace: str | None = None) -> dict:
        """In-process create for test setup. Unlike a POST, it keeps a pod's `status` (e.g. phase
        Running for pods other schedulers placed), which the real server resets on create."""
        return json.loads(self.create_raw(resource(rt), body, namespace, keep_status=True).raw)

    def create_raw(self, rt: ResourceType, body: dict, namespace: str | None, *, keep_status: bool = False) -> _Entry:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        obj = json.loads(_dumps(body))
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if rt.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on "
                                    "the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, f"{rt.kind} \"\" is invalid: metadata.name: Required value: name or "
                                    "generateName is required", "Invalid", {"kind": rt.kind})
            meta["name"] = meta["generateName"] + "".join(
                _NAME_CHARS[b % len(_NAME_CHARS)] for b in uuid.uuid4().bytes[:5])
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rt is PODS and not keep_status:
            obj.pop("status", None)  # the pod strategy resets status on create
        self._default_and_validate(rt, obj)
        if rt is PODS and _gates(obj):
            _gated_condition(obj["status"])
        key = self._key(rt, meta.get("namespace"), meta["name"])
        with self.cond:
            if key in self._objects[rt.name]:
                raise ApiError(409, f'{rt.qualified} "{meta["name"]}" already exists', "AlreadyExists",
                               _details(rt, meta["name"]))
            return self._commit(rt, "ADDED", key, obj, None)

    def _default_and_validate(self, rt: ResourceType, obj: dict) -> None:
        name = obj["metadata"]["name"]
        if rt is PODS:
            spec = obj.get("spec")
            if not isinstance(spec, dict) or not spec.get("containers"):
                raise _invalid(rt, name, "spec.containers: Required value")
            for i, c in enumerate(spec["containers"]):
                if not c.get("name"):
                    raise _invalid(rt, name, f"spec.containers[{i}].name: Required value")
                if not c.get("image"):
                    raise _invalid(rt, name, f"spec.containers[{i}].image: Required value")
                res = c.get("resources") or {}
                limits = res.get("limits") or {}
                if limits:  # requests default to limits, per resource
                    res["requests"] = {**limits, **(res.get("requests") or {})}
                    c["resources"] = res
            if spec.get("nodeName") and _gates(obj):
                raise _invalid(rt, name, "spec.nodeName: Forbidden: cannot be set until all schedulingGates have "
                                         "been cleared")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
            pcn = spec.get("priorityClassName")
            if pcn:
                if pcn not in self.priority_classes:
                    raise ApiError(403, f'pods "{name}" is forbidden: no PriorityClass with name {pcn} was found',
                                   "Forbidden", _details(rt, name))
                spec.setdefault("priority", self.priority_classes[pcn])
            spec.setdefault("priority", 0)
            if self.default_tolerations:
                tols = spec.setdefault("tolerations", [])
                for t in _DEFAULT_TOLERATIONS:
                    if not any(x.get("key") == t["key"] and x.get("effect") in (None, "", "NoExecute") for x in tols):
                        tols.append(dict(t))
            status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
            status.setdefault("phase", "Pending")
            status.setdefault("qosClass", _qos_class(spec))
            obj["status"] = status
        elif rt is EVENTS:
            inv = obj.get("involvedObject")
            if not isinstance(inv, dict):
                raise _invalid(rt, name, "involvedObject: Required value")
            if inv.get("namespace") and inv["namespace"] != obj["metadata"]["namespace"]:
                raise _invalid(rt, name, "involvedObject.namespace: Invalid value: "
                                         f'"{inv["namespace"]}": does not match event.namespace')
        elif rt is NEW_EVENTS and not obj.get("eventTime"):
            raise _invalid(rt, name, "eventTime: Required value")

    def update(self, rt: str | ResourceType, body: dict, namespace: str | None = None, name: str | None = None,
               *, subresource: str | None = None) -> dict:
        rt = resource(rt)
        return json.loads(self.update_raw(rt, namespace, name or body["metadata"]["name"], body, subresource).raw)

    def update_raw(self, rt: ResourceType, namespace: str | None, name: str, body: dict,
                   subresource: str | None, *, patch_rv: str | None = None) -> _Entry:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise ApiError(400, f"the name of the object ({meta['name']}) does not match the name on the URL "
                                f"({name})")
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the "
                                "request")
        key = self._key(rt, namespace, name)
        with self.cond:
            cur = self._objects[rt.name].get(key)
            if cur is None:
                raise _not_found(rt, name)
            old = cur.obj
            want_rv = patch_rv if patch_rv is not None else meta.get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise _conflict(rt, name, MODIFIED_MSG)
            if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
                raise _conflict(rt, name, f"Precondition failed: UID in precondition: {meta['uid']}, "
                                          f"UID in object meta: {old['metadata']['uid']}")
            new = json.loads(_dumps(body))
            if subresource == "status":
                merged = json.loads(cur.raw)
                merged["status"] = new.get("status", merged.get("status"))
                new = merged
            else:
                new.setdefault("metadata", {})
                for k in ("uid", "creationTimestamp", "namespace", "deletionTimestamp", "generateName"):
                    if k in old["metadata"]:
                        new["metadata"][k] = old["metadata"][k]
                    else:
                        new["metadata"].pop(k, None)
                new["metadata"]["name"] = name
                new["kind"], new["apiVersion"] = rt.kind, rt.api_version
                if rt.status_subresource:
                    if "status" in old:
                        new["status"] = json.loads(_dumps(old["status"]))
                    else:
                        new.pop("status", None)
                if rt is PODS:
                    self._check_pod_update(old, new)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old:
                return cur  # no-op writes do not bump the resourceVersion (as etcd3's GuaranteedUpdate)
            return self._commit(rt, "MODIFIED", key, new, old)

    @staticmethod
    def _check_pod_update(old: dict, new: dict) -> None:
        def strip(spec: dict) -> dict:
            s = {k: v for k, v in (spec or {}).items() if k not in _POD_UPDATABLE_SPEC}
            for kind in ("containers", "initContainers"):
                if kind in s:
                    s[kind] = [{k: v for k, v in c.items() if k != "image"} for c in s[kind]]
            return s

        if strip(old.get("spec")) != strip(new.get("spec")):
            raise _invalid(PODS, old["metadata"]["name"],
                           "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                           "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                           "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                           "set to 1 if it was previously negative)")
        before = set(_gates(old))
        for i, gate in enumerate(_gates(new)):
            if gate not in before:  # validateOnlyDeletedSchedulingGates
                raise _invalid(PODS, old["metadata"]["name"],
                               f"spec.schedulingGates[{i}].name: Forbidden: only deletion is allowed, but found new "
                               f"scheduling gate '{gate}'")

    def patch(self, rt: str | ResourceType, namespace: str | None, name: str, patch: Any,
              content_type: str = "application/strategic-merge-patch+json", *, subresource: str | None = None) -> dict:
        return json.loads(self.patch_raw(resource(rt), namespace, name, patch, content_type, subresource).raw)

    def patch_raw(self, rt: ResourceType, namespace: str | None, name: str, patch: Any, content_type: str,
                  subresource: str | None) -> _Entry:
        ct = content_type.split(";")[0].strip().lower()
        key = self._key(rt, namespace, name)
        with self.cond:  # re-entrant use below is fine: Condition wraps an RLock
            cur = self._objects[rt.name].get(key)
            if cur is None:
                raise _not_found(rt, name)
            doc = json.loads(cur.raw)
            if ct == "application/json-patch+json":
                new = json_patch(doc, patch)
                patched_rv = ((new.get("metadata") or {}) if isinstance(new, dict) else {}).get("resourceVersion")
                patch_rv = patched_rv if patched_rv != cur.obj["metadata"]["resourceVersion"] else ""
            elif ct in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(patch, dict):
                    raise ApiError(400, "the body of the request was in an unknown format")
                new = merge_patch(doc, patch) if ct == "application/merge-patch+json" else strategic_merge(doc, patch)
                patch_rv = (patch.get("metadata") or {}).get("resourceVersion") or ""
            else:
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                                    f"include: application/json-patch+json, application/merge-patch+json, "
                                    f"application/strategic-merge-patch+json (got {content_type})")
            if not isinstance(new, dict):
                raise ApiError(422, "the patched object is not an object")
            new.setdefault("metadata", {})["resourceVersion"] = ""
            if (new["metadata"].get("uid") or "") != cur.obj["metadata"]["uid"]:
                raise _conflict(rt, name, "Precondition failed: UID in precondition: "
                                          f"{new['metadata'].get('uid')}, UID in object meta: "
                                          f"{cur.obj['metadata']['uid']}")
            return self.update_raw(rt, namespace, name, new, subresource, patch_rv=patch_rv)

    def delete(self, rt: str | ResourceType, namespace: str | None, name: str, *,
               preconditions: Mapping[str, str] | None = None) -> dict:
        return json.loads(self.delete_raw(resource(rt), namespace, name, preconditions or {}).raw)

    def delete_raw(self, rt: ResourceType, namespace: str | None, name: str, pre: Mapping[str, str]) -> _Entry:
        key = self._key(rt, namespace, name)
        with self.cond:
            cur = self._objects[rt.name].get(key)
            if cur is None:
                raise _not_found(rt, name)
            meta = cur.obj["metadata"]
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise _conflict(rt, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                          f"UID in object meta: {meta['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise _conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: "
                                          f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                          f"{meta['resourceVersion']}")
            gone = json.loads(cur.raw)
            if rt is PODS:
                gone["metadata"]["deletionTimestamp"] = now_rfc3339()
                gone["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(rt, "DELETED", key, gone, cur.obj)

    def delete_collection(self, rt: ResourceType, sel: Selector) -> list[str]:
        with self.cond:
            keys = [k for k, e in self._objects[rt.name].items() if sel.matches(e.obj)]
            return [self.delete_raw(rt, k[0] or None, k[1], {}).raw for k in sorted(keys)]

    def bind(self, namespace: str, name: str, node_name: str, *, uid: str | None = None,
             resource_version: str | None = None, annotations: Mapping[str, str] | None = None) -> dict:
        """The pods/binding semantics: set spec.nodeName once, PodScheduled=True, or 409/404."""
        if not node_name:
            raise ApiError(422, f'Binding "{name}" is invalid: target.name: Required value', "Invalid",
                           {"name": name, "kind": "Binding"})
        key = (namespace, name)
        with self.cond:
            cur = self._objects["pods"].get(key)
            if cur is None:
                raise _not_found(PODS, name)
            meta = cur.obj["metadata"]
            if uid and uid != meta["uid"]:
                raise _conflict(PODS, name, f"Precondition failed: UID in precondition: {uid}, "
                                            f"UID in object meta: {meta['uid']}")
            if resource_version and resource_version != meta["resourceVersion"]:
                raise _conflict(PODS, name, f"Precondition failed: ResourceVersion in precondition: "
                                            f"{resource_version}, ResourceVersion in object meta: "
                                            f"{meta['resourceVersion']}")
            if meta.get("deletionTimestamp"):
                raise _conflict(PODS, name, f"pod {name} is being deleted, cannot be assigned to a host",
                                "pods/binding", "pods/binding")
            bound = (cur.obj.get("spec") or {}).get("nodeName")
            if bound:
                raise _conflict(PODS, name, f'pod {name} is already assigned to node "{bound}"',
                                "pods/binding", "pods/binding")
            if _gates(cur.obj):  # "Reject binding to a scheduling un-ready Pod"
                raise _conflict(PODS, name, f"pod {name} has non-empty .spec.schedulingGates", "pods/binding",
                                "pods/binding")
            new = json.loads(cur.raw)
            new["spec"]["nodeName"] = node_name
            if annotations:
                new["metadata"]["annotations"] = {**(new["metadata"].get("annotations") or {}), **annotations}
            _set_condition(new.setdefault("status", {}), {"type": "PodScheduled", "status": "True"})
            return json.loads(self._commit(PODS, "MODIFIED", key, new, cur.obj).raw)

    # ---- watch support ------------------------------------------------------------------

    def events_after(self, rv: int) -> list[WatchEvent]:
        """Retained events with resourceVersion > rv. Holds the lock (caller)."""
        if not self._history or rv >= self._rv:
            return []
        start = max(0, rv + 1 - self._history[0].rv)
        return list(islice(self._history, start, None))

    def too_old(self, rv: int) -> bool:
        return rv < self._lost_through

    def compact(self) -> int:
        """Forget the whole history: a watch from any resourceVersion below the current one gets 410."""
        with self.cond:
            self._history.clear()
            self._lost_through = self._rv
            self.cond.notify_all()
            return self._rv

    def current(self, rt: ResourceType) -> tuple[int, list[_Entry]]:
        with self.cond:
            return self._rv, [e for _, e in sorted(self._objects[rt.name].items())]


def _set_condition(status: dict, cond: dict) -> None:
    """podutil.UpdatePodCondition: replace by type; lastTransitionTime moves only when status changes."""
    conds = status.setdefault("conditions", [])
    now = now_rfc3339()
    for i, c in enumerate(conds):
        if c.get("type") == cond["type"]:
            ltt = c.get("lastTransitionTime") if c.get("status") == cond["status"] else now
            conds[i] = {**cond, "lastProbeTime": None, "lastTransitionTime": ltt or now}
            return
    conds.append({**cond, "lastProbeTime": None, "lastTransitionTime": now})


def _gates(pod: dict) -> list[str]:
    """Names of the pod's `spec.schedulingGates` (KEP-3521): set at creation only, removable by an
    update, never added; a pod with any is not bound (pods/binding answers 409)."""
    return [g.get("name") or "" for g in (pod.get("spec") or {}).get("schedulingGates") or ()]


def _gated_condition(status: dict) -> None:
    """The pod strategy's applySchedulingGatedCondition: a gated pod is created with
    PodScheduled=False reason SchedulingGated, unless it brings a PodScheduled condition."""
    if not any(c.get("type") == "PodScheduled" for c in status.get("conditions") or ()):
        _set_condition(status, {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated",
                                "message": "Scheduling is blocked due to non-empty scheduling gates"})


def _qos_class(spec: dict) -> str:
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


# --------------------------------------------------------------------------------------------
# Faults and counters


@dataclass
class Fault:
    """Make matching requests fail (`status`), hang (`delay_s`, then proceed or fail) or reset."""

    method: str | None = None
    path: str | None = None  # regular expression searched in the URL path
    verb: str | None = None  # get, list, watch, create, update, patch, delete, deletecollection
    resource: str | None = None  # pods, pods/binding, pods/status, nodes, events, leases, ...
    status: int | None = None
    delay_s: float = 0.0
    reset: bool = False  # close the connection without answering
    times: int | None = 1  # None: until removed
    retry_after_s: int | None = None
    message: str = "injected fault"
    query: str | None = None  # regular expression searched in the decoded query, e.g. a fieldSelector
    hits: int = 0
    _re: re.Pattern | None = field(default=None, repr=False)

    def matches(self, method: str, path: str, verb: str, res: str, query: str = "") -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method.upper() != method:
            return False
        if self.verb and self.verb != verb:
            return False
        if self.resource and self.resource != res:
            return False
        if self.path:
            if self._re is None:
                self._re = re.compile(self.path)
            if not self._re.search(path):
                return False
        return not self.query or re.search(self.query, query) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    verb: str
    resource: str
    namespace: str | None
    name: str | None
    status: int
    duration_s: float
    user_agent: str = ""  # the caller (which scheduler replica sent a binding)
    received: float = 0.0  # monotonic time the request arrived: when the client sent it, give or take
    authorization: str = ""  # the Authorization header as sent (which token a client presented)


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class _Route:
    rt: ResourceType | None
    namespace: str | None
    name: str | None
    sub: str | None
    special: str | None = None  # version, healthz, api, apis, bindings


def _route(path: str) -> _Route | None:
    parts = [p for p in path.split("/") if p]
    if path in ("/healthz", "/readyz", "/livez"):
        return _Route(None, None, None, None, "healthz")
    if path == "/version":
        return _Route(None, None, None, None, "version")
    if parts == ["api"]:
        return _Route(None, None, None, None, "api")
    if parts == ["apis"]:
        return _Route(None, None, None, None, "apis")
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
        return _Route(PODS, ns, None, "binding", "bindings")
    rt = _BY_PATH.get((group, version, rest[0]))
    if rt is None or (ns is not None and not rt.namespaced):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if rt.namespaced and name is not None and ns is None:
        return None
    if sub is not None and not ((rt is PODS and sub in ("status", "binding")) or (rt is NODES and sub == "status")):
        return None
    return _Route(rt, ns, name, sub)


def _verb(method: str, r: _Route, watch: bool) -> str:
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


def _event_line(etype: str, raw_object: str) -> str:
    return '{"type":"' + etype + '","object":' + raw_object + "}\n"


def _list_body(rt: ResourceType, raw_meta: str, raw_items: list[str]) -> str:
    return ('{"kind":"' + rt.kind + 'List","apiVersion":"' + rt.api_version + '","metadata":' + raw_meta
            + ',"items":[' + ",".join(raw_items) + "]}")


def _peer_closed(sock: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _WatchConn:
    def __init__(self, sock: socket.socket, epoch: int):
        self.sock = sock
        self.epoch = epoch
        self.stop = False
        self.abrupt = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ksense-fake-apiserver/1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.api._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.api._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass  # one line per request would drown the test output (house rule 14)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ---- plumbing -------------------------------------------------------------------------

    def _send(self, code: int, body: bytes | str, headers: Iterable[tuple[str, str]] = (),
              content_type: str = "application/json") -> None:
        if isinstance(body, str):
            body = body.encode()
        lines = [f"HTTP/1.1 {code} {HTTPStatus(code).phrase}", f"Content-Type: {content_type}",
                 f"Content-Length: {len(body)}", "Cache-Control: no-cache, private"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        self._done(code)  # before the write: a client that got the answer finds the record
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _done(self, code: int) -> None:
        self._status = code
        r, url = self._req
        self.server.api._record(RequestRecord(
            self.command, url.path, url.query, self._verb, self._res, r.namespace if r else None,
            r.name if r else None, code, time.monotonic() - self._t0, self.headers.get("User-Agent") or "",
            self._t0, self.headers.get("Authorization") or ""))

    def _send_error(self, err: ApiError, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(err.code, _dumps(err.status()), headers)

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        t0 = time.monotonic()
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._read_body()
        self._status = 0
        r = _route(url.path)
        watch = method == "GET" and query.get("watch", "").lower() in ("1", "true")
        verb = _verb(method, r, watch) if r and r.rt else method.lower()
        res = ""
        if r and r.rt:
            res = "bindings" if r.special == "bindings" else r.rt.name + (f"/{r.sub}" if r.sub else "")
        api._count(verb, res)
        self._req, self._verb, self._res, self._t0 = (r, url), verb, res, t0
        try:
            fault = api._take_fault(method, url.path, verb, res, unquote(url.query))
            if fault is not None and not self._apply_fault(fault):
                return
            if r is None:
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
            if "dryRun" in query:
                raise ApiError(400, "dryRun is not supported by the fake API server")
            if r.special:
                self._special(r, method, body)
            elif watch:
                self._watch(r, query)
            else:
                self._resource(r, method, verb, query, body)
        except ApiError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in the fake: answer 500 and show it, never hang the client
            traceback.print_exc()
            self.close_connection = True
            if not self._status:
                self._send_error(ApiError(500, f"fake API server bug: {exc!r}"))
        finally:
            if not self._status:  # reset, or the client went away before an answer
                self._done(0)

    def _apply_fault(self, fault: Fault) -> bool:
        """-> True when the request should then be served normally."""
        api = self.server.api
        if fault.delay_s and api._stopping.wait(fault.delay_s):
            self.close_connection = True
            return False
        if fault.reset:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return False
        if fault.status:
            headers = [("Retry-After", str(fault.retry_after_s))] if fault.retry_after_s is not None else []
            self._send_error(ApiError(fault.status, fault.message), headers)
            return False
        return True

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except ValueError as exc:
            raise ApiError(400, f"the body of the request was in an unknown format: {exc}") from exc

    def _special(self, r: _Route, method: str, body: bytes) -> None:
        if r.special == "healthz":
            self._send(200, "ok", content_type="text/plain; charset=utf-8")
        elif r.special == "version":
            self._send(200, _dumps({"major": "1", "minor": "33", "gitVersion": "v1.33.0-ksense-fake",
                                    "platform": "linux/amd64"}))
        elif r.special == "api":
            self._send(200, _dumps({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}))
        elif r.special == "apis":
            groups = sorted({rt.group for rt in RESOURCES if rt.group})
            self._send(200, _dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in groups]}))
        elif r.special == "bindings":
            if method != "POST":
                raise ApiError(405, f"{method} is not supported on bindings")
            b = self._json(body)
            self._bind(r.namespace or "", ((b or {}).get("metadata") or {}).get("name") or "", b)

    def _bind(self, namespace: str, name: str, b: Any) -> None:
        if not isinstance(b, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        meta = b.get("metadata") or {}
        if meta.get("name") != name:
            raise ApiError(400, "name in URL does not match name in Binding object")
        target = b.get("target") or {}
        if target.get("kind") not in (None, "", "Node"):
            raise ApiError(422, f'Binding "{name}" is invalid: target.kind: Invalid value: "{target.get("kind")}": '
                                'must be empty or Node', "Invalid", {"name": name, "kind": "Binding"})
        self.server.api.store.bind(namespace, name, target.get("name") or "", uid=meta.get("uid"),
                                   resource_version=meta.get("resourceVersion"), annotations=meta.get("annotations"))
        self._send(201, _dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                "code": 201}))

    def _selector(self, r: _Route, query: Mapping[str, str]) -> Selector:
        fields = parse_field_selector(query.get("fieldSelector", ""), r.rt.fields) if r.rt else ()
        labels = parse_label_selector(query.get("labelSelector", ""))
        if r.name is not None:  # a watch on one object
            fields = (*fields, (_getter("metadata", "name"), True, r.name))
        return Selector(fields, labels, r.namespace)

    def _resource(self, r: _Route, method: str, verb: str, query: Mapping[str, str], body: bytes) -> None:
        store = self.server.api.store
        rt = r.rt
        assert rt is not None
        if verb == "list":
            try:
                limit = int(query.get("limit") or 0)
            except ValueError as exc:
                raise ApiError(400, f"invalid limit: {exc}") from exc
            rv, items, token, remaining = store.list(rt, self._selector(r, query), limit=limit,
                                                     cont=query.get("continue", ""))
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if token:
                meta["continue"], meta["remainingItemCount"] = token, remaining
            self._send(200, _list_body(rt, _dumps(meta), items))
        elif verb == "get":
            obj = store.get(rt, r.namespace, r.name or "")
            if obj is None:
                raise _not_found(rt, r.name or "")
            self._send(200, _dumps(obj))
        elif verb == "create" and r.sub == "binding":
            self._bind(r.namespace or "", r.name or "", self._json(body))
        elif verb == "create":
            if r.name is not None:
                raise ApiError(405, f"the server does not allow this method on the requested resource ({rt.plural})")
            self._send(201, store.create_raw(rt, self._json(body), r.namespace).raw)
        elif verb == "update":
            self._send(200, store.update_raw(rt, r.namespace, r.name or "", self._json(body), r.sub).raw)
        elif verb == "patch":
            ctype = self.headers.get("Content-Type") or "application/strategic-merge-patch+json"
            self._send(200, store.patch_raw(rt, r.namespace, r.name or "", self._json(body), ctype, r.sub).raw)
        elif verb == "delete":
            if r.sub:
                raise ApiError(405, f"DELETE is not supported on {rt.plural}/{r.sub}")
            opts = self._json(body)
            opts = opts if isinstance(opts, dict) else {}
            entry = store.delete_raw(rt, r.namespace, r.name or "", (opts.get("preconditions") or {}))
            if rt.delete_returns_object:
                self._send(200, entry.raw)
            else:
                d = {**_details(rt, r.name or ""), "uid": entry.obj["metadata"]["uid"]}
                self._send(200, _dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                        "details": d}))
        elif verb == "deletecollection":
            raws = store.delete_collection(rt, self._selector(r, query))
            self._send(200, _list_body(rt, "{}", raws))
        else:
            raise ApiError(405, f"{method} is not supported")

    # ---- watch ---------------------------------------------------------------------------

    def _write_chunk(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _watch(self, r: _Route, query: Mapping[str, str]) -> None:
        api = self.server.api
        store = api.store
        rt = r.rt
        assert rt is not None
        sel = self._selector(r, query)
        rv_param = query.get("resourceVersion", "")
        try:
            since = int(rv_param) if rv_param not in ("", "0") else None
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else api.watch_timeout_s
        except ValueError as exc:
            raise ApiError(400, f"invalid watch parameter: {exc}") from exc
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        self.close_connection = True
        self._done(200)
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                         b"Cache-Control: no-cache, private\r\nConnection: close\r\n\r\n")
        conn = _WatchConn(self.connection, store.watch_epoch)
        api._watch_opened(conn)
        try:
            self._stream(rt, sel, since, timeout, bookmarks, conn)
        except OSError:
            pass  # the client went away, or drop_watches(abrupt=True) shut the socket
        finally:
            api._watch_closed(conn)

    def _stream(self, rt: ResourceType, sel: Selector, since: int | None, timeout: float, bookmarks: bool,
                conn: _WatchConn) -> None:
        api = self.server.api
        store = api.store
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + api.bookmark_interval_s
        if since is None:  # "start at most recent": synthetic ADDED for the current state
            cursor, entries = store.current(rt)
            lines = [_event_line("ADDED", e.raw) for e in entries if sel.matches(e.obj)]
            if lines:
                self._write_chunk("".join(lines))
        else:
            cursor = since
        while True:
            with store.cond:
                while True:
                    now = time.monotonic()
                    if conn.stop or api._stopping.is_set() or conn.epoch != store.watch_epoch:
                        break
                    if store.too_old(cursor) or store.events_after(cursor) or now >= deadline:
                        break
                    if bookmarks and now >= next_bookmark:
                        break
                    if _peer_closed(conn.sock):
                        return  # the client stopped watching: no need to wait for a write to fail
                    store.cond.wait(min(deadline, next_bookmark if bookmarks else deadline, now + 0.25) - now)
                if conn.abrupt or api._stopping.is_set():
                    return
                if conn.stop:
                    break
                if conn.epoch != store.watch_epoch or store.too_old(cursor):
                    err = status_object(410, "Expired", f"too old resource version: {cursor} ({store._rv})")
                    self._write_chunk(_event_line("ERROR", _dumps(err)))
                    break
                events = store.events_after(cursor)
                latest = store._rv
            out = []
            for ev in events:
                line = self._convert(rt, sel, ev)
                if line:
                    out.append(line)
            cursor = events[-1].rv if events else cursor
            if out:
                self._write_chunk("".join(out))
            now = time.monotonic()
            if bookmarks and (now >= next_bookmark or now >= deadline):
                cursor = max(cursor, latest)
                mark = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(cursor)}}
                self._write_chunk(_event_line("BOOKMARK", _dumps(mark)))
                next_bookmark = now + api.bookmark_interval_s
            if now >= deadline:
                break
        self.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _convert(rt: ResourceType, sel: Selector, ev: WatchEvent) -> str | None:
        if ev.resource != rt.name:
            return None
        if ev.type == "MODIFIED":
            now_in, was_in = sel.matches(ev.obj), ev.old is not None and sel.matches(ev.old)
            if now_in:
                return _event_line("MODIFIED" if was_in else "ADDED", ev.raw)
            if was_in:
                return _event_line("DELETED", ev.old_as_deleted())
            return None
        if sel.matches(ev.obj):
            return _event_line(ev.type, ev.raw)
        return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], api: KubeAPIServer):
        self.api = api
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client hung up or stop() shut the socket: expected, not worth a traceback
        super().handle_error(request, client_address)


class KubeAPIServer:
    """The fake API server. `start()` binds and serves in a thread; `stop()` closes everything.

    `store` holds the objects (read it directly in assertions; write through it to set up state
    without HTTP), `counts` counts requests by (verb, resource), `requests` keeps the last 10,000
    requests (recorded just before the answer is written; status 0 = no answer), `inject()`
    adds faults.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, history_limit: int = 1000,
                 default_tolerations: bool = True, watch_timeout_s: float = 1800.0,
                 bookmark_interval_s: float = 60.0, priority_classes: Mapping[str, int] | None = None):
        self.host, self.port = host, port
        self.store = Store(history_limit=history_limit, default_tolerations=default_tolerations,
                           priority_classes=priority_classes)
        self.watch_timeout_s = watch_timeout_s
        self.bookmark_interval_s = bookmark_interval_s
        self.counts: Counter[tuple[str, str]] = Counter()
        self.requests: deque[RequestRecord] = deque(maxlen=10_000)
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._watches: set[_WatchConn] = set()
        self.watches_started = 0  # watch streams established so far (monotonic)
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> KubeAPIServer:
        """Bind and serve. After `stop()`, starts again on the same port with the same store:
        an API server restart (clients see refused connections in between, then reconnect)."""
        if self._httpd is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        with self.store.cond:
            self.store.closed = False
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-kube-apiserver:{self.port}", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        with self.store.cond:
            self.store.closed = True
            self.store.cond.notify_all()
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with self._lock:
                if not self._conns:
                    break
            time.sleep(0.01)
        self._httpd = None

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults and measurements ----------------------------------------------------------

    def inject(self, *, method: str | None = None, path: str | None = None, verb: str | None = None,
               resource: str | None = None, status: int | None = None, delay_s: float = 0.0,
               reset: bool = False, times: int | None = 1, retry_after_s: int | None = None,
               message: str = "injected fault", query: str | None = None) -> Fault:
        """The next `times` requests matching all given criteria fail with `status`, hang `delay_s`
        (then fail, or proceed when no status), or are reset. `query` is a regular expression
        searched in the decoded query string (one watch among several on the same resource, by its
        fieldSelector). Returns the Fault (see `.hits`)."""
        f = Fault(method, path, verb, resource, status, delay_s, reset, times, retry_after_s, message, query)
        with self._lock:
            self._faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str, verb: str, res: str, query: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(method, path, verb, res, query):
                    f.hits += 1
                    if f.exhausted:
                        self._faults.remove(f)
                    return f
        return None

    def _count(self, verb: str, res: str) -> None:
        with self._lock:
            self.counts[(verb, res)] += 1

    def _record(self, rec: RequestRecord) -> None:
        self.requests.append(rec)

    def count(self, verb: str | None = None, resource: str | None = None) -> int:
        """Requests received (faulted ones included), filtered by verb and/or resource."""
        with self._lock:
            return sum(n for (v, r), n in self.counts.items()
                       if (verb is None or v == verb) and (resource is None or r == resource))

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
        self.requests.clear()

    # ---- watches -------------------------------------------------------------------------

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(sock)
            else:
                self._conns.discard(sock)

    def _watch_opened(self, w: _WatchConn) -> None:
        with self._lock:
            self._watches.add(w)
            self.watches_started += 1

    def _watch_closed(self, w: _WatchConn) -> None:
        with self._lock:
            self._watches.discard(w)
        with self.store.cond:
            self.store.cond.notify_all()  # wake wait_for_watches()

    @property
    def open_watches(self) -> int:
        with self._lock:
            return len(self._watches)

    def wait_for_watches(self, n: int, timeout_s: float = 10.0, *, exactly: bool = False) -> bool:
        """Block until at least (or `exactly`) `n` watches are open, e.g. until the scheduler is ready."""
        deadline = time.monotonic() + timeout_s
        while (self.open_watches != n) if exactly else (self.open_watches < n):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """End every open watch: cleanly (terminating chunk, as at a server-side timeout) or
        abruptly (socket shut down mid-stream, as on a connection loss). Returns how many."""
        with self._lock:
            watches = list(self._watches)
        for w in watches:
            w.stop, w.abrupt = True, abrupt
            if abrupt:
                with contextlib.suppress(OSError):
                    w.sock.shutdown(socket.SHUT_RDWR)
        with self.store.cond:
            self.store.cond.notify_all()
        return len(watches)

    def expire_watches(self) -> int:
        """Every open watch receives an ERROR event with a 410 Expired Status and ends."""
        with self.store.cond:
            self.store.watch_epoch += 1
            self.store.cond.notify_all()
        return self.open_watches

    def compact(self, *, expire_open_watches: bool = False) -> int:
        """Forget the history: watching from any older resourceVersion answers 410. Returns the current rv."""
        rv = self.store.compact()
        if expire_open_watches:
            self.expire_watches()
        return rv

"""The in-memory object store: one global resourceVersion (like etcd), create/update/patch/delete
with preconditions, pod defaulting and validation, pods/binding, and the bounded history of
changes that watches read.
"""

from __future__ import annotations

import base64
import builtins  # `list` in this class's annotations after Store.list is the method
import json
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

from tests.kubeapi.server.errors import MODIFIED_MSG, ApiError, conflict, invalid, not_found, status_details
from tests.kubeapi.server.patches import json_patch, merge_patch, strategic_merge
from tests.kubeapi.server.pods import gated_condition, qos_class, scheduling_gates, set_condition
from tests.kubeapi.server.resources import EVENTS, LEASES, NEW_EVENTS, NODES, PODS, RESOURCES, ResourceType, resource
from tests.kubeapi.server.selectors import Selector
from tests.kubeapi.server.timefmt import dumps, now_rfc3339

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_POD_UPDATABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")
_DEFAULT_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
)



@dataclass
class Entry:
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
            old = json.loads(dumps(self.old))
            old["metadata"]["resourceVersion"] = str(self.rv)
            self._old_raw = dumps(old)
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
        self._objects: dict[str, dict[tuple[str, str], Entry]] = {r.name: {} for r in RESOURCES}
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
            token = base64.urlsafe_b64encode(dumps({"rv": rv, "start": list(page[-1])}).encode()).decode()
            return rv, items, token, len(matching) - limit
        return rv, items, "", 0

    # ---- writes --------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, etype: str, key: tuple[str, str], new: dict, old: dict | None) -> Entry:
        """Assign the next resourceVersion, store, append to the history, wake watchers. Holds the lock."""
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        raw = dumps(new)
        table = self._objects[rt.name]
        if etype == "DELETED":
            table.pop(key, None)
        else:
            table[key] = Entry(new, raw)
        self._history.append(WatchEvent(self._rv, rt.name, etype, new, raw, old))
        while len(self._history) > self.history_limit:
            self._lost_through = self._history.popleft().rv
        self.cond.notify_all()
        return Entry(new, raw)

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "", name) if rt.namespaced else ("", name)

    def create(self, rt: str | ResourceType, body: dict, namespace: str | None = None) -> dict:
        """In-process create for test setup. Unlike a POST, it keeps a pod's `status` (e.g. phase
        Running for pods other schedulers placed), which the real server resets on create."""
        return json.loads(self.create_raw(resource(rt), body, namespace, keep_status=True).raw)

    def create_raw(self, rt: ResourceType, body: dict, namespace: str | None, *, keep_status: bool = False) -> Entry:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        obj = json.loads(dumps(body))
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
        if rt is PODS and scheduling_gates(obj):
            gated_condition(obj["status"])
        key = self._key(rt, meta.get("namespace"), meta["name"])
        with self.cond:
            if key in self._objects[rt.name]:
                raise ApiError(409, f'{rt.qualified} "{meta["name"]}" already exists', "AlreadyExists",
                               status_details(rt, meta["name"]))
            return self._commit(rt, "ADDED", key, obj, None)

    def _default_and_validate(self, rt: ResourceType, obj: dict) -> None:
        name = obj["metadata"]["name"]
        if rt is PODS:
            spec = obj.get("spec")
            if not isinstance(spec, dict) or not spec.get("containers"):
                raise invalid(rt, name, "spec.containers: Required value")
            for i, c in enumerate(spec["containers"]):
                if not c.get("name"):
                    raise invalid(rt, name, f"spec.containers[{i}].name: Required value")
                if not c.get("image"):
                    raise invalid(rt, name, f"spec.containers[{i}].image: Required value")
                res = c.get("resources") or {}
                limits = res.get("limits") or {}
                if limits:  # requests default to limits, per resource
                    res["requests"] = {**limits, **(res.get("requests") or {})}
                    c["resources"] = res
            if spec.get("nodeName") and scheduling_gates(obj):
                raise invalid(rt, name, "spec.nodeName: Forbidden: cannot be set until all schedulingGates have "
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
                                   "Forbidden", status_details(rt, name))
                spec.setdefault("priority", self.priority_classes[pcn])
            spec.setdefault("priority", 0)
            if self.default_tolerations:
                tols = spec.setdefault("tolerations", [])
                for t in _DEFAULT_TOLERATIONS:
                    if not any(x.get("key") == t["key"] and x.get("effect") in (None, "", "NoExecute") for x in tols):
                        tols.append(dict(t))
            status = obj["status"] if isinstance(obj.get("status"), dict) else {}
            status.setdefault("phase", "Pending")
            status.setdefault("qosClass", qos_class(spec))
            obj["status"] = status
        elif rt is EVENTS:
            inv = obj.get("involvedObject")
            if not isinstance(inv, dict):
                raise invalid(rt, name, "involvedObject: Required value")
            if inv.get("namespace") and inv["namespace"] != obj["metadata"]["namespace"]:
                raise invalid(rt, name, "involvedObject.namespace: Invalid value: "
                                         f'"{inv["namespace"]}": does not match event.namespace')
        elif rt is NEW_EVENTS and not obj.get("eventTime"):
            raise invalid(rt, name, "eventTime: Required value")

    def update(self, rt: str | ResourceType, body: dict, namespace: str | None = None, name: str | None = None,
               *, subresource: str | None = None) -> dict:
        rt = resource(rt)
        return json.loads(self.update_raw(rt, namespace, name or body["metadata"]["name"], body, subresource).raw)

    def update_raw(self, rt: ResourceType, namespace: str | None, name: str, body: dict,
                   subresource: str | None, *, patch_rv: str | None = None) -> Entry:
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
                raise not_found(rt, name)
            old = cur.obj
            want_rv = patch_rv if patch_rv is not None else meta.get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name, MODIFIED_MSG)
            if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
                raise conflict(rt, name, f"Precondition failed: UID in precondition: {meta['uid']}, "
                                          f"UID in object meta: {old['metadata']['uid']}")
            new = json.loads(dumps(body))
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
                        new["status"] = json.loads(dumps(old["status"]))
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
        def strip(spec: dict | None) -> dict:
            s = {k: v for k, v in (spec or {}).items() if k not in _POD_UPDATABLE_SPEC}
            for kind in ("containers", "initContainers"):
                if kind in s:
                    s[kind] = [{k: v for k, v in c.items() if k != "image"} for c in s[kind]]
            return s

        if strip(old.get("spec")) != strip(new.get("spec")):
            raise invalid(PODS, old["metadata"]["name"],
                           "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                           "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                           "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                           "set to 1 if it was previously negative)")
        before = set(scheduling_gates(old))
        for i, gate in enumerate(scheduling_gates(new)):
            if gate not in before:  # validateOnlyDeletedSchedulingGates
                raise invalid(PODS, old["metadata"]["name"],
                               f"spec.schedulingGates[{i}].name: Forbidden: only deletion is allowed, but found new "
                               f"scheduling gate '{gate}'")

    def patch(self, rt: str | ResourceType, namespace: str | None, name: str, patch: Any,
              content_type: str = "application/strategic-merge-patch+json", *, subresource: str | None = None) -> dict:
        return json.loads(self.patch_raw(resource(rt), namespace, name, patch, content_type, subresource).raw)

    def patch_raw(self, rt: ResourceType, namespace: str | None, name: str, patch: Any, content_type: str,
                  subresource: str | None) -> Entry:
        ct = content_type.split(";")[0].strip().lower()
        key = self._key(rt, namespace, name)
        with self.cond:  # re-entrant use below is fine: Condition wraps an RLock
            cur = self._objects[rt.name].get(key)
            if cur is None:
                raise not_found(rt, name)
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
                raise conflict(rt, name, "Precondition failed: UID in precondition: "
                                          f"{new['metadata'].get('uid')}, UID in object meta: "
                                          f"{cur.obj['metadata']['uid']}")
            return self.update_raw(rt, namespace, name, new, subresource, patch_rv=patch_rv)

    def delete(self, rt: str | ResourceType, namespace: str | None, name: str, *,
               preconditions: Mapping[str, str] | None = None) -> dict:
        return json.loads(self.delete_raw(resource(rt), namespace, name, preconditions or {}).raw)

    def delete_raw(self, rt: ResourceType, namespace: str | None, name: str, pre: Mapping[str, str]) -> Entry:
        key = self._key(rt, namespace, name)
        with self.cond:
            cur = self._objects[rt.name].get(key)
            if cur is None:
                raise not_found(rt, name)
            meta = cur.obj["metadata"]
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise conflict(rt, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                          f"UID in object meta: {meta['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: "
                                          f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                          f"{meta['resourceVersion']}")
            gone = json.loads(cur.raw)
            if rt is PODS:
                gone["metadata"]["deletionTimestamp"] = now_rfc3339()
                gone["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(rt, "DELETED", key, gone, cur.obj)

    def delete_collection(self, rt: ResourceType, sel: Selector) -> builtins.list[str]:
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
                raise not_found(PODS, name)
            meta = cur.obj["metadata"]
            if uid and uid != meta["uid"]:
                raise conflict(PODS, name, f"Precondition failed: UID in precondition: {uid}, "
                                            f"UID in object meta: {meta['uid']}")
            if resource_version and resource_version != meta["resourceVersion"]:
                raise conflict(PODS, name, f"Precondition failed: ResourceVersion in precondition: "
                                            f"{resource_version}, ResourceVersion in object meta: "
                                            f"{meta['resourceVersion']}")
            if meta.get("deletionTimestamp"):
                raise conflict(PODS, name, f"pod {name} is being deleted, cannot be assigned to a host",
                                "pods/binding", "pods/binding")
            bound = (cur.obj.get("spec") or {}).get("nodeName")
            if bound:
                raise conflict(PODS, name, f'pod {name} is already assigned to node "{bound}"',
                                "pods/binding", "pods/binding")
            if scheduling_gates(cur.obj):  # "Reject binding to a scheduling un-ready Pod"
                raise conflict(PODS, name, f"pod {name} has non-empty .spec.schedulingGates", "pods/binding",
                                "pods/binding")
            new = json.loads(cur.raw)
            new["spec"]["nodeName"] = node_name
            if annotations:
                new["metadata"]["annotations"] = {**(new["metadata"].get("annotations") or {}), **annotations}
            set_condition(new.setdefault("status", {}), {"type": "PodScheduled", "status": "True"})
            return json.loads(self._commit(PODS, "MODIFIED", key, new, cur.obj).raw)

    # ---- watch support ------------------------------------------------------------------

    def events_after(self, rv: int) -> builtins.list[WatchEvent]:
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

    def current(self, rt: ResourceType) -> tuple[int, builtins.list[Entry]]:
        with self.cond:
            return self._rv, [e for _, e in sorted(self._objects[rt.name].items())]

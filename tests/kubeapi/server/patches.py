"""The three patch types the API server accepts: strategic merge (by merge key), JSON merge
(RFC 7386) and JSON patch (RFC 6902).
"""

from __future__ import annotations

import json
from typing import Any

from tests.kubeapi.server.errors import ApiError

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

"""Field and label selectors (`fieldSelector`, `labelSelector`) parsed and matched as the API
server does, for lists, watches and deletecollection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.kubeapi.server.errors import ApiError


def getter(*path: str) -> Callable[[dict], str]:
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


META_FIELDS = {"metadata.name": getter("metadata", "name"), "metadata.namespace": getter("metadata", "namespace")}


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
    out: list[str] = []
    cur: list[str] = []
    depth = 0
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

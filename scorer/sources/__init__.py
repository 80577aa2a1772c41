"""Where the scorer's inputs come from: Prometheus (the cluster default) or one local exporter
(the embedded single-machine default), behind one `InputSource` protocol."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

from common.http_reason import UNREACHABLE
from scorer.core.inputs import TopPods
from scorer.core.model import Inputs
from scorer.core.rules import RulesError


def shown(reason: str, peer: str) -> str:
    """The readable form of a source's short error reason (its counter label), shown per input
    (NodeInputs.why, /score, the CSV): `unreachable` -> `<peer> down` ("prometheus down",
    "exporter down"), any other label with spaces (`http_503` -> `http 503`)."""
    return f"{peer} down" if reason == UNREACHABLE else reason.replace("_", " ")


class InputSource(Protocol):
    """`fetch(now)` returns every node's inputs as of `now`; it never raises for a failing
    backend (errors are counted in Inputs.errors and the affected inputs are missing)."""

    name: str  # "prometheus" | "local"
    provides: frozenset[str]  # the optional inputs (names.OPTIONAL_INPUTS) it can read

    def fetch(self, now: datetime) -> Inputs: ...


@runtime_checkable
class NamesPods(Protocol):
    """A source whose `fetch` names no pods because naming them for every node costs too much
    (the Prometheus source: one pod query over every pod of the fleet would be most of the
    tick): the tick asks it for the top pods of the nodes it denied only. Never raises; the
    failed requests come back counted by reason."""

    def top_pods(self, nodes: Iterable[str], now: datetime) -> tuple[TopPods, Mapping[str, int]]: ...


def require(inputs: Iterable[str], source: str, provides: Collection[str]) -> None:
    """Refuse, at start, a rule base whose optional `inputs` (RuleBase.inputs) the `source`
    cannot read: scoring it would silently count them as 0 on every tick."""
    lacking = [name for name in inputs if name not in provides]
    if lacking:
        offered = ", ".join(sorted(provides)) or "none"
        raise RulesError(f"the rule file uses input {', '.join(lacking)}, which the {source} source cannot provide "
                         f"(optional inputs it provides: {offered}); use a rule file without it")

"""The values that flow through the scorer: inputs per node -> reports per node -> Results.

Pure data. A source (Prometheus or the local exporter) yields `Inputs`; the evaluator turns
them, with the fuzzy controller and the per-node decision state machine, into one immutable
`Results` per tick, which HTTP handlers, metrics and CSV sinks read without locks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple

from common import names as n

NAN = math.nan


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class PodRef:
    """One pod of a node named in a deny's explanation: the top victim (most run-queue wait per
    second), the top aggressor (most CPU seconds per second) or the top IO aggressor (most D-state
    seconds per second), from the per-pod families (docs/metrics.md#per-pod-metrics); `rate` is
    that role's rate. `namespace` and `name` are empty when the exporter knows the pod by UID only."""

    namespace: str
    name: str
    uid: str
    rate: float

    @property
    def shown(self) -> str:
        """`shop/checkout`, or `uid 6c3c22c6-...` for a pod known by UID only."""
        return n.pod_shown(self.namespace, self.name, self.uid)


@dataclass(frozen=True)
class NodeInputs:
    """One node's four inputs as read, raw (unclamped). NaN = missing or stale.

    `missing` names the inputs (from names.INPUTS: friction, energy, cpu, psi, then
    names.OPTIONAL_INPUTS the source was asked for) that are missing or stale and `why` says
    why per input ("absent", "stale 75s", "query failed: 503"). `rq_p99_ms` (run-queue p99,
    ms) is read only for a rule base that uses it; NaN otherwise.
    `calibrating` is True while the node's exporter reports its baseline not frozen; then
    friction and energy are missing by design and `warmup_remaining_s` says for how long.
    `baseline_unavailable` is True when that exporter runs the procfs source: without p99 no
    baseline sample is ever accepted (docs/design.md#baseline, docs/design.md#sources), so the calibration never ends.
    `victim`, `aggressor` and `io_aggressor` are the node's top pods per role (names.POD_ROLES)
    when the source knows them (not inputs: they only name who suffers and who causes it in a
    deny's reason).
    """

    node: str
    friction: float = NAN
    direction: float = NAN
    energy: float = NAN
    cpu_pct: float = NAN
    psi_pct: float = NAN
    missing: tuple[str, ...] = ()
    why: Mapping[str, str] = field(default_factory=_empty)
    calibrating: bool = False
    warmup_remaining_s: float = NAN
    baseline_unavailable: bool = False
    rq_p99_ms: float = NAN
    victim: PodRef | None = None
    aggressor: PodRef | None = None
    io_aggressor: PodRef | None = None

    @property
    def top_pods(self) -> tuple[tuple[str, PodRef], ...]:
        """(role, pod) for every role whose pod is known, in names.POD_ROLES order."""
        pods = (self.victim, self.aggressor, self.io_aggressor)
        return tuple((role, pod) for role, pod in zip(n.POD_ROLES, pods, strict=True) if pod is not None)

    @property
    def friction_signed(self) -> float:
        """Friction × Direction; unsigned Friction when Direction is missing (docs/design.md#scorer-inputs)."""
        if math.isnan(self.direction):
            return self.friction
        return self.friction * self.direction


@dataclass(frozen=True)
class Inputs:
    """Everything one fetch produced: per-node inputs and the source's own errors.

    `errors` maps a short reason label (for ksense_scorer_source_errors_total) to a count for
    this fetch; `ok` is False when the source could not answer at all (then `nodes` holds the
    previously known nodes with every input missing, so decisions turn to deny, not vanish).
    """

    time: datetime
    source: str
    nodes: Mapping[str, NodeInputs] = field(default_factory=_empty)
    errors: Mapping[str, int] = field(default_factory=_empty)
    ok: bool = True


class NodeReport(NamedTuple):
    """One node's outcome of one tick; the body of GET /score?node= (docs/api.md). A named
    tuple, not a frozen dataclass: a tick builds one per node, and this is four times cheaper."""

    node: str
    time: datetime
    decision: str  # "allow" | "deny"
    score: float
    level: str  # "low" | "medium" | "high"
    medium_band: str | None  # "medium-low" | "medium-mid" | "medium-high" | None
    reason: str | None
    inputs: NodeInputs
    missing: tuple[str, ...]
    bad_count: int
    good_count: int


@dataclass(frozen=True)
class Results:
    """The latest evaluation for all nodes; replaced atomically once per tick."""

    time: datetime
    source: str
    reports: Mapping[str, NodeReport] = field(default_factory=_empty)

    @property
    def allowed(self) -> tuple[NodeReport, ...]:
        """Allowed nodes, best (lowest score) first, ties by name."""
        allowed = (r for r in self.reports.values() if r.decision == "allow")
        return tuple(sorted(allowed, key=lambda r: (r.score, r.node)))

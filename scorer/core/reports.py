"""JSON views of the evaluator's results: the bodies of GET /score (docs/api.md), pure.

Kept apart from the HTTP shell so the exact shape (keys, nulls, rounding, order) is tested
with literal values, and so every consumer of /score (the fuzzy scheduler's scorer source, the
README's curl examples) reads one definition.

Shape decisions: `time` is UTC ISO 8601 with milliseconds and `Z`; `score` has 3 decimals (as
the monitor CSV); `inputs` are the raw unclamped values, null when missing (NaN is not JSON);
nodes are sorted by name.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict

from common.core.csvrow import format_number, format_time
from common.names import RQ_P99
from scorer.core.model import NodeInputs, NodeReport, PodRef, Results


class PodJson(TypedDict):
    namespace: str
    name: str
    uid: str
    rate: float


class InputsJson(TypedDict, total=False):
    friction_signed: float | None
    energy: float | None
    cpu_pct: float | None
    psi_pct: float | None
    rq_p99_ms: float | None  # only for a rule base with the run-queue p99 input


class ReportJson(TypedDict, total=False):
    node: str
    time: str
    decision: str
    score: float | None
    level: str
    medium_band: str | None
    reason: str | None
    inputs: InputsJson
    missing: list[str]
    bad_count: int
    good_count: int
    victim: PodJson | None
    aggressor: PodJson | None
    io_aggressor: PodJson | None
    explain: dict[str, Any]


class ResultsJson(TypedDict):
    time: str
    source: str
    nodes: list[ReportJson]


def iso_time(ts: datetime) -> str:
    """`2026-11-28T16:00:01.000Z`; a naive time is taken as local wall time."""
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def report_json(report: NodeReport, explain: Mapping[str, Any] | None = None) -> ReportJson:
    """GET /score?node= body; `explain` (the inference trace) is added when given."""
    body: ReportJson = {
        "node": report.node,
        "time": iso_time(report.time),
        "decision": report.decision,
        "score": round(report.score, 3) if math.isfinite(report.score) else None,
        "level": report.level,
        "medium_band": report.medium_band,
        "reason": report.reason,
        "inputs": inputs_json(report.inputs),
        "missing": list(report.missing),
        "bad_count": report.bad_count,
        "good_count": report.good_count,
        "victim": pod_json(report.inputs.victim),
        "aggressor": pod_json(report.inputs.aggressor),
        "io_aggressor": pod_json(report.inputs.io_aggressor),
    }
    if explain is not None:
        body["explain"] = dict(explain)
    return body


def results_json(results: Results, explains: Mapping[str, Mapping[str, Any]] | None = None) -> ResultsJson:
    """GET /score body: every node sorted by name; `explains` maps node -> trace when asked."""
    explains = explains or {}
    return {
        "time": iso_time(results.time),
        "source": results.source,
        "nodes": [report_json(results.reports[node], explains.get(node)) for node in sorted(results.reports)],
    }


def pod_json(pod: PodRef | None) -> PodJson | None:
    """A top pod of the node (`victim`: wait seconds per second; `aggressor`: CPU seconds per
    second; `io_aggressor`: D-state seconds per second), null when unknown."""
    if pod is None:
        return None
    return {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid, "rate": round(pod.rate, 6)}


def inputs_json(inputs: NodeInputs) -> InputsJson:
    def raw(v: float) -> float | None:
        return v if math.isfinite(v) else None

    out: InputsJson = {
        "friction_signed": raw(inputs.friction_signed),
        "energy": raw(inputs.energy),
        "cpu_pct": raw(inputs.cpu_pct),
        "psi_pct": raw(inputs.psi_pct),
    }
    # Read only when the rule base uses it (scorer.core.inputs): present, or missing and said so.
    if math.isfinite(inputs.rq_p99_ms) or RQ_P99 in inputs.missing:
        out[RQ_P99] = raw(inputs.rq_p99_ms)
    return out


#: The inputs a fuzzy_monitor.csv row carries, in column order (friction signed by its direction).
MONITOR_INPUTS = ("friction", "energy", "cpu", "psi")


def monitor_row(local_time: datetime, node: str, values: Mapping[str, float], missing: Collection[str],
                score: float, level: str, decision: str, reason: str) -> list[str]:
    """One fuzzy_monitor.csv row (docs/metrics.md#fuzzy_monitorcsv), the one definition the live scorer
    and `scorer.export` share: `local_time` naive local wall time (milliseconds), the MONITOR_INPUTS with
    6 decimals and empty when missing, the score with 3."""
    cells = ["" if name in missing else format_number(values[name], 6) for name in MONITOR_INPUTS]
    return [format_time(local_time), node, *cells, format_number(score, 3), level, decision, reason]

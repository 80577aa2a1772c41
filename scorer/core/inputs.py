"""Turn what a source read (PromQL vectors, or one exporter's exposition) into `NodeInputs`, pure.

Both sources end here, so the Prometheus path and the local path cannot disagree about what
an input means. A source reduces its answer to *signals*: per signal a map node -> `Sample`
(value, Unix time of the sample), or a failure reason when the whole read of that signal
failed. This module then applies, per node:

- freshness: a sample with `now - ts > long_win_s` is missing, reason `stale <age>s`
  (Prometheus' 5-minute lookback would otherwise pass a dead exporter's last value as fresh);
- joining on `node`: a node is known when any signal names it; a node absent from a signal
  that was read successfully misses that input, reason `absent`; a failed read of a signal
  makes the input missing for every node, reason = the failure ("prometheus down", "http 503");
- calibrating: `ksense_baseline_frozen == 0` means friction and energy are missing by design,
  reason `calibrating` (with the warm-up left when the exporter says);
- units: CPU % = 100 × ksense_cpu_utilization_ratio; PSI % = 100 × ksense_pressure_worst_ratio
  (SPEC §2.3: the node's PSI is the worst resource's `some` share, which every exporter source,
  replay included, exports as that one series);
- signed friction is left to `NodeInputs.friction_signed` (Friction × Direction, unsigned when
  Direction is missing), so a missing Direction never makes friction missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from exporter import names as n
from scorer.core.model import NodeInputs

# Signal names: what a source reads per tick, one query each on Prometheus.
FRICTION = "friction"
DIRECTION = "direction"
ENERGY = "energy"
CPU = "cpu"
PSI = "psi"
FROZEN = "frozen"
WARMUP = "warmup"
SIGNALS = (FRICTION, DIRECTION, ENERGY, CPU, PSI, FROZEN, WARMUP)

#: The exporter family behind each signal.
FAMILY = MappingProxyType(
    {
        FRICTION: n.FRICTION.name,
        DIRECTION: n.FRICTION_DIRECTION.name,
        ENERGY: n.ENERGY.name,
        CPU: n.CPU_UTILIZATION.name,
        PSI: n.PRESSURE_WORST.name,
        FROZEN: n.BASELINE_FROZEN.name,
        WARMUP: n.BASELINE_WARMUP_REMAINING.name,
    }
)
_SIGNAL_OF_FAMILY = {family: signal for signal, family in FAMILY.items()}

# Ratios (0-1) on the wire, percent in the controller.
_PERCENT = frozenset({CPU, PSI})

REASON_ABSENT = "absent"
REASON_CALIBRATING = "calibrating"

Vectors = Mapping[str, Mapping[str, "Sample"]]


@dataclass(frozen=True)
class Sample:
    """One signal's value for one node and the Unix time (seconds) it was measured."""

    value: float
    ts: float


def stale_reason(age_s: float) -> str:
    return f"stale {age_s:.0f}s"


def _fresh(sample: Sample | None, now: float, long_win_s: float) -> tuple[float, str | None]:
    """(value, None) when usable, else (NaN, reason). A sample from the future (clock skew
    between us and Prometheus) counts as fresh: age is clamped at 0."""
    if sample is None:
        return math.nan, REASON_ABSENT
    if not math.isfinite(sample.value):
        return math.nan, REASON_ABSENT
    age = now - sample.ts
    if age > long_win_s:
        return math.nan, stale_reason(age)
    return sample.value, None


def node_inputs(
    node: str,
    vectors: Vectors,
    failed: Mapping[str, str],
    *,
    now: float,
    long_win_s: float,
) -> NodeInputs:
    """One node's NodeInputs from the per-signal vectors (see the module docstring)."""
    values: dict[str, float] = {}
    why: dict[str, str] = {}
    for signal in SIGNALS:
        if signal in failed:
            values[signal], why[signal] = math.nan, failed[signal]
            continue
        value, reason = _fresh(vectors.get(signal, {}).get(node), now, long_win_s)
        values[signal] = value * 100.0 if signal in _PERCENT else value
        if reason is not None:
            why[signal] = reason

    # Only an explicit, fresh "frozen == 0" means calibrating; an unknown baseline state is
    # not evidence of calibration, so then friction/energy go by their own presence.
    calibrating = values[FROZEN] == 0.0
    warmup = values[WARMUP] if calibrating else math.nan
    if calibrating:
        left = f" ({warmup:.0f}s warm-up left)" if math.isfinite(warmup) and warmup > 0 else ""
        for signal in (FRICTION, ENERGY):
            values[signal], why[signal] = math.nan, REASON_CALIBRATING + left

    input_reasons = {
        "friction": why.get(FRICTION),
        "energy": why.get(ENERGY),
        "cpu": why.get(CPU),
        "psi": why.get(PSI),
    }
    missing = tuple(name for name in n.INPUTS if input_reasons[name] is not None)
    return NodeInputs(
        node=node,
        friction=values[FRICTION],
        direction=values[DIRECTION],
        energy=values[ENERGY],
        cpu_pct=values[CPU],
        psi_pct=values[PSI],
        missing=missing,
        why=MappingProxyType({name: input_reasons[name] for name in missing}),
        calibrating=calibrating,
        warmup_remaining_s=warmup,
    )


def build(
    vectors: Vectors,
    failed: Mapping[str, str],
    *,
    now: float,
    long_win_s: float,
    known: Iterable[str] = (),
) -> dict[str, NodeInputs]:
    """NodeInputs for every node named by any vector, plus the `known` ones (nodes seen before:
    they stay, with their inputs missing, so their decision turns to deny instead of vanishing)."""
    nodes = set(known)
    for vector in vectors.values():
        nodes.update(vector)
    return {
        node: node_inputs(node, vectors, failed, now=now, long_win_s=long_win_s) for node in sorted(nodes)
    }


def split_timestamped(result: Iterable[Mapping], ts_label: str) -> dict[str, Sample]:
    """node -> Sample from one instant-vector `result` that carries both the value series and,
    tagged with `ts_label`, the `timestamp()` series of the same aggregation (see
    scorer/sources/prometheus.py for the query). A node whose value or timestamp is missing
    is left out. Raises ValueError on a malformed element."""
    values: dict[str, float] = {}
    stamps: dict[str, float] = {}
    for element in result:
        labels = element["metric"]
        node = labels.get(n.LABEL_NODE)
        if node is None:
            continue
        value = float(element["value"][1])
        (stamps if ts_label in labels else values)[node] = value
    return {node: Sample(values[node], stamps[node]) for node in values if node in stamps}


def vectors_from_exposition(samples: Iterable, now: float) -> dict[str, dict[str, Sample]]:
    """Signal -> node -> Sample from parsed exposition samples (objects with `name`, `labels`,
    `value`, as prometheus_client's text parser yields them). The exposition has no
    timestamps: every sample is as old as the scrape, `now`. Duplicate series keep the largest
    value, as the Prometheus source's `max by (node)` does."""
    vectors: dict[str, dict[str, Sample]] = {signal: {} for signal in SIGNALS}
    for sample in samples:
        signal = _SIGNAL_OF_FAMILY.get(sample.name)
        node = sample.labels.get(n.LABEL_NODE)
        if signal is None or node is None:
            continue
        value = float(sample.value)
        if math.isnan(value):
            continue
        old = vectors[signal].get(node)
        if old is None or value > old.value:
            vectors[signal][node] = Sample(value, now)
    return vectors


def split_timestamped_matrix(result: Iterable[Mapping], ts_label: str) -> dict[float, dict[str, Sample]]:
    """The range-query form of `split_timestamped`: step time -> node -> Sample, from a matrix
    `result` (`values: [[t, "v"], ...]`) holding both the value and the tagged timestamp series.
    Step times are rounded to the millisecond, the resolution Prometheus evaluates at."""
    values: dict[float, dict[str, float]] = {}
    stamps: dict[float, dict[str, float]] = {}
    for element in result:
        labels = element["metric"]
        node = labels.get(n.LABEL_NODE)
        if node is None:
            continue
        into = stamps if ts_label in labels else values
        for t, v in element["values"]:
            into.setdefault(round(float(t), 3), {})[node] = float(v)
    return {
        t: {node: Sample(v, stamps[t][node]) for node, v in by_node.items() if node in stamps.get(t, {})}
        for t, by_node in values.items()
    }

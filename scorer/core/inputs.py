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
  reason `calibrating` (with the warm-up left when the exporter says), or, when the exporter
  runs the procfs source (`ksense_exporter_source_info{source="procfs"}`), whose baseline never
  freezes, reason `baseline unavailable (procfs source has no p99)`;
- units: CPU % = 100 × ksense_cpu_utilization_ratio; PSI % = 100 × ksense_pressure_worst_ratio
  (docs/design.md#one-interval: the node's PSI is the worst resource's `some` share, which every exporter source,
  replay included, exports as that one series); run-queue p99 ms = 1000 ×
  ksense_runqueue_latency_p99_seconds (the CSV's SchedLat_P99_ms);
- optional inputs (OPTIONAL_SIGNALS, the run-queue p99): read, and reported missing, only when
  the caller asks for them (`optional`: the rule base's RuleBase.inputs), so a scorer whose
  rules do not use them neither queries them nor shows them;
- signed friction is left to `NodeInputs.friction_signed` (Friction × Direction, unsigned when
  Direction is missing), so a missing Direction never makes friction missing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from common import names as n
from scorer.core.model import NodeInputs, PodRef

# Signal names: what a source reads per tick, one query each on Prometheus.
FRICTION = "friction"
DIRECTION = "direction"
ENERGY = "energy"
CPU = "cpu"
PSI = "psi"
FROZEN = "frozen"
WARMUP = "warmup"
PROCFS = "procfs"  # 1 when the node's exporter runs the procfs source
SIGNALS = (FRICTION, DIRECTION, ENERGY, CPU, PSI, FROZEN, WARMUP, PROCFS)
#: Signals read only for a rule base that uses them, named like its input (names.OPTIONAL_INPUTS).
OPTIONAL_SIGNALS = n.OPTIONAL_INPUTS
#: The signals whose missing reason a node shows (the inputs); for the others (Direction, the
#: baseline state, the source) a stale sample and an absent one mean the same.
REASONED_SIGNALS = (FRICTION, ENERGY, CPU, PSI, *OPTIONAL_SIGNALS)

#: The exporter family behind each signal, and the label value a series must carry, if any.
_SERIES: Mapping[str, tuple[str, tuple[str, str] | None]] = MappingProxyType(
    {
        FRICTION: (n.FRICTION.name, None),
        DIRECTION: (n.FRICTION_DIRECTION.name, None),
        ENERGY: (n.ENERGY.name, None),
        CPU: (n.CPU_UTILIZATION.name, None),
        PSI: (n.PRESSURE_WORST.name, None),
        FROZEN: (n.BASELINE_FROZEN.name, None),
        WARMUP: (n.BASELINE_WARMUP_REMAINING.name, None),
        PROCFS: (n.SOURCE_INFO.name, (n.LABEL_SOURCE, n.SOURCE_PROCFS)),
        n.RQ_P99: (n.RUNQUEUE_LATENCY_P99.name, None),
    }
)
_SIGNALS_OF_FAMILY: dict[str, list[str]] = {}
for _signal, (_family, _) in _SERIES.items():
    _SIGNALS_OF_FAMILY.setdefault(_family, []).append(_signal)



def selectors(matchers: str, optional: Iterable[str] = ()) -> Mapping[str, str]:
    """The PromQL series selector of each signal (SIGNALS, then the `optional` ones): its
    family, restricted to the label `matchers` (`job="ksense-exporter",namespace="ksense"`:
    whose series to trust, see common/names.py) and, for PROCFS, to the procfs source. ""
    trusts every series."""
    out = {}
    wanted = (*SIGNALS, *(s for s in OPTIONAL_SIGNALS if s in set(optional)))
    for signal in wanted:
        family, label = _SERIES[signal]
        parts = [matchers] if matchers else []
        if label is not None:
            parts.append(f'{label[0]}="{label[1]}"')
        out[signal] = f"{family}{{{','.join(parts)}}}" if parts else family
    return MappingProxyType(out)

# --- the pods a deny's reason names (docs/metrics.md#per-pod-metrics) ---------------------------------
#: Window of the per-pod rates: four scrapes at the usual 15 s, short enough to name today's pods.
POD_RATE_WINDOW_S = 60
POD_RATE_WINDOW = f"{POD_RATE_WINDOW_S}s"
#: The per-pod counter behind each role (names.POD_ROLES), each a rate in seconds per second.
POD_SERIES = MappingProxyType({
    n.POD_ROLE_VICTIM: f"{n.POD_RUNQUEUE_WAIT.name}_sum",  # run-queue wait
    n.POD_ROLE_AGGRESSOR: n.POD_CPU.name,  # CPU time
    n.POD_ROLE_IO_AGGRESSOR: n.POD_DSTATE.name,  # D-state (uninterruptible, mostly IO) time
})
#: Pods by role by node: role -> node -> its top pod.
TopPods = Mapping[str, Mapping[str, PodRef]]


def pod_queries(matchers: str, nodes: Iterable[str] | None) -> Mapping[str, str]:
    """One PromQL per role: each node's pod with the highest rate (`topk by (node)`), over the
    series `matchers` trusts, of the `nodes` named (None: of every node); the `other` sum is
    nobody."""
    parts = [matchers] if matchers else []
    parts.append(f'{n.LABEL_POD_UID}!="{n.POD_UID_OTHER}"')
    if nodes is not None:
        parts.append(f'{n.LABEL_NODE}=~"{node_regex(sorted(set(nodes)))}"')
    sel = ",".join(parts)
    return MappingProxyType({
        role: f"topk by ({n.LABEL_NODE}) (1, rate({family}{{{sel}}}[{POD_RATE_WINDOW}]))"
        for role, family in POD_SERIES.items()
    })


_REGEX_SPECIAL = re.compile(r"([\\.^$*+?()\[\]{}|])")


def node_regex(nodes: Iterable[str]) -> str:
    """A PromQL string's text (between its double quotes) for a regex matching exactly `nodes`,
    whatever they hold: each regex metacharacter escaped (not `-`, the bulk of node names: a
    query's length is bounded), then string-escaped as JSON does (PromQL reads the same escapes;
    a raw newline or quote would make the query unparsable)."""
    return json.dumps("|".join(_REGEX_SPECIAL.sub(r"\\\1", node) for node in nodes), ensure_ascii=False)[1:-1]


def node_groups(nodes: Iterable[str], max_chars: int, max_groups: int) -> list[list[str]] | None:
    """`nodes` (sorted) cut into groups whose `node_regex` is at most about `max_chars` long (a
    name longer than that alone); None when that takes more than `max_groups` groups."""
    groups: list[list[str]] = [[]]
    size = 0
    for node in sorted(set(nodes)):
        cost = len(node_regex([node])) + 1
        if groups[-1] and size + cost > max_chars:
            if len(groups) == max_groups:
                return None
            groups.append([])
            size = 0
        groups[-1].append(node)
        size += cost
    return groups


def top_pods(result: Iterable[Mapping[str, Any]]) -> dict[str, PodRef]:
    """node -> its top pod from a `pod_queries` answer (Prometheus vector elements). topk may
    return more than one series per node on ties or duplicate scrapes: `_keep_top` decides."""
    out: dict[str, PodRef] = {}
    for element in result:
        labels = element.get("metric") or {}
        node, uid = labels.get(n.LABEL_NODE), labels.get(n.LABEL_POD_UID)
        rate = float(element["value"][1])  # a malformed element raises: the caller counts the answer bad
        if node and uid:
            _keep_top(out, node, PodRef(labels.get(n.LABEL_POD_NAMESPACE, ""), labels.get(n.LABEL_POD_NAME, ""),
                                        uid, rate))
    return out


def _keep_top(into: dict[str, PodRef], node: str, pod: PodRef) -> None:
    """Keep `pod` as the node's top pod if it beats the one kept: the highest rate wins, ties by
    uid. A rate of 0 (no pod waited or ran) or not finite names nobody."""
    if not math.isfinite(pod.rate) or pod.rate <= 0:
        return
    have = into.get(node)
    if have is None or (pod.rate, have.uid) > (have.rate, pod.uid):
        into[node] = pod


#: A per-pod counter read from one exposition: (role, node, namespace, name, uid) -> value.
PodCounters = Mapping[tuple[str, str, str, str, str], float]
_ROLE_OF_SAMPLE = MappingProxyType({sample: role for role, sample in POD_SERIES.items()})


def pod_counters(samples: Iterable[Any]) -> dict[tuple[str, str, str, str, str], float]:
    """The POD_SERIES counters of parsed exposition samples (objects with `name`, `labels`,
    `value`), `other` left out; a duplicate series keeps its larger value."""
    out: dict[tuple[str, str, str, str, str], float] = {}
    for sample in samples:
        role = _ROLE_OF_SAMPLE.get(sample.name)
        if role is None:
            continue
        labels = sample.labels
        node, uid = labels.get(n.LABEL_NODE), labels.get(n.LABEL_POD_UID)
        value = float(sample.value)
        if not node or not uid or uid == n.POD_UID_OTHER or not math.isfinite(value):
            continue
        key = (role, node, labels.get(n.LABEL_POD_NAMESPACE, ""), labels.get(n.LABEL_POD_NAME, ""), uid)
        out[key] = max(value, out.get(key, value))
    return out


class PodRates:
    """The local source's `pod_queries`: the top pods per role and node from successive scrapes
    of one exporter's per-pod counters, as the Prometheus source's `rate(...[POD_RATE_WINDOW])`.

    `add(t, counters)` keeps the scrape and answers with rates against the oldest scrape kept
    that is at most `window_s` older (a counter that went down, an exporter restart, counts from
    0, as Prometheus' rate does; a pod absent from that older scrape names nobody yet). Memory:
    the scrapes of one window, each bounded by the exporter's top-K (docs/metrics.md#per-pod-metrics).
    """

    def __init__(self, window_s: float = POD_RATE_WINDOW_S):
        self._window = window_s
        self._kept: list[tuple[float, PodCounters]] = []

    def add(self, t: float, counters: PodCounters) -> dict[str, dict[str, PodRef]]:
        self._kept = [(at, c) for at, c in self._kept if 0 < t - at <= self._window]
        out: dict[str, dict[str, PodRef]] = {}
        if self._kept:
            at, before = self._kept[0]
            for key, value in counters.items():
                old = before.get(key)
                if old is None:
                    continue
                role, node, namespace, name, uid = key
                rate = (value - old if value >= old else value) / (t - at)
                _keep_top(out.setdefault(role, {}), node, PodRef(namespace, name, uid, rate))
        self._kept.append((t, counters))
        return out


# Ratios (0-1) on the wire, percent in the controller; seconds on the wire, ms in the controller.
_SCALE = MappingProxyType({CPU: 100.0, PSI: 100.0, n.RQ_P99: 1000.0})

REASON_ABSENT = "absent"
REASON_CALIBRATING = "calibrating"
REASON_NO_BASELINE = "baseline unavailable (procfs source has no p99)"

Vectors = Mapping[str, Mapping[str, "Sample"]]


class Sample(NamedTuple):
    """One signal's value for one node and the Unix time (seconds) it was measured; from a tick
    query (`split_tick`) of a fresh node, the query's time (the query vouched for freshness).
    NaN: not a usable value (or, stale, not read). A named tuple: a tick makes one per node and
    signal (80,000 at 10,000 nodes), and a frozen dataclass costs three times as much to make."""

    value: float
    ts: float


def stale_reason(age_s: float) -> str:
    return f"stale {age_s:.0f}s"


def _fresh(sample: Sample | None, now: float, long_win_s: float) -> tuple[float, str | None]:
    """(value, None) when usable, else (NaN, reason). A sample from the future (clock skew
    between us and Prometheus) counts as fresh: age is clamped at 0. Stale is said before
    absent: a stale sample's value may be unknown (NaN, `split_stale`)."""
    if sample is None:
        return math.nan, REASON_ABSENT
    age = now - sample.ts
    if age > long_win_s:
        return math.nan, stale_reason(age)
    if not math.isfinite(sample.value):
        return math.nan, REASON_ABSENT
    return sample.value, None


def _asked(optional: Iterable[str]) -> tuple[str, ...]:
    """The optional signals named in `optional`, in OPTIONAL_SIGNALS' order."""
    named = set(optional)
    return tuple(s for s in OPTIONAL_SIGNALS if s in named)


def node_inputs(
    node: str,
    vectors: Vectors,
    failed: Mapping[str, str],
    *,
    now: float,
    long_win_s: float,
    optional: Iterable[str] = (),
    pods: TopPods | None = None,
) -> NodeInputs:
    """One node's NodeInputs from the per-signal vectors (see the module docstring); the
    `optional` signals (names.OPTIONAL_INPUTS) are read only when named; the top pods by role
    (`top_pods` per role), when read."""
    return _node_inputs(node, vectors, failed, now, long_win_s, _asked(optional), pods)


def _node_inputs(node: str, vectors: Vectors, failed: Mapping[str, str], now: float, long_win_s: float,
                 asked: tuple[str, ...], pods: TopPods | None) -> NodeInputs:
    """`node_inputs` with the optional signals already resolved (`_asked`)."""
    values: dict[str, float] = {}
    why: dict[str, str] = {}
    for signal in (*SIGNALS, *asked):
        if signal in failed:
            values[signal], why[signal] = math.nan, failed[signal]
            continue
        vector = vectors.get(signal)
        value, reason = _fresh(None if vector is None else vector.get(node), now, long_win_s)
        values[signal] = value * _SCALE.get(signal, 1.0)
        if reason is not None:
            why[signal] = reason

    # Only an explicit, fresh "frozen == 0" means calibrating; an unknown baseline state is
    # not evidence of calibration, so then friction/energy go by their own presence.
    calibrating = values[FROZEN] == 0.0
    no_baseline = calibrating and values[PROCFS] == 1.0
    warmup = values[WARMUP] if calibrating else math.nan
    if calibrating:
        left = f" ({warmup:.0f}s warm-up left)" if math.isfinite(warmup) and warmup > 0 else ""
        for signal in (FRICTION, ENERGY):
            values[signal], why[signal] = math.nan, REASON_NO_BASELINE if no_baseline else REASON_CALIBRATING + left

    input_reasons = {
        "friction": why.get(FRICTION),
        "energy": why.get(ENERGY),
        "cpu": why.get(CPU),
        "psi": why.get(PSI),
    }
    input_reasons.update({name: why.get(name) for name in asked})
    missing = tuple(name for name in (*n.INPUTS, *asked) if input_reasons[name] is not None)
    return NodeInputs(
        node=node,
        friction=values[FRICTION],
        direction=values[DIRECTION],
        energy=values[ENERGY],
        cpu_pct=values[CPU],
        psi_pct=values[PSI],
        missing=missing,
        why=MappingProxyType({name: reason for name in missing if (reason := input_reasons[name]) is not None}),
        calibrating=calibrating,
        warmup_remaining_s=warmup,
        baseline_unavailable=no_baseline,
        rq_p99_ms=values.get(n.RQ_P99, math.nan),
        victim=(pods or {}).get(n.POD_ROLE_VICTIM, {}).get(node),
        aggressor=(pods or {}).get(n.POD_ROLE_AGGRESSOR, {}).get(node),
        io_aggressor=(pods or {}).get(n.POD_ROLE_IO_AGGRESSOR, {}).get(node),
    )


def build(
    vectors: Vectors,
    failed: Mapping[str, str],
    *,
    now: float,
    long_win_s: float,
    known: Iterable[str] = (),
    optional: Iterable[str] = (),
    pods: TopPods | None = None,
) -> dict[str, NodeInputs]:
    """NodeInputs for every node named by any vector, plus the `known` ones (nodes seen before:
    they stay, with their inputs missing, so their decision turns to deny instead of vanishing);
    `optional` as in `node_inputs`. `pods` (role -> node -> PodRef) names pods only: it adds no node."""
    nodes = set(known)
    for vector in vectors.values():
        nodes.update(vector)
    asked = _asked(optional)  # once, not per node
    return {node: _node_inputs(node, vectors, failed, now, long_win_s, asked, pods) for node in sorted(nodes)}


#: The labels that identify a series (every one but the name and the timestamp tag).
SeriesKey = frozenset[tuple[str, str]]


def _series_key(labels: Mapping[str, str], ts_label: str) -> SeriesKey:
    """What a value series and its `timestamp()` twin share: every label but the metric name
    (timestamp() drops it) and the tag."""
    return frozenset((k, v) for k, v in labels.items() if k not in ("__name__", ts_label))


def _keep_newest(into: dict[str, Sample], node: str, sample: Sample) -> None:
    """A node's newest series wins; on equal timestamps, the larger value (deterministic, and
    the conservative pick for every input: higher friction, energy, CPU or PSI)."""
    old = into.get(node)
    if old is None or (sample.ts, sample.value) > (old.ts, old.value):
        into[node] = sample


def split_timestamped(result: Iterable[Mapping[str, Any]], ts_label: str) -> dict[str, Sample]:
    """node -> Sample from one instant-vector `result` holding every series of a signal and,
    tagged with `ts_label`, each series' `timestamp()` (see scorer/sources/prometheus.py for the
    query). Value and timestamp are paired per series (full label set), never per node: a node
    with duplicate series (a Prometheus restart without staleness markers, two scrape jobs,
    remote-write) keeps its newest series whole, so a stale value cannot borrow a fresh
    timestamp. A series without its value or timestamp, or without `node`, is left out.
    Raises ValueError (KeyError, TypeError) on a malformed element."""
    values: dict[SeriesKey, float] = {}
    stamps: dict[SeriesKey, float] = {}
    for element in result:
        labels = element["metric"]
        if n.LABEL_NODE not in labels:
            continue
        into = stamps if ts_label in labels else values
        into[_series_key(labels, ts_label)] = float(element["value"][1])
    out: dict[str, Sample] = {}
    for key, value in values.items():
        if key in stamps:
            _keep_newest(out, dict(key)[n.LABEL_NODE], Sample(value, stamps[key]))
    return out


#: The label a tick query's answer carries each node's value in (`count_values`).
VALUE_LABEL = "ksense_value"


def split_tick(result: Iterable[Mapping[str, Any]], at: float) -> tuple[dict[str, Sample], set[str]]:
    """(node -> Sample, the nodes with disagreeing series) from one tick-query `result` (see
    scorer/sources/prometheus.py: `count_values by (node)` of the fresh series, the value in
    VALUE_LABEL). A node with one value gets it, as fresh as the query time `at` (the query
    vouched for its freshness); a node with more than one is left out (the caller reads its
    series one by one, `split_timestamped`). Elements without `node` are ignored. Raises
    ValueError (KeyError, TypeError) on a malformed element."""
    values: dict[str, float] = {}
    disagree: set[str] = set()
    for element in result:
        labels = element["metric"]
        node = labels.get(n.LABEL_NODE)
        value = float(labels[VALUE_LABEL])
        if node is None:
            continue
        if node in values:
            disagree.add(node)
        values[node] = value
    return {node: Sample(value, at) for node, value in values.items() if node not in disagree}, disagree


def split_stale(result: Iterable[Mapping[str, Any]]) -> dict[str, Sample]:
    """node -> Sample(NaN, its newest series' timestamp) from a `max by (node) (timestamp(S))`
    answer: nodes whose every series is older than the bound (`_fresh` says `stale <age>`).
    Raises ValueError (KeyError, TypeError) on a malformed element."""
    out = {}
    for element in result:
        node = element["metric"].get(n.LABEL_NODE)
        ts = float(element["value"][1])
        if node is not None:
            out[node] = Sample(math.nan, ts)
    return out


def vectors_from_exposition(samples: Iterable[Any], now: float) -> dict[str, dict[str, Sample]]:
    """Signal -> node -> Sample from parsed exposition samples (objects with `name`, `labels`,
    `value`, as prometheus_client's text parser yields them). The exposition has no
    timestamps: every sample is as old as the scrape, `now`, so of duplicate series the largest
    value is kept, by the Prometheus source's rule (newest series, then the larger value)."""
    vectors: dict[str, dict[str, Sample]] = {signal: {} for signal in (*SIGNALS, *OPTIONAL_SIGNALS)}
    for sample in samples:
        node = sample.labels.get(n.LABEL_NODE)
        value = float(sample.value)
        if node is None or math.isnan(value):
            continue
        for signal in _SIGNALS_OF_FAMILY.get(sample.name, ()):
            label = _SERIES[signal][1]
            if label is None or sample.labels.get(label[0]) == label[1]:
                _keep_newest(vectors[signal], node, Sample(value, now))
    return vectors


def split_timestamped_matrix(result: Iterable[Mapping[str, Any]], ts_label: str) -> dict[float, dict[str, Sample]]:
    """The range-query form of `split_timestamped`: step time -> node -> Sample, from a matrix
    `result` (`values: [[t, "v"], ...]`), paired per series and step, the newest series per
    node and step kept. Step times are rounded to the millisecond, the resolution Prometheus
    evaluates at."""
    values: dict[SeriesKey, dict[float, float]] = {}
    stamps: dict[SeriesKey, dict[float, float]] = {}
    for element in result:
        labels = element["metric"]
        if n.LABEL_NODE not in labels:
            continue
        into = (stamps if ts_label in labels else values).setdefault(_series_key(labels, ts_label), {})
        for t, v in element["values"]:
            into[round(float(t), 3)] = float(v)
    out: dict[float, dict[str, Sample]] = {}
    for key, by_step in values.items():
        node, ts_by_step = dict(key)[n.LABEL_NODE], stamps.get(key, {})
        for t, value in by_step.items():
            if t in ts_by_step:
                _keep_newest(out.setdefault(t, {}), node, Sample(value, ts_by_step[t]))
    return out

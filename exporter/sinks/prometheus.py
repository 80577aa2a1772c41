"""The exporter's Prometheus view (docs/metrics.md#exporter-metrics): a custom collector over the latest Snapshot.

`ExporterCollector` is a stateless prometheus_client custom collector: every scrape builds fresh
metric families from the latest immutable Snapshot, which the sampler publishes by swapping one
reference, so a scrape never waits for a kernel read. Undefined values (NaN or None) are left
out rather than exported as NaN, so that Prometheus marks the series stale instead of storing a
NaN (docs/metrics.md). Nothing here registers at import: `make_registry` builds a registry from the
collector it is given.

A stuck sampler (a source read or a disk write that hangs) would leave the last interval on
/metrics forever, and Prometheus stamps every scrape with its own time, so an old reading would
look fresh (docs/design.md#scorer-inputs). So once a live source's latest reading is older than `max_age_s` on the
monotonic clock, the collector withholds every per-interval and derived family and keeps only
what stays true (source info, attach state, CSV health; process_* come from their own
collector), and `ready()` turns false (/readyz 503). Replay is exempt: its readings carry the
recording's time and its pace is the recording's.

The registry and the HTTP server that serves it (/metrics, /healthz, /readyz) are every
component's: common/metrics.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from common import names as n
from common.core.model import Derived
from common.csvfile import CsvStats
from common.metrics import histogram_family
from exporter.core.model import Reading, Snapshot, Telemetry
from exporter.sinks import podmetrics

_GAUGES = (
    n.RUNQUEUE_LATENCY_MAX,
    n.RUNQUEUE_LATENCY_P99,
    n.CPU_UTILIZATION,
    n.PRESSURE,
    n.PRESSURE_WORST,
    n.PRESSURE_AVAILABLE,
    n.BASELINE_FROZEN,
    n.BASELINE_SAMPLES,
    n.BASELINE_WARMUP_REMAINING,
    n.FRICTION,
    n.FRICTION_DIRECTION,
    n.FRICTION_RATE,
    n.ENERGY,
    n.ENERGY_WINDOW,
    n.ENERGY_VOLATILITY,
    n.ENERGY_K_FACTOR,
    n.SOURCE_INFO,
    n.BPF_PROGRAM_ATTACHED,
    n.BPF_MAP_ENTRIES,
    n.BPF_MAP_CAPACITY,
)
_COUNTERS = (
    n.RUNQUEUE_LATENCY_DROPPED,
    n.BPF_PROGRAM_RUN_SECONDS,
    n.BPF_PROGRAM_RUNS,
    n.BPF_MAP_UPDATE_FAILURES,
    n.CSV_ROWS_WRITTEN,
    n.CSV_WRITE_ERRORS,
)
_HISTOGRAMS = (n.RUNQUEUE_LATENCY, n.DSTATE_DURATION, n.SOFTIRQ_NET_RX_DURATION, n.SAMPLE_DURATION)

# (label values after `node`, value); a value of None or NaN means "undefined: omit".
_Series = Iterable[tuple[tuple[str, ...], float | int | None]]


class HasStats(Protocol):
    """What the collector needs of a CSV sink."""

    def stats(self) -> CsvStats: ...


def _defined(value: float | int | None) -> bool:
    return value is not None and not math.isnan(value)


def _gauge(family: n.Family, labels: tuple[str, ...], node: str, series: _Series) -> GaugeMetricFamily:
    metric = GaugeMetricFamily(family.name, family.help, labels=(n.LABEL_NODE, *labels))
    for values, value in series:
        if _defined(value):
            metric.add_metric((node, *values), value)
    return metric


def _counter(family: n.Family, labels: tuple[str, ...], node: str, series: _Series) -> CounterMetricFamily:
    metric = CounterMetricFamily(family.name, family.help, labels=(n.LABEL_NODE, *labels))
    for values, value in series:
        if _defined(value):
            metric.add_metric((node, *values), value)
    return metric



class ExporterCollector:
    """Every exporter family of docs/metrics.md#exporter-metrics (except process_*), from `snapshot()`.

    `snapshot` returns the latest published Snapshot (None before the sampler published one);
    `csv_sinks` maps the `file` label value (e.g. "kernel_metrics.csv") to a sink's stats;
    `max_age_s` is how old (on `clock`, monotonic) a live reading may be before it is withheld
    (see the module docstring; None: never). Families without series are left out of the scrape.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot | None],
        *,
        csv_sinks: Mapping[str, HasStats] = MappingProxyType({}),
        max_age_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._snapshot = snapshot
        self._csv_sinks = csv_sinks
        self._max_age_s = max_age_s
        self._clock = clock

    def ready(self) -> bool:
        """True while a reading exists and is not stale: the exporter serves real data."""
        snap = self._snapshot()
        return snap is not None and snap.reading is not None and not self._stale(snap)

    def _stale(self, snap: Snapshot) -> bool:
        return (
            self._max_age_s is not None
            and snap.live
            and snap.reading is not None
            and self._clock() - snap.reading.raw.t > self._max_age_s
        )

    def describe(self) -> Iterator[Metric]:
        """Family names only, so a registry can refuse a collector that would duplicate them."""
        for family in _GAUGES:
            yield GaugeMetricFamily(family.name, family.help)
        for family in _COUNTERS:
            yield CounterMetricFamily(family.name, family.help)
        for family in _HISTOGRAMS:
            yield HistogramMetricFamily(family.name, family.help)
        for family in podmetrics.GAUGES:
            yield GaugeMetricFamily(family.name, family.help)
        for family in podmetrics.COUNTERS:
            yield CounterMetricFamily(family.name, family.help)
        for family in podmetrics.HISTOGRAMS:
            yield HistogramMetricFamily(family.name, family.help)

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        if snap is None:
            return
        for metric in self._families(snap):
            if metric.samples:
                yield metric

    def _families(self, snap: Snapshot) -> Iterator[Metric]:
        # In docs/metrics.md#exporter-metrics order, so that a reader of /metrics can follow the table.
        node = snap.node
        fresh = not self._stale(snap)
        if snap.reading is not None and fresh:
            yield from _kernel_families(node, snap.reading)
        if snap.derived is not None and fresh:
            yield from _derived_families(node, snap.derived)
        yield _gauge(n.SOURCE_INFO, (n.LABEL_SOURCE,), node, [((snap.source,), 1)])
        if snap.reading is not None:
            yield _attached_family(node, snap.reading.telemetry)
            if fresh:
                yield from _bpf_stats_families(node, snap.reading.telemetry)
        if fresh:
            yield histogram_family(n.SAMPLE_DURATION, snap.sample_duration, node)
        if snap.reading is not None and snap.reading.pods is not None and fresh:
            yield from podmetrics.families(node, snap.reading.pods)

        csv_stats = sorted((file, sink.stats()) for file, sink in self._csv_sinks.items())
        yield _counter(
            n.CSV_ROWS_WRITTEN, (n.LABEL_FILE,), node, [((file,), s.rows_written) for file, s in csv_stats]
        )
        yield _counter(
            n.CSV_WRITE_ERRORS,
            (n.LABEL_FILE, n.LABEL_REASON),
            node,
            [((file, reason), count) for file, s in csv_stats for reason, count in sorted(s.errors.items())],
        )


def _kernel_families(node: str, reading: Reading) -> Iterator[Metric]:
    raw, tel = reading.raw, reading.telemetry
    yield histogram_family(n.RUNQUEUE_LATENCY, tel.histograms.get(n.RUNQUEUE_LATENCY.name), node)
    yield _gauge(n.RUNQUEUE_LATENCY_MAX, (), node, [((), tel.runqueue_max_seconds)])
    yield _gauge(n.RUNQUEUE_LATENCY_P99, (), node, [((), raw.sched_p99_ms / 1000)])
    yield _counter(n.RUNQUEUE_LATENCY_DROPPED, (), node, [((), tel.runqueue_dropped_total)])
    yield histogram_family(n.DSTATE_DURATION, tel.histograms.get(n.DSTATE_DURATION.name), node)
    yield histogram_family(n.SOFTIRQ_NET_RX_DURATION, tel.histograms.get(n.SOFTIRQ_NET_RX_DURATION.name), node)
    yield _gauge(n.CPU_UTILIZATION, (), node, [((), raw.cpu_util / 100)])
    yield _gauge(n.PRESSURE, (n.LABEL_RESOURCE, n.LABEL_KIND), node, sorted(tel.pressure.items()))
    yield _gauge(n.PRESSURE_WORST, (), node, [((), raw.psi / 100)])
    yield _gauge(
        n.PRESSURE_AVAILABLE,
        (n.LABEL_RESOURCE,),
        node,
        [((res,), int(ok)) for res, ok in sorted(tel.pressure_available.items())],
    )


def _derived_families(node: str, d: Derived) -> Iterator[Metric]:
    for family, value in (
        (n.BASELINE_FROZEN, int(d.frozen)),
        (n.BASELINE_SAMPLES, d.samples),
        (n.BASELINE_WARMUP_REMAINING, d.warmup_remaining_s),
        (n.FRICTION, d.friction),
        (n.FRICTION_DIRECTION, d.direction),
        (n.FRICTION_RATE, d.df_dt),
        (n.ENERGY, d.energy),
        (n.ENERGY_WINDOW, d.energy_w),
        (n.ENERGY_VOLATILITY, d.energy_vol),
        (n.ENERGY_K_FACTOR, d.energy_k),
    ):
        yield _gauge(family, (), node, [((), value)])


def _attached_family(node: str, tel: Telemetry) -> Metric:
    return _gauge(
        n.BPF_PROGRAM_ATTACHED,
        (n.LABEL_TRACEPOINT,),
        node,
        [((tp,), int(ok)) for tp, ok in sorted(tel.attached.items())],
    )


def _bpf_stats_families(node: str, tel: Telemetry) -> Iterator[Metric]:
    programs = sorted(tel.programs.items())
    yield _counter(
        n.BPF_PROGRAM_RUN_SECONDS, (n.LABEL_PROGRAM,), node, [((p,), s.run_seconds) for p, s in programs]
    )
    yield _counter(n.BPF_PROGRAM_RUNS, (n.LABEL_PROGRAM,), node, [((p,), s.runs) for p, s in programs])
    maps = sorted(tel.maps.items())
    yield _gauge(n.BPF_MAP_ENTRIES, (n.LABEL_MAP,), node, [((m,), s.entries) for m, s in maps])
    yield _gauge(n.BPF_MAP_CAPACITY, (n.LABEL_MAP,), node, [((m,), s.capacity) for m, s in maps])
    yield _counter(
        n.BPF_MAP_UPDATE_FAILURES, (n.LABEL_MAP,), node, [((m,), s.update_failures) for m, s in maps]
    )

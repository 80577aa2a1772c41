"""The scheduler's Prometheus view (docs/metrics.md#scheduler-metrics), served with /healthz and /readyz on port 9862.

`SchedulerStats` is the loop's thread-safe tally (plain counters, no prometheus_client objects,
nothing registered at import); `SchedulerCollector` is a stateless custom collector that builds
fresh families from it on every scrape, with every label value of the contract present from the
start (0 before the first event), so `rate()` and `increase()` see the first one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from common import names as n
from common.core.durations import DurationHistogram
from common.core.model import ExportHistogram
from common.metrics import histogram_family

#: One pod's filter + choose time: ~10 µs for a handful of nodes, ~ms for thousands.
ATTEMPT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class SchedulerStats:
    """Counters the loop updates; `snapshot()` copies them for a scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._binds = dict.fromkeys(n.BIND_RESULTS, 0)
        self._unschedulable = dict.fromkeys(n.UNSCHEDULABLE_REASONS, 0)
        self._pending = 0
        self._attempts = DurationHistogram(ATTEMPT_BUCKETS)

    def bind(self, result: str) -> None:
        with self._lock:
            self._binds[result] += 1

    def unschedulable(self, reasons: Mapping[str, int]) -> None:
        """One pod attempt that found no node: +1 for every reason some node failed first at."""
        with self._lock:
            for reason in reasons:
                self._unschedulable[reason] += 1

    def pending(self, count: int) -> None:
        with self._lock:
            self._pending = count

    def attempt(self, seconds: float) -> None:
        with self._lock:
            self._attempts.observe(seconds)

    def binds(self) -> dict[str, int]:
        with self._lock:
            return dict(self._binds)

    def unschedulable_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._unschedulable)

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], int, ExportHistogram]:
        with self._lock:
            return dict(self._binds), dict(self._unschedulable), self._pending, self._attempts.snapshot()


class SchedulerCollector:
    """Every family of docs/metrics.md#scheduler-metrics from `stats` and `leader()`."""

    def __init__(self, stats: SchedulerStats, leader: Callable[[], bool]):
        self._stats = stats
        self._leader = leader

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(n.SCHEDULER_BINDS.name, n.SCHEDULER_BINDS.help)
        yield CounterMetricFamily(n.SCHEDULER_UNSCHEDULABLE.name, n.SCHEDULER_UNSCHEDULABLE.help)
        yield GaugeMetricFamily(n.SCHEDULER_PENDING_PODS.name, n.SCHEDULER_PENDING_PODS.help)
        yield HistogramMetricFamily(n.SCHEDULER_ATTEMPT_DURATION.name, n.SCHEDULER_ATTEMPT_DURATION.help)
        yield GaugeMetricFamily(n.SCHEDULER_LEADER.name, n.SCHEDULER_LEADER.help)

    def collect(self) -> Iterator[Metric]:
        binds, unschedulable, pending, attempts = self._stats.snapshot()
        metric = CounterMetricFamily(n.SCHEDULER_BINDS.name, n.SCHEDULER_BINDS.help, labels=(n.LABEL_RESULT,))
        for result in n.BIND_RESULTS:
            metric.add_metric((result,), binds[result])
        yield metric
        metric = CounterMetricFamily(n.SCHEDULER_UNSCHEDULABLE.name, n.SCHEDULER_UNSCHEDULABLE.help,
                                     labels=(n.LABEL_REASON,))
        for reason in n.UNSCHEDULABLE_REASONS:
            metric.add_metric((reason,), unschedulable[reason])
        yield metric
        yield GaugeMetricFamily(n.SCHEDULER_PENDING_PODS.name, n.SCHEDULER_PENDING_PODS.help, value=pending)
        yield histogram_family(n.SCHEDULER_ATTEMPT_DURATION, attempts)
        yield GaugeMetricFamily(n.SCHEDULER_LEADER.name, n.SCHEDULER_LEADER.help, value=int(self._leader()))


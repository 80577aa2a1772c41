"""The per-pod families of /metrics (docs/metrics.md#per-pod-metrics), from a tick's PodsReport.

Kept apart from exporter/sinks/prometheus.py, which calls it: the per-pod view has its own
labels and its own bound (the top-K plus `other`, exporter/pods/tracker.py), and exists only
while per-pod accounting is on.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from common import names as n
from exporter.core.pods import PodsReport

_POD_LABELS = (n.LABEL_NODE, n.LABEL_POD_NAMESPACE, n.LABEL_POD_NAME, n.LABEL_POD_UID)

GAUGES = (n.POD_PRESSURE, n.PODS_TRACKED, n.PODS_CAPACITY, n.POD_NAMES_AVAILABLE)
COUNTERS = (n.POD_DSTATE, n.POD_DSTATE_EPISODES, n.POD_CPU, n.PODS_UNTRACKED)
HISTOGRAMS = (n.POD_RUNQUEUE_WAIT,)


def families(node: str, report: PodsReport) -> Iterator[Metric]:
    """Every per-pod family, in docs order (empty families are dropped by the caller)."""
    wait = HistogramMetricFamily(n.POD_RUNQUEUE_WAIT.name, n.POD_RUNQUEUE_WAIT.help, labels=_POD_LABELS)
    dstate = CounterMetricFamily(n.POD_DSTATE.name, n.POD_DSTATE.help, labels=_POD_LABELS)
    episodes = CounterMetricFamily(n.POD_DSTATE_EPISODES.name, n.POD_DSTATE_EPISODES.help, labels=_POD_LABELS)
    cpu = CounterMetricFamily(n.POD_CPU.name, n.POD_CPU.help, labels=_POD_LABELS)
    pressure = GaugeMetricFamily(
        n.POD_PRESSURE.name, n.POD_PRESSURE.help, labels=(*_POD_LABELS, n.LABEL_RESOURCE, n.LABEL_KIND)
    )
    for s in report.series:
        labels = (node, s.namespace, s.name, s.uid)
        wait.add_metric(labels, [(floatToGoString(le), count) for le, count in s.wait_buckets], s.wait_seconds)
        dstate.add_metric(labels, s.dstate_seconds)
        episodes.add_metric(labels, s.dstate_episodes)
        if s.cpu_seconds == s.cpu_seconds:  # NaN: cpu.stat unreadable
            cpu.add_metric(labels, s.cpu_seconds)
        for (resource, kind), share in sorted(s.pressure.items()):
            pressure.add_metric((*labels, resource, kind), share)
    yield wait
    yield dstate
    yield episodes
    yield cpu
    yield pressure
    for family, value, metric in (
        (n.PODS_TRACKED, report.tracked, GaugeMetricFamily),
        (n.PODS_CAPACITY, report.capacity, GaugeMetricFamily),
        (n.PODS_UNTRACKED, report.overflows, CounterMetricFamily),
        (n.POD_NAMES_AVAILABLE, int(report.names_available), GaugeMetricFamily),
    ):
        m = metric(family.name, family.help, labels=(n.LABEL_NODE,))
        m.add_metric((node,), value)
        yield m

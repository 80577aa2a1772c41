"""The scheduler's attempt-duration histogram, through the registry as Prometheus reads it:
buckets are cumulative, `le` is inclusive, +Inf counts everything (common.core.durations). <0.1 s."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common import names as n
from common.metrics import make_registry
from scheduler.metrics import ATTEMPT_BUCKETS, SchedulerCollector, SchedulerStats


def test_attempt_durations_are_a_cumulative_histogram():
    stats = SchedulerStats()
    for seconds in (0.0001, 0.0003, 2.0):  # on a bound, between two, beyond the last
        stats.attempt(seconds)
    text = generate_latest(make_registry(SchedulerCollector(stats, lambda: True), process_metrics=False)).decode()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == n.SCHEDULER_ATTEMPT_DURATION.name]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert len(buckets) == len(ATTEMPT_BUCKETS) + 1
    assert buckets["0.0001"] == 1 and buckets["0.0005"] == 2 and buckets["1.0"] == 2 and buckets["+Inf"] == 3
    (total,) = [s.value for s in family.samples if s.name.endswith("_sum")]
    assert abs(total - 2.0004) < 1e-9

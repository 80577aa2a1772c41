"""Per-pod attribution's pure parts: pod cgroup names of both kubelet drivers, the cgroup -> pod
table shared with the kernel (open addressing, tombstones, the bound), the coarse statistics,
the top-K, and the per-pod exposition (promtool-clean, `other` included)."""

from __future__ import annotations

import dataclasses
import math
import subprocess
from datetime import datetime

import numpy as np
from prometheus_client import generate_latest

from common import names
from common.core.model import RawInterval
from common.metrics import make_registry
from exporter.core import pods
from exporter.core.model import Reading, Snapshot
from exporter.sinks.prometheus import ExporterCollector

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def test_pod_uid_from_either_driver_and_nothing_else():
    assert pods.pod_uid(f"kubepods-burstable-pod{UID.replace('-', '_')}.slice") == UID
    assert pods.pod_uid(f"kubepods-pod{UID.replace('-', '_')}.slice") == UID
    assert pods.pod_uid(f"pod{UID}") == UID
    for other in ("kubepods.slice", f"cri-containerd-{UID}.scope", f"pod{UID}x", "podnothex", "system.slice"):
        assert pods.pod_uid(other) is None
    assert pods.is_kubepods("kubepods-besteffort.slice") and pods.is_kubepods("burstable")
    assert not pods.is_kubepods("system.slice")


def _live(keys) -> int:
    return int(np.count_nonzero((keys != 0) & (keys != pods.TOMBSTONE)))


def test_table_entries_are_found_where_the_kernel_looks_and_removed_without_leaks():
    keys = np.zeros(16, dtype=np.uint64)
    table = pods.PodTable(keys, pods=4, probes=4)
    slot = table.sync("a", [101, 102, 103])
    for cg in (101, 102, 103):
        start = pods.cgroup_hash(cg, 16)
        hit = [int(keys[(start + i) % 16]) for i in range(4) if int(keys[(start + i) % 16]) >> 16 == cg]
        assert hit == [(cg << 16) | slot]
    table.sync("a", [101])  # a container went away
    assert _live(keys) == table.entries() == 1
    assert table.remove("a") == slot
    assert _live(keys) == table.entries() == 0


def test_a_lookup_goes_on_past_a_tombstone_and_inserts_reuse_it():
    keys = np.zeros(8, dtype=np.uint64)
    table = pods.PodTable(keys, pods=4, probes=8)
    same = [cg for cg in range(1, 500) if pods.cgroup_hash(cg, 8) == 0][:3]
    table.sync("a", same[:1])
    table.sync("b", same[1:2])
    table.remove("a")  # entry 0 becomes a tombstone in front of b's entry
    assert int(keys[0]) == pods.TOMBSTONE and table._find(same[1]) == 1
    table.sync("c", same[2:])
    assert int(keys[0]) >> 16 == same[2]


def test_more_pods_or_cgroups_than_the_bound_are_counted_once_and_never_stored():
    keys = np.zeros(8, dtype=np.uint64)
    table = pods.PodTable(keys, pods=1, probes=1)
    assert table.sync("a", [1]) == 0
    assert table.sync("b", [2]) is None and table.sync("b", [2]) is None
    assert table.overflows == 1
    clash = next(cg for cg in range(2, 500) if pods.cgroup_hash(cg, 8) == pods.cgroup_hash(1, 8))
    table.sync("a", [1, clash, 1 << 50])  # no room within one probe; an id beyond 48 bits
    assert table.overflows == 3 and table.entries() == 1
    table.remove("a")
    assert table.sync("b", [2]) == 0


def test_wait_stats_bound_the_quantiles_by_bucket_edges():
    buckets = [0] * 24
    buckets[5] = 99  # [16, 32) µs
    buckets[11] = 1  # [1024, 2048) µs
    s = pods.wait_stats(sum_ns=99 * 20_000 + 1_500_000, count=100, buckets=buckets)
    assert (s.p95_ms, s.p99_ms, s.max_ms) == (0.032, 0.032, 2.048)
    assert s.total_ms == 3.48 and s.count == 100
    assert math.isnan(pods.wait_stats(0, 0, [0] * 24).avg_ms)


def test_top_k_is_by_wait_then_uid():
    assert pods.top_k({"b": 2.0, "a": 2.0, "c": 5.0, "d": 0.0}, 2) == (["c", "a"], ["b", "d"])


def _report() -> pods.PodsReport:
    buckets = [0] * 24
    buckets[3] = 7
    series = pods.PodSeries(
        uid=UID, namespace="shop", name="cart-1", wait_seconds=0.5, waits=7, dstate_seconds=0.1,
        dstate_episodes=2, wait_buckets=pods.export_buckets(buckets), cpu_seconds=3.0,
        pressure={("cpu", "some"): 0.25, ("io", "full"): 0.0},
    )
    other = dataclasses.replace(series, uid=names.POD_UID_OTHER, namespace="", name="", pressure={})
    return pods.PodsReport(series=(series, other), tracked=5, capacity=256, overflows=0)


def test_per_pod_exposition_is_promtool_clean_and_labelled(promtool):
    reading = Reading(raw=RawInterval(time=datetime(2025, 1, 1), t=0.0), pods=_report())
    snap = Snapshot(node="n1", source=names.SOURCE_EBPF, reading=reading)
    text = generate_latest(make_registry(ExporterCollector(lambda: snap), process_metrics=False)).decode()
    # Waits of [4, 8) µs: above the 4 µs bound, within the 16 µs one (bounds are powers of four).
    labels = f'node="n1",pod_name="cart-1",pod_namespace="shop",pod_uid="{UID}"'
    assert f'ksense_pod_runqueue_wait_seconds_bucket{{le="4e-06",{labels}}} 0.0' in text
    assert f'ksense_pod_runqueue_wait_seconds_bucket{{le="1.6e-05",{labels}}} 7.0' in text
    assert 'ksense_pod_cpu_seconds_total{node="n1",pod_name="",pod_namespace="",pod_uid="other"} 3.0' in text
    assert 'ksense_pods_tracked{node="n1"} 5.0' in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

"""The log-linear histogram: key function pinned by hand, interval statistics, Prometheus buckets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from exporter.core import histogram as h

# Hand-computed: key = 1 + 16·b + sub, b = floor(log2 v), sub = floor(16·(v − 2^b) / 2^b).
HAND_KEYS = [
    ("zero bucket", 0, 0),
    ("1 µs: b=0 sub=0", 1, 1),
    ("7 µs: b=2 sub=floor(16·3/4)=12", 7, 45),
    ("8 µs: b=3 sub=0 (bpf_log2l would say 4)", 8, 49),
    ("1000 µs: b=9 sub=floor(16·488/512)=15", 1000, 160),
    ("10^6 µs: b=19 sub=floor(16·475712/524288)=14", 10**6, 319),
    ("2^32−1 µs: b=31 sub=15", 2**32 - 1, 512),
    ("2^32 µs: overflow", 2**32, h.OVERFLOW_KEY),
]


@pytest.mark.parametrize(("case", "v_us", "expected"), HAND_KEYS, ids=[c[0] for c in HAND_KEYS])
def test_key_pinned_by_hand(case, v_us, expected):
    assert h.key(v_us) == expected


def test_layout_constants():
    assert h.OVERFLOW_KEY == 513
    assert h.NKEYS == 514


def test_key_is_monotonic_and_bounds_contain_the_value():
    values = sorted({*range(5000), *(2**b + d for b in range(12, 32) for d in (-1, 0, 1, 2**b // 3))})
    keys = [h.key(v) for v in values]
    assert keys == sorted(keys)
    for v, k in zip(values, keys, strict=True):
        lo, hi = h.bounds(k)
        # v is floor(x) of the real latency x: every x in [v, v + 1) lies in [lo, hi).
        assert lo <= v and v + 1 <= hi, (v, k, lo, hi)


def test_relative_bucket_width_at_most_one_sixteenth_from_16_us():
    for k in range(1 + 16 * 4, h.OVERFLOW_KEY):
        lo, hi = h.bounds(k)
        assert (hi - lo) / lo <= 1 / 16 + 1e-12


def test_negative_latency_rejected():
    with pytest.raises(ValueError):
        h.key(-1)


def _counts(samples_us):
    counts = np.zeros(h.NKEYS, dtype=np.uint64)
    for v in samples_us:
        counts[h.key(v)] += 1
    return counts


def test_interval_stats_empty_interval_is_nan_not_zero():
    stats = h.interval_stats(np.zeros(h.NKEYS, dtype=np.uint64), 0)
    assert stats.count == 0
    assert stats.total_ms == 0
    assert all(math.isnan(x) for x in (stats.avg_ms, stats.p95_ms, stats.p99_ms, stats.max_ms))


def test_interval_stats_walks_buckets_to_rank_and_reports_midpoints():
    # 90 samples of 10 µs, 9 of 1000 µs, 1 of 50000 µs: rank(p95)=95 -> 1000 µs bucket,
    # rank(p99)=99 -> still the 1000 µs bucket (90 + 9 = 99), max -> the 50000 µs bucket.
    samples = [10] * 90 + [1000] * 9 + [50000]
    stats = h.interval_stats(_counts(samples), sum(samples) * 1000)
    assert stats.count == 100
    assert stats.total_ms == pytest.approx(sum(samples) / 1000)
    assert stats.avg_ms == pytest.approx(sum(samples) / 1000 / 100)
    lo, hi = h.bounds(h.key(1000))
    assert (lo, hi) == (992.0, 1024.0)
    assert stats.p95_ms == pytest.approx((lo + hi) / 2 / 1000)
    assert stats.p99_ms == pytest.approx((lo + hi) / 2 / 1000)
    lo, hi = h.bounds(h.key(50000))
    assert lo <= 50000 < hi
    assert stats.max_ms == pytest.approx(hi / 1000)
    assert (hi - 50000) / 50000 <= 1 / 16


RANK_CASES = [
    # (case, samples at 10 µs, samples at 5000 µs, p99 lands at)
    ("rank 99 of 100 is the last 10 µs sample", 99, 1, 10),
    ("rank 99 of 100 is a 5000 µs sample", 98, 2, 5000),
    ("rank ceil(99.99) = 100 of 101", 100, 1, 10),
    ("single sample", 0, 1, 5000),
]


@pytest.mark.parametrize(("case", "fast", "slow", "at_us"), RANK_CASES, ids=[c[0] for c in RANK_CASES])
def test_p99_target_rank_is_ceil_count_times_p(case, fast, slow, at_us):
    stats = h.interval_stats(_counts([10] * fast + [5000] * slow), 0)
    assert stats.p99_ms == pytest.approx(sum(h.bounds(h.key(at_us))) / 2 / 1000)


def test_interval_stats_overflow_reports_lower_bound():
    stats = h.interval_stats(_counts([2**33]), 2**33 * 1000)
    assert stats.max_ms == pytest.approx(2**32 / 1000)
    assert stats.p99_ms == pytest.approx(2**32 / 1000)


# The exported bounds, by hand: every power of two from 1.024 ms to 131 ms, every other one outside.
EXPORTED_LE_S = [1e-6, 4e-6, 16e-6, 64e-6, 256e-6,
                 1.024e-3, 2.048e-3, 4.096e-3, 8.192e-3, 16.384e-3, 32.768e-3, 65.536e-3, 131.072e-3,
                 0.524288, 2.097152, 8.388608, 33.554432]


def test_to_export_is_cumulative_backfilled_and_in_seconds():
    samples = [0, 0, 1, 3, 4, 8, 15, 16, 1000, 1024, 3000, 100_000, 2**25 - 1, 2**25, 2**31, 2**33]
    exported = h.to_export(_counts(samples), sum_ns=123_456_789)
    bounds = [le for le, _ in exported.buckets]
    assert bounds[:-1] == pytest.approx(EXPORTED_LE_S)
    assert bounds[-1] == math.inf
    counts = [c for _, c in exported.buckets]
    # count(le = 2^i µs) = samples strictly below 2^i µs (the kernel keys floor(µs)).
    assert counts[:-1] == [2, 4, 7, 8, 8, 9, 10, 11, 11, 11, 11, 11, 12, 12, 12, 12, 13]
    assert counts[-1] == len(samples)
    assert exported.count == len(samples)
    assert exported.sum_seconds == pytest.approx(0.123456789)


def test_the_csv_statistics_keep_the_fine_histogram():
    """Coarser Prometheus buckets do not coarsen the CSV's p95/p99/max: 300 µs and 900 µs share
    the exported bucket 256–1024 µs, and the interval statistics still tell them apart."""
    fast = h.interval_stats(_counts([300] * 100), 300 * 100 * 1000)
    slow = h.interval_stats(_counts([900] * 100), 900 * 100 * 1000)
    assert fast.p99_ms == pytest.approx(0.3, rel=1 / 32)
    assert slow.p99_ms == pytest.approx(0.9, rel=1 / 32)
    assert h.to_export(_counts([300]), 0).buckets == h.to_export(_counts([900]), 0).buckets


def test_to_export_of_nothing_has_every_bucket():
    exported = h.to_export(np.zeros(h.NKEYS, dtype=np.uint64), 0)
    assert len(exported.buckets) == len(EXPORTED_LE_S) + 1
    assert all(c == 0 for _, c in exported.buckets)

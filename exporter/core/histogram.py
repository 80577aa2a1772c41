"""The log-linear latency histogram shared with the BPF programs, and what is derived from it.

The kernel (exporter/bpf/sched.bpf.c) counts each latency into the bucket `key(v)` of v =
floor(delta_ns / 1000) µs; this module is the same key function in Python plus the
per-interval statistics (docs/design.md#one-interval) and the conversion to Prometheus buckets
(docs/metrics.md#exporter-metrics), at a subset of the powers of two (common/names.py
HISTOGRAM_LE_EXPONENTS).
Pure: numpy in, frozen values out.

Layout: key 0 is the zero bucket (v = 0); octave b = floor(log2 v), b = 0..31, is split into
16 linear sub-buckets, key = 1 + 16·b + sub; one overflow key holds v ≥ 2^32 µs. The relative
width of a bucket is ≤ 1/16 from 16 µs up; below that the integer µs resolution is coarser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.core.model import ExportHistogram
from common.names import HISTOGRAM_LE_EXPONENTS

SUB_BITS = 4
SUB = 1 << SUB_BITS
OCTAVES = 32
ZERO_KEY = 0
OVERFLOW_KEY = 1 + OCTAVES * SUB
NKEYS = OVERFLOW_KEY + 1


def key(v_us: int) -> int:
    """Bucket key of v µs (an integer ≥ 0).

    key = 0 for v = 0; for 1 ≤ v < 2^32, b = floor(log2 v), sub = floor(16·(v − 2^b) / 2^b)
    = ((v·16) >> b) − 16, key = 1 + 16·b + sub; key = OVERFLOW_KEY for v ≥ 2^32.
    """
    if v_us < 0:
        raise ValueError(f"negative latency {v_us} µs")
    if v_us == 0:
        return ZERO_KEY
    if v_us >= 1 << OCTAVES:
        return OVERFLOW_KEY
    b = v_us.bit_length() - 1
    return 1 + SUB * b + ((v_us << SUB_BITS) >> b) - SUB


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def bounds(k: int) -> tuple[float, float]:
    """[lo, hi) in µs of the real latencies x that land in key k.

    The kernel keys v = floor(x), so key k (octave b, sub-bucket s) holds the integers v with
    2^b·(16 + s)/16 ≤ v < 2^b·(17 + s)/16, i.e. the real x with
    lo = ceil(2^b·(16 + s)/16) ≤ x < hi = ceil(2^b·(17 + s)/16). Below octave 4 some keys hold
    no integer (lo = hi) and stay empty. Zero bucket: [0, 1); overflow: [2^32, ∞).
    """
    if not 0 <= k < NKEYS:
        raise ValueError(f"no histogram key {k}")
    if k == ZERO_KEY:
        return 0.0, 1.0
    if k == OVERFLOW_KEY:
        return float(1 << OCTAVES), math.inf
    b, s = divmod(k - 1, SUB)
    return float(_ceil_div((SUB + s) << b, SUB)), float(_ceil_div((SUB + s + 1) << b, SUB))


_LO_US = np.array([bounds(k)[0] for k in range(NKEYS)])
_HI_US = np.array([bounds(k)[1] for k in range(NKEYS)])
# The overflow bucket has no upper bound; its lower bound stands in for midpoint and maximum.
_MID_US = np.where(np.isinf(_HI_US), _LO_US, (_LO_US + _HI_US) / 2)
_TOP_US = np.where(np.isinf(_HI_US), _LO_US, _HI_US)
# Last key counted by le = 2^i µs: every sample < 2^i µs is the zero bucket or an octave < i.
_LE_LAST_KEY = np.array([SUB * i for i in HISTOGRAM_LE_EXPONENTS])
_LE_SECONDS = tuple((1 << i) * 1e-6 for i in HISTOGRAM_LE_EXPONENTS)


@dataclass(frozen=True)
class IntervalStats:
    """One interval of one histogram; the ms values are NaN when count is 0."""

    count: int
    total_ms: float
    avg_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def _quantile_us(cum: np.ndarray, count: int, percent: int) -> float:
    # ceil(count × p) in integers: exact for any count, no float rounding to reason about.
    rank = _ceil_div(count * percent, 100)
    return float(_MID_US[int(np.searchsorted(cum, rank, side="left"))])


def interval_stats(delta_counts: np.ndarray, delta_sum_ns: int) -> IntervalStats:
    """Statistics of one interval from its bucket deltas (length NKEYS) and exact ns sum.

    count = Σ delta_counts; total_ms = delta_sum_ns / 10^6; avg_ms = total_ms / count.
    p-quantile (p = 0.95, 0.99): target rank r = ceil(count × p); walk the buckets in key order
    to the first key whose cumulative count ≥ r and report that bucket's midpoint (lo + hi)/2
    (see `bounds`). max_ms is the upper bound `hi` of the highest non-empty bucket, not the
    exact maximum: within 1/16 above it from 16 µs up. The overflow bucket (≥ 2^32 µs)
    reports its lower bound for both.
    """
    counts = np.asarray(delta_counts, dtype=np.int64)
    count = int(counts.sum())
    total_ms = delta_sum_ns / 1e6
    if count == 0:
        return IntervalStats(0, total_ms, math.nan, math.nan, math.nan, math.nan)
    cum = np.cumsum(counts)
    top = int(np.flatnonzero(counts)[-1])
    return IntervalStats(
        count=count,
        total_ms=total_ms,
        avg_ms=total_ms / count,
        p95_ms=_quantile_us(cum, count, 95) / 1000,
        p99_ms=_quantile_us(cum, count, 99) / 1000,
        max_ms=float(_TOP_US[top]) / 1000,
    )


def to_export(cumulative_counts: np.ndarray, sum_ns: int) -> ExportHistogram:
    """The cumulative kernel histogram as Prometheus buckets.

    Bucket le_i = 2^i µs = 2^i · 10⁻⁶ s for i in common.names.HISTOGRAM_LE_EXPONENTS (0, 2, … 25),
    count(le_i) = number of samples < 2^i µs = zero bucket + all keys of octaves b < i
    = Σ_{k ≤ 16·i} counts[k]; every bound is emitted, empty or not. +Inf = all samples (octaves
    25..31 and the overflow key appear only there). sum_seconds = sum_ns / 10⁹. Only the
    exposition is coarser: interval_stats (the CSV) reads the full log-linear histogram.
    """
    cum = np.cumsum(np.asarray(cumulative_counts, dtype=np.int64))
    le_counts = cum[_LE_LAST_KEY]
    buckets = tuple(zip(_LE_SECONDS, (int(c) for c in le_counts), strict=True))
    return ExportHistogram(buckets=(*buckets, (math.inf, int(cum[-1]))), sum_seconds=sum_ns / 1e9)

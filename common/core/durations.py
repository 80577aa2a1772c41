"""`DurationHistogram`: how long something took, counted into fixed buckets, in Prometheus form.

Why here: the exporter's sampler, the scorer's evaluator and recorder and the scheduler's
attempts each export a duration histogram (`*_duration_seconds`); one class counts them all, so
bucket placement (`le` is inclusive) and the cumulative form are written once. Pure: no clock, no
lock (a caller shared between threads holds its own).
"""

from __future__ import annotations

import bisect
import math

from common.core.model import ExportHistogram


class DurationHistogram:
    """Cumulative observations in buckets with upper bounds `bounds` (seconds, increasing; +Inf
    is added), in Prometheus form. Each caller names its bounds: they are part of its metric."""

    def __init__(self, bounds: tuple[float, ...]):
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> ExportHistogram:
        """Count one observation; returns the new snapshot."""
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds
        return self.snapshot()

    def snapshot(self) -> ExportHistogram:
        """Everything observed so far (every bucket at 0 before the first observation)."""
        cumulative, running = [], 0
        for bound, n in zip((*self._bounds, math.inf), self._counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return ExportHistogram(buckets=tuple(cumulative), sum_seconds=self._sum)

"""A drift-free monotonic schedule for live sources.

Tick k fires at start + k * interval on the monotonic clock, however long each tick's work
took; when the process falls more than one interval behind (suspend, stall), missed ticks are
skipped rather than fired in a burst.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator


def ticks(
    interval: float,
    stop: threading.Event,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[float]:
    """Yield the monotonic time of each tick until `stop` is set; waits on `stop` so a
    SIGTERM handler that sets it wakes the loop at once."""
    start = clock()
    k = 1
    while True:
        due = start + k * interval
        delay = due - clock()
        if delay > 0 and stop.wait(delay):
            return
        if stop.is_set():
            return
        now = clock()
        yield now
        # Skip ticks already missed so a stall does not produce a burst of readings.
        k = max(k + 1, int((now - start) / interval) + 1)

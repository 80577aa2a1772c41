"""The drift-free schedule: ticks at start + k·interval, no burst after a stall, stop wakes it."""

from __future__ import annotations

import threading

from common.ticker import ticks


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeStop(threading.Event):
    """An Event whose wait advances the fake clock instead of sleeping."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def wait(self, timeout=None):
        self.clock.now += timeout
        return self.is_set()


def test_ticks_do_not_drift_with_work_time():
    clock = FakeClock()
    stop = FakeStop(clock)
    seen = []
    for t in ticks(1.0, stop, clock=clock):
        seen.append(round(t, 6))
        clock.now += 0.3  # work inside the tick
        if len(seen) == 4:
            break
    assert seen == [101.0, 102.0, 103.0, 104.0]


def test_a_stall_skips_missed_ticks_instead_of_bursting():
    clock = FakeClock()
    stop = FakeStop(clock)
    seen = []
    for t in ticks(1.0, stop, clock=clock):
        seen.append(round(t, 6))
        if len(seen) == 1:
            clock.now += 3.5  # stalled for 3.5 intervals
        if len(seen) == 3:
            break
    assert seen == [101.0, 104.5, 105.0]


def test_stop_ends_the_schedule():
    stop = threading.Event()
    stop.set()
    assert list(ticks(10.0, stop)) == []

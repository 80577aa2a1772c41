"""Run-queue delay from per-task schedstat counters (the procfs source's stand-in), pure.

/proc/<pid>/task/<tid>/schedstat holds `<run ns> <run_delay ns> <timeslices>`: run_delay is
the task's cumulative time spent runnable but waiting for a CPU. Summing its per-interval
deltas over tasks gives an honest total and average wait; per-event percentiles and the max
are unknowable from these counters, so the procfs source leaves them empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class TaskSched(NamedTuple):
    run_delay_ns: int
    timeslices: int


def parse_schedstat(text: str) -> TaskSched:
    """Parse one schedstat file: fields 2 and 3 (run_delay ns, timeslices)."""
    fields = text.split()
    if len(fields) < 3:
        raise ValueError("schedstat has fewer than 3 fields")
    return TaskSched(run_delay_ns=int(fields[1]), timeslices=int(fields[2]))


def interval_delay(
    prev: Mapping[int, TaskSched], cur: Mapping[int, TaskSched]
) -> tuple[float, int]:
    """(total wait ms, scheduling events) between two scans keyed by tid.

    Tasks present in both scans contribute their deltas; tasks new in `cur` were born during
    the interval and contribute everything they have; tasks gone from `cur` exited and their
    last partial interval is lost. A delta that went backwards (tid reuse) counts the new
    task's full values.
    """
    total_ns = 0
    events = 0
    for tid, now in cur.items():
        before = prev.get(tid)
        if before is None or now.run_delay_ns < before.run_delay_ns or now.timeslices < before.timeslices:
            total_ns += now.run_delay_ns
            events += now.timeslices
        else:
            total_ns += now.run_delay_ns - before.run_delay_ns
            events += now.timeslices - before.timeslices
    return total_ns / 1e6, events

"""The exporter's tick: read the source, derive, publish one immutable Snapshot, write the CSV.

The Prometheus collector only ever reads `latest()` (a reference swap is atomic in CPython),
so a scrape never waits for a kernel read or a CSV write; the exporter hands `write_row` to a
writer thread (common/csvfile.QueuedCsvWriter), so a hung disk cannot stall the tick either.
The loop runs in the caller's thread via `run(stop)`; setting `stop` (SIGTERM) ends it within
one interval's wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from common.core.csvrow import format_row
from common.core.durations import DurationHistogram
from common.core.model import Derived, RawInterval
from exporter.core.model import Reading, Snapshot
from exporter.sources import Source

log = logging.getLogger(__name__)

#: Bounds (seconds) of ksense_sample_duration_seconds: a healthy interval takes 1–2.5 ms; 10 ms is
#: slow, 100 ms very slow, 1 s a whole default interval. Five bounds, not more: each is a series
#: on every node (docs/sizing.md#series-and-samples-per-node).
SAMPLE_DURATION_BOUNDS = (0.001, 0.0025, 0.01, 0.1, 1.0)



class Sampler:
    def __init__(
        self,
        *,
        node: str,
        source: Source,
        derive: Callable[[RawInterval], Derived],
        write_row: Callable[[list[str]], None] | None = None,
        write_pod_row: Callable[[tuple[str, ...]], None] | None = None,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._source = source
        self._derive = derive
        self._write_row = write_row
        self._write_pod_row = write_pod_row
        self._on_snapshot = on_snapshot
        self._clock = clock
        self._durations = DurationHistogram(SAMPLE_DURATION_BOUNDS)
        self._latest = Snapshot(node=node, source=source.name)

    def latest(self) -> Snapshot:
        return self._latest

    def process(self, reading: Reading) -> Snapshot:
        """Derive, publish and write one interval; returns the published snapshot."""
        started = self._clock()
        derived = self._derive(reading.raw)
        # A live reading's t is its tick, so "now - t" is the cost of reading plus deriving;
        # replay's t is recorded time, so only the derive is timed there.
        elapsed = self._clock() - (reading.raw.t if self._latest.live else started)
        snap = Snapshot(
            node=self._latest.node,
            source=self._latest.source,
            reading=reading,
            derived=derived,
            sample_duration=self._durations.observe(max(0.0, elapsed)),
        )
        self._latest = snap
        if self._write_row is not None:
            self._write_row(format_row(reading.raw, derived))
        if self._write_pod_row is not None and reading.pods is not None:
            for row in reading.pods.rows:
                self._write_pod_row(row)
        if self._on_snapshot is not None:
            self._on_snapshot(snap)
        return snap

    def run(self, stop: threading.Event) -> int:
        """Process readings until `stop` is set or the source ends; returns intervals seen."""
        n = 0
        for reading in self._source.readings(stop):
            self.process(reading)
            n += 1
            if stop.is_set():
                break
        return n

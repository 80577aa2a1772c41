"""What the admission webhook keeps: fuzzy_score.csv rows (SPEC §3.5, CONTRACT §2.3) written once
per review uid, and its own counters for the metrics (CONTRACT §1.2).

The API server retries a review with the same uid (a timeout, a second webhook replica behind
the Service): the row is written once, the retry counted as `duplicate`. The uids are kept in a
bounded LRU (`dedupe`, default 4,096): retries come within seconds, so a few thousand recent uids
are plenty and memory stays fixed. Two scorer replicas each see only their own requests, so a
retry that lands on the other replica is recorded there too; the Uid column lets readers
de-duplicate across files.

Rows are written synchronously in the request thread, under one lock: CsvSink takes one writer
at a time, a row is one unbuffered write() to the page cache (microseconds), and a row written
before the response is a row that survives a crash. CsvSink never raises for I/O errors (it
counts them), so a full disk cannot fail a review.

Thread-safe: every request thread calls `record` / `observe`, the metrics scrape calls `stats`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType

from exporter.core.model import ExportHistogram
from exporter.names import ADMISSION_OUTCOMES
from exporter.sampler import DurationHistogram
from exporter.sinks.csvfile import CsvSink
from scorer.core.admission import OUTCOME_RECORDED, ScoreRecord, csv_row

OUTCOME_DUPLICATE = "duplicate"
#: ksense_admission_review_duration_seconds buckets: the goal is milliseconds (SPEC §3.4) and
#: the API server gives up after `timeoutSeconds: 2`, so the range is 0.25 ms … 2.5 s.
DURATION_BOUNDS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Recorder:
    """fuzzy_score.csv writer with uid de-duplication, plus the webhook's outcome counts and
    answer-time histogram. `score_csv` None records nothing to disk but still de-duplicates,
    so the outcome counts mean the same with and without a file."""

    def __init__(self, score_csv: CsvSink | None, *, dedupe: int = 4096):
        if dedupe < 1:
            raise ValueError(f"dedupe must be at least 1, got {dedupe}")
        self._csv = score_csv
        self._dedupe = dedupe
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(ADMISSION_OUTCOMES, 0)
        self._durations = DurationHistogram(DURATION_BOUNDS)
        self._duration = self._durations.snapshot()

    def record(self, record: ScoreRecord) -> str:
        """Write the row unless this uid was recorded recently; `recorded` or `duplicate`."""
        with self._lock:
            if record.uid in self._seen:
                self._seen.move_to_end(record.uid)
                return OUTCOME_DUPLICATE
            self._seen[record.uid] = None
            if len(self._seen) > self._dedupe:
                self._seen.popitem(last=False)
            if self._csv is not None:
                self._csv.write(csv_row(record))
        return OUTCOME_RECORDED

    def observe(self, outcome: str, seconds: float) -> None:
        """Count one answered /validate request and the time it took."""
        with self._lock:
            self._counts[outcome] = self._counts.get(outcome, 0) + 1
            self._duration = self._durations.observe(seconds)

    def stats(self) -> tuple[Mapping[str, int], ExportHistogram]:
        """(reviews per outcome, every outcome present; cumulative answer-time histogram)."""
        with self._lock:
            return MappingProxyType(dict(self._counts)), self._duration

    def close(self) -> None:
        """Close the CSV file (idempotent); call after the server stopped answering."""
        with self._lock:
            if self._csv is not None:
                self._csv.close()

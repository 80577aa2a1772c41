"""What the admission webhook keeps: fuzzy_score.csv rows (docs/metrics.md#fuzzy_scorecsv) written once
per review uid, and its own counters for the metrics (docs/metrics.md#scorer-metrics).

The API server retries a review with the same uid (a timeout, a second webhook replica behind
the Service): the row is written once, the retry counted as `duplicate`. The uids are kept in a
bounded LRU (`dedupe`, default 4,096): retries come within seconds, so a few thousand recent uids
are plenty and memory stays fixed. Two scorer replicas each see only their own requests, so a
retry that lands on the other replica is recorded there too; the Uid column lets readers
de-duplicate across files.

Rows are written off the request path: a review only puts its row on a bounded queue
(`queue_rows`, default 1,024: minutes of admissions at any realistic rate) that a writer thread
of its own drains into the CsvSink. A hung or slow disk therefore never holds a /validate
thread; when the queue is full the row is dropped and counted (reason `queue_full` of
ksense_csv_write_errors_total). The price: a row queued but not yet written when the process is
killed is lost; `close` writes what is queued. The writer thread starts with the first row, so
it runs in the process that serves (gunicorn forks its worker after building the app).

Thread-safe: every request thread calls `record` / `observe`, the metrics scrape calls `stats`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType

from common.core.durations import DurationHistogram
from common.core.model import ExportHistogram
from common.csvfile import CsvSink, CsvStats, QueuedCsvWriter
from common.names import ADMISSION_OUTCOMES
from scorer.core.admission import OUTCOME_RECORDED, ScoreRecord, csv_row

OUTCOME_DUPLICATE = "duplicate"
#: ksense_admission_review_duration_seconds buckets: the goal is milliseconds (docs/api.md) and
#: the API server gives up after `timeoutSeconds: 2`, so the range is 0.25 ms … 2.5 s.
DURATION_BOUNDS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Recorder:
    """fuzzy_score.csv writer with uid de-duplication, plus the webhook's outcome counts and
    answer-time histogram. `score_csv` None records nothing to disk but still de-duplicates,
    so the outcome counts mean the same with and without a file."""

    def __init__(self, score_csv: CsvSink | None, *, dedupe: int = 4096, queue_rows: int = 1024):
        if dedupe < 1:
            raise ValueError(f"dedupe must be at least 1, got {dedupe}")
        self._csv = QueuedCsvWriter(score_csv, max_rows=queue_rows) if score_csv is not None else None
        self._writing = False
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
                if not self._writing:
                    self._csv.start()
                    self._writing = True
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

    def csv_stats(self) -> CsvStats | None:
        """fuzzy_score.csv rows written and lost per reason (queue_full included); None without a file."""
        return self._csv.stats() if self._csv is not None else None

    def close(self) -> None:
        """Write the queued rows and close the CSV file (idempotent); call after the server
        stopped answering."""
        with self._lock:
            csv, self._csv = self._csv, None
        if csv is not None:
            csv.close()

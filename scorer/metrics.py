"""The scorer's Prometheus view (docs/metrics.md#scorer-metrics), served as plain HTTP /metrics on port 9861.

`ScorerCollector` is a stateless prometheus_client custom collector: each scrape builds fresh
families from the evaluator's latest Results and cumulative stats (and, when given, the
admission webhook's stats and the served certificate's expiry). Nothing is registered at
import; common.metrics.make_registry / MetricsServer serve it like the exporter's.

Per node: ksense_node_score, ksense_node_admission_allowed, ksense_node_input_missing{input}
for all four inputs (0 or 1, so "missing" is a value to alert on, not an absence), and
ksense_node_decision_changes_total{to} for both directions (0 before the first flip, so
`increase()` sees the first one); for a denied node whose pods the source named,
ksense_node_top_pod{role, pod_namespace, pod_name, pod_uid} = that pod's rate, one series per
role at most (names.POD_ROLES: ≤ 3 per node), gone once the node is allowed or names nobody, so
the scheduler's Prometheus source can name them as /score does; none of them while the
evaluator's Results are stale (older than FUZZY_LONG_WIN_S: a tick that keeps failing), so
Prometheus marks them stale instead of stamping old allows with a fresh scrape time.
Process-wide: the evaluation duration histogram, source errors by (source, reason), the last
success time (absent before the first success), and fuzzy_score.csv's rows written and lost per
reason (`queue_full`: dropped because the disk fell behind), the same ksense_csv_* families the
exporter serves for its file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from common import names as n
from common.core.model import ExportHistogram
from common.csvfile import CsvStats
from common.metrics import histogram_family
from scorer.core.model import Results
from scorer.evaluator import EvaluatorStats


class EvaluatorView(Protocol):
    """What the collector reads of the evaluator."""

    def latest(self) -> Results | None: ...

    def stale(self) -> bool: ...

    def stats(self) -> EvaluatorStats: ...


class AdmissionStats(Protocol):
    """The admission webhook's counters: reviews per outcome (names.ADMISSION_OUTCOMES) and the
    cumulative answer-time histogram."""

    def stats(self) -> tuple[Mapping[str, int], ExportHistogram]: ...

    def csv_stats(self) -> CsvStats | None: ...


class ScorerCollector:
    """Every scorer family of docs/metrics.md#scorer-metrics; see the module docstring. `cert_expiry` returns
    the notAfter (Unix time) of the served certificate, None when serving plain HTTP."""

    def __init__(
        self,
        evaluator: EvaluatorView,
        *,
        admission: AdmissionStats | None = None,
        cert_expiry: Callable[[], float | None] | None = None,
    ):
        self._evaluator = evaluator
        self._admission = admission
        self._cert_expiry = cert_expiry

    def describe(self) -> Iterator[Metric]:
        """Family names only, so a registry refuses a second collector that would duplicate them."""
        for family in (n.NODE_SCORE, n.NODE_ADMISSION_ALLOWED, n.NODE_INPUT_MISSING, n.NODE_TOP_POD,
                       n.SCORER_LAST_SUCCESS):
            yield GaugeMetricFamily(family.name, family.help)
        for family in (n.NODE_DECISION_CHANGES, n.SCORER_SOURCE_ERRORS):
            yield CounterMetricFamily(family.name, family.help)
        yield HistogramMetricFamily(n.SCORER_EVALUATION_DURATION.name, n.SCORER_EVALUATION_DURATION.help)
        if self._admission is not None:
            yield CounterMetricFamily(n.ADMISSION_REVIEWS.name, n.ADMISSION_REVIEWS.help)
            yield HistogramMetricFamily(n.ADMISSION_REVIEW_DURATION.name, n.ADMISSION_REVIEW_DURATION.help)
            for family in (n.CSV_ROWS_WRITTEN, n.CSV_WRITE_ERRORS):
                yield CounterMetricFamily(family.name, family.help)
        if self._cert_expiry is not None:
            yield GaugeMetricFamily(n.WEBHOOK_CERT_EXPIRY.name, n.WEBHOOK_CERT_EXPIRY.help)

    def collect(self) -> Iterator[Metric]:
        # A family without series (no node yet, no error yet) is left out of the scrape.
        for metric in self._families():
            if metric.samples:
                yield metric

    def _families(self) -> Iterator[Metric]:
        results = self._evaluator.latest()
        stats = self._evaluator.stats()
        fresh = results is not None and not self._evaluator.stale()
        reports = sorted(results.reports.items()) if fresh else []

        score = GaugeMetricFamily(n.NODE_SCORE.name, n.NODE_SCORE.help, labels=(n.LABEL_NODE,))
        allowed = GaugeMetricFamily(
            n.NODE_ADMISSION_ALLOWED.name, n.NODE_ADMISSION_ALLOWED.help, labels=(n.LABEL_NODE,)
        )
        missing = GaugeMetricFamily(
            n.NODE_INPUT_MISSING.name, n.NODE_INPUT_MISSING.help, labels=(n.LABEL_NODE, n.LABEL_INPUT)
        )
        for node, report in reports:
            if math.isfinite(report.score):
                score.add_metric((node,), report.score)
            allowed.add_metric((node,), 1 if report.decision == n.DECISION_ALLOW else 0)
            for name in n.INPUTS:
                missing.add_metric((node, name), 1 if name in report.missing else 0)
        yield score
        yield allowed
        yield missing

        top = GaugeMetricFamily(n.NODE_TOP_POD.name, n.NODE_TOP_POD.help, labels=(
            n.LABEL_NODE, n.LABEL_ROLE, n.LABEL_POD_NAMESPACE, n.LABEL_POD_NAME, n.LABEL_POD_UID))
        for node, report in reports:
            if report.decision == n.DECISION_DENY:
                for role, pod in report.inputs.top_pods:
                    top.add_metric((node, role, pod.namespace, pod.name, pod.uid), pod.rate)
        yield top

        changes = CounterMetricFamily(
            n.NODE_DECISION_CHANGES.name, n.NODE_DECISION_CHANGES.help, labels=(n.LABEL_NODE, n.LABEL_TO)
        )
        flipped = dict(stats.decision_changes) if fresh else {}
        nodes = sorted({node for node, _ in reports} | {node for node, _ in flipped})
        for node in nodes:
            for to in (n.DECISION_ALLOW, n.DECISION_DENY):
                changes.add_metric((node, to), flipped.get((node, to), 0))
        yield changes

        yield histogram_family(n.SCORER_EVALUATION_DURATION, stats.evaluation_duration)

        errors = CounterMetricFamily(
            n.SCORER_SOURCE_ERRORS.name, n.SCORER_SOURCE_ERRORS.help, labels=(n.LABEL_SOURCE, n.LABEL_REASON)
        )
        for (source, reason), count in sorted(stats.source_errors.items()):
            errors.add_metric((source, reason), count)
        yield errors

        if stats.last_success is not None:
            yield GaugeMetricFamily(n.SCORER_LAST_SUCCESS.name, n.SCORER_LAST_SUCCESS.help, value=stats.last_success)

        if self._admission is not None:
            outcomes, duration = self._admission.stats()
            reviews = CounterMetricFamily(n.ADMISSION_REVIEWS.name, n.ADMISSION_REVIEWS.help, labels=(n.LABEL_OUTCOME,))
            for outcome in sorted(set(n.ADMISSION_OUTCOMES) | set(outcomes)):
                reviews.add_metric((outcome,), outcomes.get(outcome, 0))
            yield reviews
            yield histogram_family(n.ADMISSION_REVIEW_DURATION, duration)
            csv = self._admission.csv_stats()
            if csv is not None:
                file = n.FUZZY_SCORE_CSV_NAME
                rows = CounterMetricFamily(n.CSV_ROWS_WRITTEN.name, n.CSV_ROWS_WRITTEN.help, labels=(n.LABEL_FILE,))
                rows.add_metric((file,), csv.rows_written)
                yield rows
                errors = CounterMetricFamily(n.CSV_WRITE_ERRORS.name, n.CSV_WRITE_ERRORS.help,
                                             labels=(n.LABEL_FILE, n.LABEL_REASON))
                for reason, count in sorted(csv.errors.items()):
                    errors.add_metric((file, reason), count)
                yield errors

        if self._cert_expiry is not None:
            expiry = self._cert_expiry()
            if expiry is not None:
                yield GaugeMetricFamily(n.WEBHOOK_CERT_EXPIRY.name, n.WEBHOOK_CERT_EXPIRY.help, value=expiry)

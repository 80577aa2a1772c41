"""The scorer's tick: source -> fuzzy controller + decisions -> published Results, CSV, stats.

Decisions advance here and only here, once per tick on a fixed drift-free schedule (docs/design.md#decisions:
never on an HTTP request, so no client can steer the hysteresis). A tick fetches every node's
inputs from the source, runs `scorer.core.evaluate.evaluate` for all nodes at once, publishes
the new immutable `Results` by swapping one reference (readers — /score, /validate, /metrics —
never lock and never wait for a fetch), writes one fuzzy_monitor.csv row per node, and updates
the counters that scorer/metrics.py exposes. From a source that names pods on demand
(scorer.sources.NamesPods), the tick then asks for the top pods of the nodes it denied on their
score and publishes the Results again with those pods named in their reasons
(`scorer.core.evaluate.with_pods`): a slow or failing pod query delays no decision.

At start, `run(stop, history)` first replays the last KSENSE_SCORER_REPLAY_S of inputs (the
Prometheus source's range queries) through the same state machine without publishing or
writing (`rebuild`), so a restarted replica and a long-running one hold the same decision
states. It does so on the ticking thread, off the serving path: the API answers from the
start (/healthz 200; /readyz 503 until the first tick after the replay has evaluated), however
long Prometheus takes to answer (each query has an overall deadline).

A tick that raises leaves the previous Results published. Past `max_age_s` (FUZZY_LONG_WIN_S,
the age at which an input sample counts as missing, docs/design.md#scorer-inputs) they are `stale()`: /readyz
fails, /metrics withholds the per-node series and /filter answers with the extender's Error,
so old allows cannot pass for current ones.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from common.core.durations import DurationHistogram
from common.core.model import ExportHistogram
from common.csvfile import CsvSink
from common.names import DECISION_ALLOW, FUZZY_MONITOR_COLUMNS
from common.ticker import ticks
from scorer.core import reports
from scorer.core.decision import DecisionParams, NodeState
from scorer.core.evaluate import evaluate, evaluate_series, scored_denies, with_pods
from scorer.core.model import Inputs, NodeReport, Results
from scorer.core.rules import RuleBase
from scorer.sources import InputSource, NamesPods

log = logging.getLogger(__name__)

#: Buckets (seconds) of ksense_scorer_evaluation_duration_seconds: a healthy tick is a few
#: queries to Prometheus (~10 ms); the top buckets show a tick eating its whole 1 s interval.
EVALUATION_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class EvaluatorStats:
    """Cumulative counters for /metrics, one consistent copy per call of `Evaluator.stats()`.

    `decision_changes` maps (node, to) to flips since start; `source_errors` maps (source,
    reason) to failed or rejected queries; `last_success` is the Unix time at the end of the
    last evaluation whose source answered (None before the first)."""

    decision_changes: Mapping[tuple[str, str], int]
    evaluation_duration: ExportHistogram
    source_errors: Mapping[tuple[str, str], int]
    last_success: float | None


def monitor_row(report: NodeReport) -> list[str]:
    """The fuzzy_monitor.csv row of one node's report."""
    inputs = report.inputs
    values = {"friction": inputs.friction_signed, "energy": inputs.energy, "cpu": inputs.cpu_pct, "psi": inputs.psi_pct}
    return reports.monitor_row(report.time.astimezone().replace(tzinfo=None), report.node, values, report.missing,
                               report.score, report.level, report.decision, report.reason or "")


def monitor_sink(path: str | os.PathLike[str], **kwargs: int) -> CsvSink:
    """The durable fuzzy_monitor.csv writer (docs/metrics.md#fuzzy_monitorcsv columns); kwargs: max_bytes, keep."""
    return CsvSink(path, FUZZY_MONITOR_COLUMNS, **kwargs)


class Evaluator:
    """Owns the decision states and the latest Results; see the module docstring.

    `clock` is monotonic (schedule, durations); `wall` is Unix time (tick timestamps, last
    success, the age of the latest Results against `max_age_s`). Nothing starts in the
    constructor: `run(stop)` owns the loop in the caller's thread. One thread ticks; `latest`,
    `ready`, `stale` and `stats` may be called from any thread.
    """

    def __init__(
        self,
        source: InputSource,
        rb: RuleBase,
        params: DecisionParams,
        *,
        interval_s: float = 1.0,
        max_age_s: float = 60.0,
        monitor_csv: CsvSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.source = source
        self.interval_s = interval_s
        self.max_age_s = max_age_s
        self._rb = rb
        self._params = params
        self._csv = monitor_csv
        self._clock = clock
        self._wall = wall
        self._states: Mapping[str, NodeState] = {}
        self._latest: Results | None = None
        self._ready = False
        self._durations = DurationHistogram(EVALUATION_BOUNDS)
        # Guards the counters only; the published Results need no lock (a reference swap).
        self._lock = threading.Lock()
        self._changes: dict[tuple[str, str], int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._duration = self._durations.snapshot()
        self._last_success: float | None = None

    # --- the ticking thread -------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> Results:
        """One evaluation for all nodes at `now` (default: the wall clock, UTC)."""
        started = self._clock()
        if now is None:
            now = datetime.fromtimestamp(self._wall(), UTC)
        inputs = self.source.fetch(now)
        before = self._states
        states, results = evaluate(self._rb, self._params, before, inputs)
        self._states = states
        self._latest = results  # the decisions, published before the pods are asked for
        errors = dict(inputs.errors)
        if isinstance(self.source, NamesPods) and inputs.ok:
            results = self._latest = self._name_pods(self.source, results, now, errors)
        if self._csv is not None:
            for node in sorted(results.reports):
                self._csv.write(monitor_row(results.reports[node]))
        flips = [
            (node, report.decision)
            for node, report in results.reports.items()
            if report.decision != _last(before.get(node))
        ]
        for node, to in flips:
            log.info("event=decision_changed node=%s to=%s score=%.3f reason=%r",
                     node, to, results.reports[node].score, results.reports[node].reason or "")
        duration = self._durations.observe(self._clock() - started)
        with self._lock:
            for key in flips:
                self._changes[key] = self._changes.get(key, 0) + 1
            for reason, count in errors.items():
                key = (inputs.source, reason)
                self._errors[key] = self._errors.get(key, 0) + count
            self._duration = duration
            if inputs.ok:
                self._last_success = self._wall()
        if inputs.ok and not self._ready:
            self._ready = True
            log.info("event=scorer_ready source=%s nodes=%d", inputs.source, len(results.reports))
        return results

    def _name_pods(self, source: NamesPods, results: Results, now: datetime, errors: dict[str, int]) -> Results:
        """`results` with the top pods of its score-denied nodes named (counting failed requests
        into `errors`); `results` unchanged when none is denied or naming fails: pods only
        explain a deny, they never cost a tick."""
        denied = scored_denies(self._rb, self._params, results)
        if not denied:
            return results
        try:
            pods, failed = source.top_pods(denied, now)
        except Exception:  # a source must not raise; if one does, the tick still stands
            log.exception("event=pods_unavailable")
            return results
        for reason, count in failed.items():
            errors[reason] = errors.get(reason, 0) + count
        return with_pods(results, denied, pods)

    def run(self, stop: threading.Event, history: Callable[[], Sequence[Inputs]] | None = None) -> None:
        """Rebuild the decision states from `history()` when given (module docstring), then tick
        every `interval_s` until `stop` is set. A failing tick is logged and the loop goes on:
        the previous Results stay published and the next tick tries again."""
        if history is not None and not stop.is_set():
            try:
                self.rebuild(history())
            except Exception:
                log.exception("event=state_rebuild_failed")
        for _ in ticks(self.interval_s, stop, clock=self._clock):
            try:
                self.tick()
            except Exception:
                log.exception("event=evaluation_failed")

    def rebuild(self, history: Sequence[Inputs]) -> int:
        """Advance the decision states over `history` (a list of Inputs, oldest first) as if
        each had been a tick, without publishing, writing CSV or counting flips. Returns the
        number of steps replayed."""
        states = self._states
        # evaluate_series batches the scoring across steps: a 300-step rebuild is one numpy call.
        for states_after, _ in evaluate_series(self._rb, self._params, self._states, history):
            states = states_after
        self._states = states
        if history:
            allowed = sum(1 for s in states.values() if _last(s) == DECISION_ALLOW)
            log.info("event=state_rebuilt steps=%d nodes=%d allowed=%d", len(history), len(states), allowed)
        return len(history)

    # --- any thread ---------------------------------------------------------------------------
    def latest(self) -> Results | None:
        return self._latest

    def ready(self) -> bool:
        """True once an evaluation succeeded (the source answered) and while the latest Results
        are not stale: a later outage still yields real results (every node denied for missing
        inputs), a tick that stopped publishing does not."""
        return self._ready and not self.stale()

    def stale(self) -> bool:
        """True when the latest Results are older than `max_age_s` on the wall clock (see the
        module docstring); False before the first."""
        latest = self._latest
        return latest is not None and self._wall() - latest.time.timestamp() > self.max_age_s

    def stats(self) -> EvaluatorStats:
        with self._lock:
            return EvaluatorStats(
                decision_changes=MappingProxyType(dict(self._changes)),
                evaluation_duration=self._duration,
                source_errors=MappingProxyType(dict(self._errors)),
                last_success=self._last_success,
            )


def _last(state: NodeState | None) -> str:
    """A node's previous decision; a node never seen starts from allow (docs/design.md#decisions)."""
    return DECISION_ALLOW if state is None else state.last

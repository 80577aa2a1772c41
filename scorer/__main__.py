"""`python -m scorer`: the scorer service — evaluator tick, /score, /validate, extender verbs,
plain /metrics — wired from one ScorerConfig.

Without KSENSE_PROMETHEUS_URL it scores the local exporter (the embedded single-machine
default); with it, every node Prometheus knows, rebuilding decision state from the last
KSENSE_SCORER_REPLAY_S of inputs first so replicas agree.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from common import logs
from common.csvfile import CsvSink
from common.envconf import ConfigError, unknown_variables
from common.metrics import MetricsServer, make_registry
from common.names import FUZZY_SCORE_COLUMNS
from scorer.app import body_limits, create_app
from scorer.config import ScorerConfig, build_parser, from_env
from scorer.core.decision import params_for
from scorer.core.evaluate import explain_node
from scorer.core.model import Results
from scorer.core.rules import RulesError
from scorer.evaluator import Evaluator, monitor_sink
from scorer.metrics import ScorerCollector
from scorer.recorder import Recorder
from scorer.rulefile import load_rules
from scorer.server import TlsFiles, serve
from scorer.sources import require
from scorer.sources.local import LocalSource
from scorer.sources.prometheus import PrometheusSource

log = logging.getLogger("ksense.scorer")


def summary_line(results: Results) -> str:
    """One line per tick for a terminal: node, score, level, decision (and why when denied)."""
    parts = []
    for r in results.reports.values():
        inputs = r.inputs
        f, e = inputs.friction_signed, inputs.energy
        detail = "" if math.isnan(f) else f" F={f:.2f} E={e:.2f}"
        why = f" ({r.reason})" if r.reason else ""
        parts.append(f"{r.node} score={r.score:.1f} {r.level} {r.decision}{why}{detail}")
    return "ksense scorer | " + (" | ".join(parts) if parts else "no nodes yet")


def _print_summaries(evaluator: Evaluator, stop: threading.Event, interval_s: float) -> None:
    shown = None
    while not stop.wait(interval_s / 2):
        results = evaluator.latest()
        if results is not None and results.time != shown:
            shown = results.time
            print(summary_line(results), file=sys.stderr, flush=True)


def build(cfg: ScorerConfig):
    """Everything but the serving loop: (app, evaluator, recorder, tls, on_worker_start, stop)."""
    rb = load_rules(cfg.rules_file)
    params = params_for(rb.decision, {
        "good_threshold": cfg.good_threshold, "medium_low_upper": cfg.medium_low_upper,
        "medium_mid_upper": cfg.medium_mid_upper, "medium_bad_threshold": cfg.medium_bad_threshold,
        "allow_on_missing": cfg.allow_on_missing,
    })
    if cfg.prometheus_url:
        concurrency = {} if cfg.query_concurrency is None else {"concurrency": cfg.query_concurrency}
        source = PrometheusSource(cfg.prometheus_url, selector=cfg.exporter_selector, long_win_s=cfg.long_win_s,
                                  timeout_s=cfg.query_timeout_s, inputs=rb.inputs, **concurrency)
    else:
        source = LocalSource(cfg.exporter_url, inputs=rb.inputs)
    require(rb.inputs, source.name, source.provides)
    csv_opts = {"max_bytes": cfg.csv_max_bytes, "keep": cfg.csv_keep}
    monitor = monitor_sink(cfg.monitor_csv, **csv_opts) if cfg.monitor_csv else None
    recorder = Recorder(CsvSink(cfg.score_csv, FUZZY_SCORE_COLUMNS, **csv_opts) if cfg.score_csv else None)
    evaluator = Evaluator(source, rb, params, interval_s=cfg.interval_s, max_age_s=cfg.long_win_s, monitor_csv=monitor)
    tls = TlsFiles(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
    app = create_app(
        results=evaluator.latest,
        ready=evaluator.ready,
        stale=evaluator.stale,
        explain=lambda node: explain_node(rb, params, node),
        recorder=recorder,
        validate_body=cfg.validate_body,
        extender_body=cfg.extender_body,
    )
    stop = threading.Event()

    def on_worker_start() -> None:
        """Runs in the serving process: start the tick (after the history replay, on its own
        thread: never on the serving path) and the /metrics server."""
        def history() -> list:
            now = datetime.now(UTC)
            return source.history(now - timedelta(seconds=cfg.replay_s), now, cfg.interval_s)

        replay = history if isinstance(source, PrometheusSource) and cfg.replay_s > 0 else None
        threading.Thread(target=evaluator.run, args=(stop, replay), name="evaluator", daemon=True).start()
        collector = ScorerCollector(evaluator, admission=recorder, cert_expiry=tls.expiry if tls else None)
        metrics = MetricsServer(make_registry(collector), evaluator.ready, host=cfg.webhook_host,
                                port=cfg.metrics_port)
        metrics.start()
        if logs.summary_wanted(os.environ):
            threading.Thread(target=_print_summaries, args=(evaluator, stop, cfg.interval_s), daemon=True).start()

    return app, evaluator, recorder, tls, on_worker_start, stop


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = from_env(os.environ, args)
    except ConfigError as exc:
        print(f"scorer: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_format)
    for name in unknown_variables(os.environ):
        log.warning("event=unknown_variable name=%s hint='typo?'", name)
    try:
        app, _, recorder, tls, on_worker_start, stop = build(cfg)
    except RulesError as exc:
        print(f"scorer: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # the rule file's and the configured thresholds disagree
        print(f"scorer: decision thresholds (rule file + FUZZY_*): {exc}", file=sys.stderr)
        return 2
    scheme = "https" if tls else "http"
    shown = "127.0.0.1" if cfg.webhook_host in ("0.0.0.0", "::") else cfg.webhook_host
    source = f"prometheus {cfg.prometheus_url}" if cfg.prometheus_url else f"local exporter {cfg.exporter_url}"
    print(
        f"scorer: scoring {source}; /score at {scheme}://{shown}:{cfg.webhook_port}/score, "
        f"/metrics at http://{shown}:{cfg.metrics_port}/metrics",
        file=sys.stderr,
        flush=True,
    )
    started, main_pid = time.monotonic(), os.getpid()
    try:
        return serve(app, host=cfg.webhook_host, port=cfg.webhook_port, tls=tls, on_worker_start=on_worker_start,
                     stop=stop, read_timeout_s=cfg.read_timeout_s, held_bytes=cfg.held_request_bytes,
                     body_limits=body_limits(cfg.validate_body, cfg.extender_body))
    finally:
        recorder.close()
        if os.getpid() == main_pid:  # the forked worker unwinds through here too
            log.info("event=stopped after_s=%.0f", time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())

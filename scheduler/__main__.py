"""`python -m scheduler`: the fuzzy-scheduler (kubeconfig or in-cluster), with /metrics on 9862.

Wires one `Runtime` (watches, leader election, loop) to the configured score source and the
shared /metrics + /healthz + /readyz server. SIGTERM or SIGINT sets the stop event: the loop
ends, the lease is released so the other replica takes over at once, the watches close.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from common import logs
from common.envconf import ConfigError, unknown_variables
from common.metrics import MetricsServer, make_registry
from scheduler import config
from scheduler.kube import Kube
from scheduler.loop import Runtime
from scheduler.metrics import SchedulerCollector
from scheduler.scores import PrometheusScores, ScorerScores, ScoreSource

log = logging.getLogger("ksense.scheduler")


def score_source(cfg: config.SchedulerConfig) -> ScoreSource:
    if cfg.score_source == "scorer":
        return ScorerScores(cfg.scorer_url, ca_file=cfg.scorer_ca_file, long_win_s=cfg.long_win_s,
                            timeout_s=cfg.query_timeout_s)
    assert cfg.prometheus_url is not None  # from_env refuses the prometheus source without a URL
    return PrometheusScores(cfg.prometheus_url, selector=cfg.scorer_selector, long_win_s=cfg.long_win_s,
                            timeout_s=cfg.query_timeout_s)


def main(argv: list[str] | None = None) -> int:
    args = config.build_parser().parse_args(argv)
    try:
        cfg = config.from_env(os.environ, args)
    except ConfigError as exc:
        print(f"ksense: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_format)
    for name in unknown_variables(os.environ):
        logging.getLogger("ksense.config").warning("event=unknown_variable name=%s hint='typo?'", name)
    kube = Kube.connect(cfg.kubeconfig, request_timeout_s=cfg.request_timeout_s, identity=cfg.identity)
    runtime = Runtime(cfg, kube=kube, scores=score_source(cfg))
    server = MetricsServer(make_registry(SchedulerCollector(runtime.stats, runtime.elector.is_leader)),
                           runtime.ready, host=cfg.metrics_host, port=cfg.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    log.info("event=started name=%s identity=%s source=%s lease=%s/%s metrics=:%d", cfg.scheduler_name, cfg.identity,
             cfg.score_source, cfg.namespace, runtime.elector.name, server.port)
    try:
        runtime.run(stop)
    finally:
        server.shutdown()
        kube.close()
    log.info("event=stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ScorerConfig: the scorer's whole configuration, parsed once from env + flags (docs/configuration.md).

Flags override variables; every invalid value is reported in one error; unknown KSENSE_* /
FUZZY_* variables are warned about by the entry point.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from common import names as n
from common.envconf import EnvReader

MIB = 1 << 20


@dataclass(frozen=True)
class BodyLimit:
    """How large one JSON request body may be.

    `max_bytes` is checked against Content-Length before a byte is read (413). `max_values` is
    checked before parsing by counting the bytes that start a JSON value or key (`,` `:` `[`
    `{`, an upper bound of the number of values): parsing makes about 60-100 bytes of Python
    objects per value, so a short body of `[{},{},...]` could otherwise cost 25 times its size.
    Together they bound what one request can make the worker hold: about
    4 × max_bytes + 100 × max_values bytes (strings may widen to 4 bytes per character)."""

    max_bytes: int
    max_values: int


@dataclass(frozen=True)
class ScorerConfig:
    # --- inputs ---------------------------------------------------------------------------------
    prometheus_url: str | None = None
    """Prometheus (or Thanos/Mimir...) query API; None = read one local exporter directly."""
    exporter_selector: str = n.EXPORTER_SELECTOR
    """PromQL label matchers of the exporters' series: the scrape identity Prometheus attaches
    (deploy/ scrapes with honor_labels off), so no other scrape target can publish inputs.
    "" = every series of the family, whoever published it."""
    exporter_url: str = "http://127.0.0.1:9860/metrics"
    """The local exporter scraped when no Prometheus URL is set (single-machine mode)."""
    interval_s: float = 1.0
    """Evaluation tick: matches the exporter's interval and a 1 s scrape."""
    replay_s: float = 300.0
    """Inputs replayed from Prometheus at start to rebuild the decision state (replicas agree)."""
    long_win_s: float = 60.0
    """A sample older than this counts as missing (Prometheus' 5-minute lookback must not pass
    stale data as fresh)."""
    query_timeout_s: float = 2.0
    """Deadline of one query's whole answer (not of each read): one tick must not stall on a
    slow Prometheus, nor the start-up history replay."""
    query_concurrency: int | None = None
    """Requests of one tick in flight at once after its first; None: the source's default
    (scorer/sources/prometheus.py QUERY_CONCURRENCY)."""
    # --- controller -----------------------------------------------------------------------------
    rules_file: Path | None = None
    """Rule base and membership parameters; None = the bundled default (docs/design.md#fuzzy-controller)."""
    allow_on_missing: bool = False
    """Treat missing friction/energy as 0 instead of denying the node."""
    good_threshold: int | None = None
    """Consecutive good ticks before a denied node is allowed again. None (unset) here and in
    the three below: the rule file's `decision` value, else DecisionParams' default."""
    medium_low_upper: float | None = None
    """Upper bound of the medium-low band (counts as good)."""
    medium_mid_upper: float | None = None
    """Upper bound of the medium-mid band (holds the last decision)."""
    medium_bad_threshold: int | None = None
    """Consecutive medium-high ticks before an allowed node is denied."""
    # --- outputs --------------------------------------------------------------------------------
    webhook_host: str = "0.0.0.0"
    webhook_port: int = 8443
    tls_cert: Path | None = None
    """Serving certificate (PEM); re-read when the file changes. None with tls_key = plain HTTP."""
    tls_key: Path | None = None
    metrics_port: int = 9861
    """Plain-HTTP /metrics, separate from the (TLS) API port so Prometheus needs no client cert."""
    monitor_csv: Path | None = Path("/tmp/ksense/fuzzy_monitor.csv")
    score_csv: Path | None = Path("/tmp/ksense/fuzzy_score.csv")
    csv_max_bytes: int = 64 * 1024 * 1024
    csv_keep: int = 5
    log_format: str = "text"
    # --- HTTP API limits (not settable: they bound the worker's memory, tests hold them) ------
    validate_body: BodyLimit = BodyLimit(max_bytes=1 * MIB, max_values=50_000)
    """/validate. A real Pod CREATE review is a few tens of KiB and a few thousand values; a Pod's
    annotations may total 256 KiB (the API server's limit), so 1 MiB is four times the biggest
    annotations plus the rest of a pod. Larger reviews are answered 413, which the webhook's
    `failurePolicy: Ignore` turns into an admitted, unrecorded pod."""
    extender_body: BodyLimit = BodyLimit(max_bytes=2 * MIB, max_values=20_000)
    """/filter and /prioritize. With `nodeCacheCapable: true` (what the docs configure) the body
    is the pod plus node names: 5,000 nodes (Kubernetes' supported maximum) × a 253-character
    name is 1.3 MiB and 5,000 values. The `Nodes` form carries whole Node objects (~10 KiB and
    ~400 values each), so it fits clusters of about 50 nodes; bigger clusters must be
    nodeCacheCapable. The answer grows with the names (~60 bytes each in FailedNodes)."""
    held_request_bytes: int = 48 * MIB
    """Request bytes the API worker holds at once, being read, queued or served; a connection
    whose bytes would go beyond is closed. 16 maximum-size extender requests fit; 1,000
    connections each sending 2 MiB do not take the worker past its 512 Mi container limit."""
    read_timeout_s: float = 10.0
    """Deadline for a whole request to arrive (TLS handshake, headers and body), from its first
    byte (from the connection for a new one). The API server's webhook call times out after
    `timeoutSeconds` (at most 30 s); a healthy client sends a request in milliseconds."""


def build_parser(prog: str = "python -m scorer") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="ksense scorer: fuzzy node scores and allow/deny decisions from the exporters' signals; "
        "serves /score, the /validate admission webhook and the /filter + /prioritize scheduler extender.",
        epilog="Every flag falls back to its environment variable (docs/configuration.md), then to the default.",
    )
    p.add_argument("--prometheus-url", help="Prometheus query API (KSENSE_PROMETHEUS_URL; unset = local exporter)")
    p.add_argument("--exporter-url", help="local exporter /metrics (KSENSE_EXPORTER_URL)")
    p.add_argument("--exporter-selector", help="label matchers of the exporters' series in Prometheus "
                   f"(KSENSE_EXPORTER_SELECTOR, default {n.EXPORTER_SELECTOR}; empty = any publisher)")
    p.add_argument("--interval", help="evaluation tick seconds (KSENSE_SCORER_INTERVAL_S, default 1)")
    p.add_argument("--host", help="API listen address (FUZZY_WEBHOOK_HOST, default 0.0.0.0)")
    p.add_argument("--port", help="API port (FUZZY_WEBHOOK_PORT, default 8443)")
    p.add_argument("--metrics-port", help="plain /metrics port (KSENSE_SCORER_METRICS_PORT, default 9861)")
    p.add_argument("--tls-cert", help="certificate PEM (FUZZY_TLS_CERT)")
    p.add_argument("--tls-key", help="private key PEM (FUZZY_TLS_KEY)")
    p.add_argument("--rules", help="rule base JSON (FUZZY_RULES_FILE, default bundled)")
    p.add_argument("--monitor-csv", help="per-node per-tick CSV (FUZZY_MONITOR_CSV)")
    p.add_argument("--score-csv", help="per-admission CSV (FUZZY_SCORE_CSV)")
    p.add_argument("--no-csv", action="store_true", help="write neither CSV")
    return p


class DecisionSettings(TypedDict):
    """The decision knobs as ScorerConfig holds them (None: not set)."""

    allow_on_missing: bool
    good_threshold: int | None
    medium_low_upper: float | None
    medium_mid_upper: float | None
    medium_bad_threshold: int | None


def read_decision(r: EnvReader) -> DecisionSettings:
    """The decision knobs (FUZZY_ALLOW_ON_MISSING and the four thresholds) as ScorerConfig holds
    them; problems go to `r`. The scorer and `python -m scorer.replay` both read them here, so a
    replay refuses what the scorer refuses, with the same words."""
    lo = r.number("", "FUZZY_MEDIUM_LOW_UPPER", None, minimum=n.LEVEL_MEDIUM, maximum=n.LEVEL_HIGH)
    mid = r.number("", "FUZZY_MEDIUM_MID_UPPER", None, minimum=n.LEVEL_MEDIUM, maximum=n.LEVEL_HIGH)
    if lo is not None and mid is not None and lo > mid:
        r.problems.append(f"FUZZY_MEDIUM_LOW_UPPER={lo} must not exceed FUZZY_MEDIUM_MID_UPPER={mid}")
    return DecisionSettings(
        allow_on_missing=r.boolean("", "FUZZY_ALLOW_ON_MISSING", ScorerConfig.allow_on_missing),
        good_threshold=r.number("", "FUZZY_GOOD_THRESHOLD", None, minimum=1, integer=True),
        medium_low_upper=lo,
        medium_mid_upper=mid,
        medium_bad_threshold=r.number("", "FUZZY_MEDIUM_BAD_THRESHOLD", None, minimum=1, integer=True),
    )


def from_env(environ: Mapping[str, str], args: argparse.Namespace | None = None) -> ScorerConfig:
    """Build the config; raise ConfigError listing every bad value."""
    r = EnvReader(environ, args)
    no_csv = bool(r.flag("no_csv"))

    def path(flag: str, env: str, default: str | None) -> Path | None:
        text = r.text(flag, env, default)
        return Path(text) if text else None

    cert, key = path("tls_cert", "FUZZY_TLS_CERT", None), path("tls_key", "FUZZY_TLS_KEY", None)
    if (cert is None) != (key is None):
        r.problems.append("FUZZY_TLS_CERT and FUZZY_TLS_KEY: set both (TLS) or neither (plain HTTP)")
    for name, p in (("FUZZY_TLS_CERT", cert), ("FUZZY_TLS_KEY", key)):
        if p is not None and not p.is_file():
            r.problems.append(f"{name}={str(p)!r}: no such file")
    url = r.text("prometheus_url", "KSENSE_PROMETHEUS_URL", None) or None
    if url is not None and not url.startswith(("http://", "https://")):
        r.problems.append(f"KSENSE_PROMETHEUS_URL={url!r}: expected an http:// or https:// URL")
    cfg = ScorerConfig(
        prometheus_url=url.rstrip("/") if url else None,
        exporter_url=r.text("exporter_url", "KSENSE_EXPORTER_URL", ScorerConfig.exporter_url) or "",
        exporter_selector=r.matchers("exporter_selector", "KSENSE_EXPORTER_SELECTOR", ScorerConfig.exporter_selector),
        interval_s=r.number("interval", "KSENSE_SCORER_INTERVAL_S", ScorerConfig.interval_s, minimum=0.05),
        replay_s=r.number("", "KSENSE_SCORER_REPLAY_S", ScorerConfig.replay_s, minimum=0.0),
        long_win_s=r.number("", "FUZZY_LONG_WIN_S", ScorerConfig.long_win_s, minimum=1.0),
        query_concurrency=r.number("", "KSENSE_SCORER_QUERY_CONCURRENCY", ScorerConfig.query_concurrency, minimum=1,
                                   maximum=64, integer=True),
        rules_file=path("rules", "FUZZY_RULES_FILE", None),
        **read_decision(r),
        webhook_host=r.text("host", "FUZZY_WEBHOOK_HOST", None) or ScorerConfig.webhook_host,
        webhook_port=r.number("port", "FUZZY_WEBHOOK_PORT", ScorerConfig.webhook_port, minimum=0, maximum=65535,
                              integer=True),
        tls_cert=cert,
        tls_key=key,
        metrics_port=r.number("metrics_port", "KSENSE_SCORER_METRICS_PORT", ScorerConfig.metrics_port, minimum=0,
                              maximum=65535, integer=True),
        monitor_csv=None if no_csv else path("monitor_csv", "FUZZY_MONITOR_CSV", str(ScorerConfig.monitor_csv)),
        score_csv=None if no_csv else path("score_csv", "FUZZY_SCORE_CSV", str(ScorerConfig.score_csv)),
        csv_max_bytes=r.number("", "KSENSE_CSV_MAX_BYTES", ScorerConfig.csv_max_bytes, minimum=4096, integer=True),
        csv_keep=r.number("", "KSENSE_CSV_KEEP", ScorerConfig.csv_keep, minimum=1, integer=True),
        log_format=r.choice("", "KSENSE_LOG_FORMAT", ScorerConfig.log_format, ("text", "json")),
    )
    r.check()
    return cfg

"""SchedulerConfig: the scheduler's whole configuration, parsed once from env + flags (docs/configuration.md).

Flags override variables; every invalid value is reported in one error; unknown KSENSE_* /
FUZZY_* variables are warned about by the entry point. Settings the contract has no variable
for (namespace, identity, kubeconfig, CA file, lease timing) are flags, or the standard
Kubernetes variables (`POD_NAMESPACE`, `POD_NAME`, `KUBECONFIG`) a Deployment sets anyway, so
no new `FUZZY_*` name is invented.
"""

from __future__ import annotations

import argparse
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common import names as n
from common.envconf import EnvReader

SOURCES = ("prometheus", "scorer")


@dataclass(frozen=True)
class SchedulerConfig:
    # --- what to schedule -----------------------------------------------------------------------
    scheduler_name: str = n.SCHEDULER_NAME_DEFAULT
    """`spec.schedulerName` of the pods this scheduler owns."""
    # --- rate limits (docs/design.md#the-fuzzy-scheduler, seed semantics; 0 disables each) ---------------------
    poll_s: float = 10.0
    """Resync cadence: a cycle runs at least this often (watch events wake the loop otherwise);
    also the window of `max_per_cycle`."""
    max_per_cycle: int = 1
    """Binds per `poll_s` window, however many cycles events wake in it; 0 = unlimited."""
    placement_delay_s: float = 5.0
    """Minimum time between two binds; 0 = none."""
    # --- score source ---------------------------------------------------------------------------
    score_source: str = "prometheus"
    """`prometheus` (the scorer's exported series) or `scorer` (its /score API)."""
    prometheus_url: str | None = None
    """Prometheus (or anything answering its HTTP query API); required for the prometheus source."""
    scorer_selector: str = n.SCORER_SELECTOR
    """PromQL label matchers of the scorers' series: the scrape identity Prometheus attaches
    (deploy/ scrapes with honor_labels off), so no other scrape target can publish decisions.
    "" = every series of the family, whoever published it."""
    scorer_url: str = "https://ksense-scorer.ksense.svc:8443"
    """The scorer's API, for the scorer source (TLS verified)."""
    scorer_ca_file: Path | None = None
    """CA bundle that signed the scorer's certificate; None = the system trust store."""
    long_win_s: float = 60.0
    """A decision older than this is stale: its node gets no pods (no_score)."""
    query_timeout_s: float = 2.0
    """Deadline of the score source's whole answer (not of each read): a cycle must not stall on it."""
    # --- Kubernetes -----------------------------------------------------------------------------
    kubeconfig: Path | None = None
    """kubeconfig file; None = in-cluster service account, else ~/.kube/config."""
    namespace: str = "ksense"
    """Namespace of the leader-election Lease (the scheduler's own)."""
    identity: str = ""
    """Holder identity in the Lease: pod name (or hostname) + a random suffix, so a restarted
    process never mistakes its predecessor's lease for its own."""
    lease_duration_s: float = 15.0
    """How long a lease holds without renewal before another replica may take it."""
    renew_deadline_s: float = 10.0
    """The leader stops binding when it could not renew for this long (< lease duration, so it
    has stopped before anyone else can start)."""
    retry_period_s: float = 2.0
    """Acquire / renew attempt cadence."""
    request_timeout_s: float = 10.0
    """Timeout of every non-watch API request; a bind's is capped at the leadership time left."""
    watch_timeout_s: float = 300.0
    """Server-side watch timeout; the watch is reopened from its resourceVersion after it."""
    # --- serving --------------------------------------------------------------------------------
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9862
    log_format: str = "text"


#: The defaults, stated once in the dataclass above; the parser's help and from_env read them here.
D = SchedulerConfig


def build_parser(prog: str = "python -m scheduler") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="ksense fuzzy-scheduler: binds Pending pods (spec.schedulerName) to nodes that pass the "
        "kube-scheduler basics and whose fuzzy decision is a fresh allow.",
        epilog="Every flag falls back to its environment variable (docs/configuration.md), then to the default.",
    )
    p.add_argument("--scheduler-name", help=f"spec.schedulerName to serve (FUZZY_SCHEDULER_NAME, {D.scheduler_name})")
    p.add_argument("--poll", help=f"resync seconds, 0 = none (FUZZY_SCHEDULER_POLL_S, {D.poll_s:g})")
    p.add_argument("--max-per-cycle",
                   help=f"binds per cycle, 0 = unlimited (FUZZY_SCHEDULER_MAX_PER_CYCLE, {D.max_per_cycle})")
    p.add_argument("--placement-delay",
                   help=f"seconds between binds, 0 = none (FUZZY_SCHEDULER_PLACEMENT_DELAY_S, {D.placement_delay_s:g})")
    p.add_argument("--score-source", help=f"prometheus or scorer (FUZZY_SCORE_SOURCE, {D.score_source})")
    p.add_argument("--prometheus-url", help="Prometheus query API (KSENSE_PROMETHEUS_URL)")
    p.add_argument("--scorer-selector", help="label matchers of the scorers' series in Prometheus "
                   f"(KSENSE_SCORER_SELECTOR, default {n.SCORER_SELECTOR}; empty = any publisher)")
    p.add_argument("--scorer-url", help=f"scorer API base URL (FUZZY_SCORER_URL, {D.scorer_url})")
    p.add_argument("--scorer-ca-file", help="CA bundle for the scorer's certificate (default: system trust)")
    p.add_argument("--long-win", help=f"max decision age in seconds (FUZZY_LONG_WIN_S, {D.long_win_s:g})")
    p.add_argument("--kubeconfig", help="kubeconfig path (KUBECONFIG; default in-cluster, else ~/.kube/config)")
    p.add_argument("--namespace", help=f"namespace of the leader Lease (POD_NAMESPACE, {D.namespace})")
    p.add_argument("--identity", help="leader-election identity (POD_NAME or hostname + random suffix)")
    p.add_argument("--lease-duration", help=f"lease duration seconds ({D.lease_duration_s:g})")
    p.add_argument("--renew-deadline", help=f"stop leading after failing to renew this long ({D.renew_deadline_s:g})")
    p.add_argument("--retry-period", help=f"acquire/renew cadence seconds ({D.retry_period_s:g})")
    p.add_argument("--metrics-host", help=f"listen address of /metrics, /healthz, /readyz ({D.metrics_host})")
    p.add_argument("--metrics-port", help=f"its port (KSENSE_SCHEDULER_METRICS_PORT, {D.metrics_port})")
    return p


def from_env(environ: Mapping[str, str], args: argparse.Namespace | None = None) -> SchedulerConfig:
    """Build the config; raise ConfigError listing every bad value."""
    r = EnvReader(environ, args)
    source = r.choice("score_source", "FUZZY_SCORE_SOURCE", D.score_source, SOURCES)
    prom = r.text("prometheus_url", "KSENSE_PROMETHEUS_URL", None) or None
    scorer_url = r.text("scorer_url", "FUZZY_SCORER_URL", D.scorer_url) or D.scorer_url
    for name, url in (("KSENSE_PROMETHEUS_URL", prom), ("FUZZY_SCORER_URL", scorer_url)):
        if url is not None and not url.startswith(("http://", "https://")):
            r.problems.append(f"{name}={url!r}: expected an http:// or https:// URL")
    if source == "prometheus" and prom is None:
        r.problems.append("KSENSE_PROMETHEUS_URL: required with FUZZY_SCORE_SOURCE=prometheus "
                          "(or set FUZZY_SCORE_SOURCE=scorer)")
    ca_text = r.flag("scorer_ca_file")
    ca = Path(ca_text) if ca_text else None
    if ca is not None and not ca.is_file():
        r.problems.append(f"--scorer-ca-file={ca_text!r}: no such file")
    kube_text = r.text("kubeconfig", "KUBECONFIG", None)
    kubeconfig = Path(kube_text) if kube_text else None
    if kubeconfig is not None and not kubeconfig.is_file():
        r.problems.append(f"KUBECONFIG={kube_text!r}: no such file")
    name = r.text("scheduler_name", "FUZZY_SCHEDULER_NAME", n.SCHEDULER_NAME_DEFAULT) or ""
    if not name:
        r.problems.append("FUZZY_SCHEDULER_NAME: must not be empty")
    lease = r.number("lease_duration", "", D.lease_duration_s, minimum=1.0)
    renew = r.number("renew_deadline", "", D.renew_deadline_s, minimum=0.5)
    retry = r.number("retry_period", "", D.retry_period_s, minimum=0.1)
    if not retry < renew < lease:
        r.problems.append(f"leader election: need retry period ({retry}) < renew deadline ({renew}) "
                          f"< lease duration ({lease})")
    base = r.text("identity", "POD_NAME", None) or socket.gethostname()
    cfg = SchedulerConfig(
        scheduler_name=name,
        poll_s=r.number("poll", "FUZZY_SCHEDULER_POLL_S", D.poll_s, minimum=0.0),
        max_per_cycle=r.number("max_per_cycle", "FUZZY_SCHEDULER_MAX_PER_CYCLE", D.max_per_cycle, minimum=0,
                               integer=True),
        placement_delay_s=r.number("placement_delay", "FUZZY_SCHEDULER_PLACEMENT_DELAY_S", D.placement_delay_s,
                                   minimum=0.0),
        score_source=source,
        prometheus_url=prom.rstrip("/") if prom else None,
        scorer_selector=r.matchers("scorer_selector", "KSENSE_SCORER_SELECTOR", D.scorer_selector),
        scorer_url=scorer_url.rstrip("/"),
        scorer_ca_file=ca,
        long_win_s=r.number("long_win", "FUZZY_LONG_WIN_S", D.long_win_s, minimum=1.0),
        kubeconfig=kubeconfig,
        namespace=r.text("namespace", "POD_NAMESPACE", D.namespace) or D.namespace,
        # An explicit --identity is used as given (tests, operators); a derived one is made unique.
        identity=r.flag("identity") or f"{base}_{uuid.uuid4().hex[:8]}",
        lease_duration_s=lease,
        renew_deadline_s=renew,
        retry_period_s=retry,
        metrics_host=r.text("metrics_host", "", D.metrics_host) or D.metrics_host,
        metrics_port=r.number("metrics_port", "KSENSE_SCHEDULER_METRICS_PORT", D.metrics_port, minimum=0, maximum=65535,
                              integer=True),
        log_format=r.choice("", "KSENSE_LOG_FORMAT", D.log_format, ("text", "json")),
    )
    r.check()
    return cfg

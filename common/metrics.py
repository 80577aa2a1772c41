"""What every component needs to export Prometheus metrics: a registry, histogram families, and
the small bounded HTTP server for /metrics, /healthz and /readyz (docs/api.md).

Why here: the exporter (9860), the scorer (9861) and the scheduler (9862) each serve their own
collector the same way; one module builds the registry (with process_* metrics), writes
histograms with the `le` labels Prometheus and Go clients use, and serves the three paths.
prometheus_client's `start_http_server` serves only metrics (on every path), and with a thread
per connection, so the metrics answer comes from its WSGI app (content negotiation, gzip) and
this module adds the routing and the probes, served by the bounded server of
common/httpserver.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, make_wsgi_app
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from common import names as n
from common.core.model import ExportHistogram
from common.httpserver import BoundedWsgiServer, Limits, WsgiApp


def histogram_family(family: n.Family, hist: ExportHistogram | None, node: str | None = None) -> HistogramMetricFamily:
    """`hist` as a family, labelled `node` when given (the exporter's) or unlabelled (the
    scorer's process-wide ones); without series when there is no histogram yet."""
    names, values = ((), ()) if node is None else ((n.LABEL_NODE,), (node,))
    metric = HistogramMetricFamily(family.name, family.help, labels=names)
    if hist is not None and hist.buckets:
        # floatToGoString writes `le` the way Prometheus and Go clients do (1e-06, +Inf), so
        # series from different exporters (or scorer replicas) share their bucket labels.
        buckets = [(floatToGoString(le), count) for le, count in hist.buckets]
        metric.add_metric(values, buckets, hist.sum_seconds)
    return metric


def make_registry(collector: Collector, *, process_metrics: bool = True) -> CollectorRegistry:
    """A fresh registry with `collector` (any component's) and, unless told otherwise,
    prometheus_client's process (process_*: CPU, RSS, fds; docs/metrics.md#exporter-metrics) and platform
    (python_info) collectors. Tests that compare exact text turn the latter off: their values
    change by the second."""
    registry = CollectorRegistry()
    registry.register(collector)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


def make_app(registry: CollectorRegistry, ready: Callable[[], bool]) -> WsgiApp:
    """WSGI app: /metrics (prometheus_client's exposition), /healthz 200 `ok` while the process
    answers, /readyz 200 when `ready()` else 503, 404 for anything else (docs/api.md)."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            status, body = "200 OK", b"ok"
        elif path == "/readyz":
            status, body = ("200 OK", b"ready") if ready() else ("503 Service Unavailable", b"not ready")
        else:
            status, body = "404 Not Found", b"not found"
        start_response(
            status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


class MetricsServer:
    """Serves `make_app(registry, ready)` on host:port from background threads, within
    `limits` (default: httpserver.Limits(); common/httpserver.py: idle connections hold no thread, requests are
    capped and deadlined).

    Nothing happens until `start()`; `port` is the bound port (useful with port 0);
    `shutdown()` stops serving, closes the socket and is idempotent.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        *,
        host: str = "0.0.0.0",
        port: int = 9860,
        limits: Limits | None = None,
    ):
        self._server = BoundedWsgiServer(make_app(registry, ready), host=host, port=port,
                                         limits=limits or Limits(), name="metrics-http")

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> None:
        self._server.start()

    def shutdown(self) -> None:
        self._server.shutdown()

"""LocalSource against a real socket serving the exporter's own exposition (built by the
exporter's collector from a snapshot), and every way the scrape can fail."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from common import names as n
from common.core.model import Derived, RawInterval
from common.metrics import make_registry
from exporter.core.model import Reading, Snapshot, Telemetry
from exporter.sinks.prometheus import ExporterCollector
from scorer.sources.local import LocalSource
from tests.scorer.conftest import Reply
from tests.support import free_port

NOW = datetime(2027, 1, 15, 12, 0, 0, tzinfo=UTC)
TEXT = "text/plain; version=0.0.4; charset=utf-8"


def exposition(derived: Derived, *, cpu_util: float = 25.0, source: str = n.SOURCE_EBPF) -> str:
    reading = Reading(
        # PSI 30 %: the worst "some" share of the per-resource detail below, as sources compute it.
        raw=RawInterval(time=datetime(2027, 1, 15, 12), t=0.0, cpu_util=cpu_util, psi=30.0),
        telemetry=Telemetry(pressure={("cpu", "some"): 0.1, ("io", "some"): 0.3, ("io", "full"): 0.9}),
    )
    snap = Snapshot(node="worker-1", source=source, reading=reading, derived=derived)
    return generate_latest(make_registry(ExporterCollector(lambda: snap), process_metrics=False)).decode()


FROZEN = Derived(frozen=True, samples=300, warmup_remaining_s=0.0, friction=4.0, direction=-1.0, energy=0.5)


def serve(fake_server, body: str) -> None:
    fake_server.handler = lambda path, params: Reply(200, body, TEXT)


def test_reads_the_exporters_exposition(fake_server):
    serve(fake_server, exposition(FROZEN))
    got = LocalSource(fake_server.url + "/metrics").fetch(NOW)
    assert got.ok and got.source == "local" and dict(got.errors) == {}
    node = got.nodes["worker-1"]
    assert node.missing == ()
    assert node.friction_signed == -4.0 and node.energy == 0.5
    assert node.cpu_pct == pytest.approx(25.0)
    assert node.psi_pct == pytest.approx(30.0)  # ksense_pressure_worst_ratio, never a "full" line
    assert fake_server.requests[0][0] == "/metrics"


def test_calibrating_exporter(fake_server):
    serve(fake_server, exposition(Derived(frozen=False, samples=12, warmup_remaining_s=420.0)))
    node = LocalSource(fake_server.url + "/metrics").fetch(NOW).nodes["worker-1"]
    assert node.calibrating and node.warmup_remaining_s == 420.0
    assert node.missing == ("friction", "energy")
    assert node.why["friction"].startswith("calibrating")


def test_procfs_exporter_has_no_baseline_rather_than_calibrating(fake_server):
    """procfs has no p99, so its baseline never freezes: "calibrating" would promise an end."""
    serve(fake_server, exposition(Derived(frozen=False, samples=0, warmup_remaining_s=420.0), source=n.SOURCE_PROCFS))
    node = LocalSource(fake_server.url + "/metrics").fetch(NOW).nodes["worker-1"]
    assert node.calibrating and node.baseline_unavailable
    assert node.missing == ("friction", "energy")
    assert node.why["friction"] == "baseline unavailable (procfs source has no p99)"


def test_first_interval_without_cpu(fake_server):
    serve(fake_server, exposition(FROZEN, cpu_util=math.nan))
    node = LocalSource(fake_server.url + "/metrics").fetch(NOW).nodes["worker-1"]
    assert node.missing == ("cpu",) and node.why == {"cpu": "absent"}


@pytest.mark.parametrize(
    ("reply", "reason", "shown"),
    [
        (Reply(503, "not ready", TEXT), "http_503", "http 503"),
        (Reply(200, "this is { not an exposition", TEXT), "bad_response", "bad response"),
        (Reply(200, "slow", TEXT, delay_s=2.0), "timeout", "timeout"),
    ],
    ids=["503", "garbage", "timeout"],
)
def test_failed_scrape_keeps_known_nodes_with_everything_missing(fake_server, reply, reason, shown):
    src = LocalSource(fake_server.url + "/metrics", timeout_s=0.3)
    serve(fake_server, exposition(FROZEN))
    src.fetch(NOW)
    fake_server.handler = lambda path, params: reply
    got = src.fetch(NOW)
    assert not got.ok
    assert dict(got.errors) == {reason: 1}
    node = got.nodes["worker-1"]
    assert node.missing == n.INPUTS
    assert set(node.why.values()) == {shown}


def test_exporter_down():
    got = LocalSource(f"http://127.0.0.1:{free_port()}/metrics").fetch(NOW)
    assert not got.ok and dict(got.errors) == {"unreachable": 1} and got.nodes == {}

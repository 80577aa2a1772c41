"""LocalSource against a real socket serving the exporter's own exposition (built by the
exporter's collector from a snapshot), and every way the scrape can fail."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest

from common import names as n
from common.core.model import Derived, RawInterval
from common.metrics import make_registry
from exporter.core.model import Reading, Snapshot, Telemetry
from exporter.core.pods import PodSeries, PodsReport
from exporter.sinks.prometheus import ExporterCollector
from scorer.core.model import PodRef
from scorer.sources.local import LocalSource
from tests.scorer.conftest import Reply
from tests.support import free_port

NOW = datetime(2027, 1, 15, 12, 0, 0, tzinfo=UTC)
TEXT = "text/plain; version=0.0.4; charset=utf-8"


def exposition(derived: Derived, *, cpu_util: float = 25.0, source: str = n.SOURCE_EBPF,
               pods: PodsReport | None = None) -> str:
    reading = Reading(
        # PSI 30 %: the worst "some" share of the per-resource detail below, as sources compute it.
        raw=RawInterval(time=datetime(2027, 1, 15, 12), t=0.0, cpu_util=cpu_util, psi=30.0),
        telemetry=Telemetry(pressure={("cpu", "some"): 0.1, ("io", "some"): 0.3, ("io", "full"): 0.9}),
        pods=pods,
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


def pods_after(elapsed_s: float, *, restarted: bool = False) -> PodsReport:
    """The exporter's per-pod series after `elapsed_s` of constant rates (s/s): shop/checkout
    waits 0.4, batch/nightly (known by UID only) burns 0.9 CPU, backup/restic 0.7 in D-state, and
    the `other` sum outdoes them all. `restarted`: counters from 0 again, `elapsed_s` ago."""
    rates = {("u-1", "shop", "checkout"): (0.4, 0.05, 0.05), ("u-2", "", ""): (0.01, 0.9, 0.0),
             ("u-3", "backup", "restic"): (0.02, 0.1, 0.7), (n.POD_UID_OTHER, "", ""): (5.0, 5.0, 5.0)}
    base = 0.0 if restarted else 1000.0
    series = tuple(
        PodSeries(uid=uid, namespace=ns, name=name, wait_seconds=base + wait * elapsed_s, waits=int(elapsed_s),
                  dstate_seconds=base + dstate * elapsed_s, dstate_episodes=1, wait_buckets=((math.inf, 1),),
                  cpu_seconds=base + cpu * elapsed_s, pressure={})
        for (uid, ns, name), (wait, cpu, dstate) in rates.items())
    return PodsReport(series=series, tracked=4, capacity=256, names_available=True)


def test_names_the_top_pods_from_the_exporters_per_pod_counters(fake_server):
    """Rates from the source's own scrapes over the last minute, like the Prometheus source's
    rate()[1m]: nobody on the first scrape, then each role's pod at its rate; `other` never; a
    scrape more than a minute old is not used; a counter reset counts from 0."""
    source = LocalSource(fake_server.url + "/metrics")
    serve(fake_server, exposition(FROZEN, pods=pods_after(0.0)))
    first = source.fetch(NOW).nodes["worker-1"]
    assert first.top_pods == ()
    serve(fake_server, exposition(FROZEN, pods=pods_after(10.0)))
    node = source.fetch(NOW + timedelta(seconds=10)).nodes["worker-1"]
    assert node.victim == PodRef("shop", "checkout", "u-1", pytest.approx(0.4))
    assert node.aggressor == PodRef("", "", "u-2", pytest.approx(0.9))
    assert node.io_aggressor == PodRef("backup", "restic", "u-3", pytest.approx(0.7))
    # At +65 s the first scrape is out of the window: rates against the one at +10 s.
    serve(fake_server, exposition(FROZEN, pods=pods_after(65.0)))
    node = source.fetch(NOW + timedelta(seconds=65)).nodes["worker-1"]
    assert node.victim == PodRef("shop", "checkout", "u-1", pytest.approx(0.4))
    # The exporter restarted 5 s ago: its counters went down, and count from 0 (rate over 5 s of 10).
    serve(fake_server, exposition(FROZEN, pods=pods_after(5.0, restarted=True)))
    node = source.fetch(NOW + timedelta(seconds=75)).nodes["worker-1"]
    assert node.aggressor == PodRef("", "", "u-2", pytest.approx(0.45))

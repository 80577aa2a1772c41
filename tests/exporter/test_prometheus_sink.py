"""The exporter's /metrics: exact exposition (golden), docs/metrics.md#exporter-metrics conformance, promtool, HTTP.

The golden file pins the whole text for one hand-built, realistic snapshot; regenerate it with
KSENSE_UPDATE_GOLDEN=1 and read the diff before committing it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common import names
from common.core.durations import DurationHistogram
from common.core.model import Derived, ExportHistogram, RawInterval
from common.csvfile import REASON_ENOSPC, REASON_QUEUE_FULL, REASONS, CsvStats
from common.metrics import MetricsServer, make_registry
from exporter.bpf import loader
from exporter.core import histogram
from exporter.core.model import MapStats, ProgramStats, Reading, Snapshot, Telemetry
from exporter.core.pods import PodsReport
from exporter.sampler import SAMPLE_DURATION_BOUNDS
from exporter.sinks.prometheus import ExporterCollector
from tests.exporter import factories

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "exporter_metrics.txt"
ALL_FAMILIES = names.EXPORTER_FAMILIES


def _latency(per_octave: list[int], sum_seconds: float) -> ExportHistogram:
    """What the eBPF source exports for a kernel histogram holding per_octave[0] zero samples and
    per_octave[b] samples at 2^(b-1) µs (b ≥ 1): histogram.to_export, the real layout."""
    keys = np.zeros(histogram.NKEYS, dtype=np.int64)
    keys[histogram.ZERO_KEY] = per_octave[0]
    for b, count in enumerate(per_octave[1:], start=1):
        keys[histogram.key(2 ** (b - 1))] += count
    return histogram.to_export(keys, round(sum_seconds * 1e9))


def _hist(per_bucket: list[int], sum_seconds: float, bounds: list[float]) -> ExportHistogram:
    """Cumulative Prometheus buckets from per-bucket counts (the last count goes to +Inf)."""
    assert len(per_bucket) == len(bounds) + 1
    cumulative, total = [], 0
    for le, count in zip([*bounds, math.inf], per_bucket, strict=True):
        total += count
        cumulative.append((le, total))
    return ExportHistogram(buckets=tuple(cumulative), sum_seconds=sum_seconds)


class _StubSink:
    def __init__(self, stats: CsvStats):
        self._stats = stats

    def stats(self) -> CsvStats:
        return self._stats


def _realistic_snapshot() -> Snapshot:
    """A frozen-baseline eBPF interval on a busy node whose latest feature vector was not
    finite (friction NaN and so direction, rate and energy NaN too), io PSI unreadable,
    and the softirq tracepoints failed to attach."""
    runqueue = [0, 1520, 9210, 20480, 31002, 18211, 6120, 2004, 811, 302, 120, 41, 9, 2] + [0] * 12 + [0]
    dstate = [0, 0, 3, 12, 40, 85, 130, 160, 140, 90, 52, 30, 12, 6, 2, 1] + [0] * 10 + [0]
    softirq = [0] * 27
    raw = RawInterval(
        time=datetime(2026, 11, 28, 16, 0, 1),
        t=10234.0,
        sched_total_ms=812.25,
        sched_avg_ms=0.0912,
        sched_p95_ms=0.0625,
        sched_p99_ms=0.1875,
        sched_max_ms=4.25,
        sched_count=8906,
        sched_dropped=0,
        dstate_total_ms=41.5,
        dstate_count=77,
        softirq_total_ms=math.nan,
        softirq_count=None,
        cpu_util=37.5,
        psi=1.23,
    )
    telemetry = Telemetry(
        histograms=MappingProxyType(
            {
                names.RUNQUEUE_LATENCY.name: _latency(runqueue, 2.731904),
                names.DSTATE_DURATION.name: _latency(dstate, 0.689152),
                names.SOFTIRQ_NET_RX_DURATION.name: _latency(softirq, 0.0),
            }
        ),
        runqueue_max_seconds=0.00425,
        runqueue_dropped_total=3,
        pressure=MappingProxyType(
            {
                ("cpu", "some"): 0.0123,
                ("cpu", "full"): 0.0,
                ("memory", "some"): 0.0011,
                ("memory", "full"): 0.0005,
            }
        ),
        pressure_available=MappingProxyType({"cpu": True, "memory": True, "io": False}),
        attached=MappingProxyType(
            {
                "sched:sched_switch": True,
                "sched:sched_wakeup": True,
                "sched:sched_wakeup_new": True,
                "sched:sched_process_exit": True,
                "irq:softirq_entry": False,
                "irq:softirq_exit": False,
            }
        ),
        programs=MappingProxyType(
            {
                "sched_switch": ProgramStats(run_seconds=1.912345678, runs=4410211),
                "sched_wakeup": ProgramStats(run_seconds=0.40125, runs=1733090),
            }
        ),
        maps=MappingProxyType(
            {"runq_start": MapStats(1210, 65536, 0), "dstate_start": MapStats(37, 65536, 2)}
        ),
    )
    derived = Derived(
        frozen=True,
        samples=300,
        warmup_remaining_s=0.0,
        friction=math.nan,
        direction=math.nan,
        df_dt=math.nan,
        energy=math.nan,
        energy_w=22,
        energy_vol=0.031250,
        energy_k=1.875,
    )
    return Snapshot(
        node="worker-1",
        source=names.SOURCE_EBPF,
        reading=Reading(raw=raw, telemetry=telemetry),
        derived=derived,
        sample_duration=_hist([3530, 260, 35, 1, 0, 0], 3.07, list(SAMPLE_DURATION_BOUNDS)),
    )


CSV_SINKS = {
    names.KERNEL_METRICS_CSV_NAME: _StubSink(
        CsvStats(rows_written=3826, errors={**dict.fromkeys(REASONS, 0), REASON_ENOSPC: 2})
    )
}
# What the snapshot above leaves undefined: these families must be absent, not NaN.
NAN_FAMILIES = {names.FRICTION, names.FRICTION_DIRECTION, names.FRICTION_RATE, names.ENERGY}


def _exposition(snapshot: Snapshot | None, *, process_metrics: bool = False) -> str:
    collector = ExporterCollector(lambda: snapshot, csv_sinks=CSV_SINKS)
    return generate_latest(make_registry(collector, process_metrics=process_metrics)).decode()


def _samples(text: str) -> list:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def test_exposition_matches_golden():
    text = _exposition(_realistic_snapshot())
    if os.environ.get("KSENSE_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_every_family_is_exposed_except_the_undefined_ones():
    exposed = {fam.name for fam in text_string_to_metric_families(_exposition(_realistic_snapshot()))}
    # The parser reports counters without their `_total`.
    expected = {f.name.removesuffix("_total") for f in ALL_FAMILIES if f not in NAN_FAMILIES}
    assert exposed == expected


def test_describe_names_every_family_of_the_contract():
    collector = ExporterCollector(lambda: None)
    described = {m.name for m in collector.describe()}
    assert described == {f.name.removesuffix("_total") for f in (*ALL_FAMILIES, *names.POD_FAMILIES)}


def test_nan_is_omitted_and_every_series_has_the_node_label():
    text = _exposition(_realistic_snapshot())
    assert "NaN" not in text
    for family in NAN_FAMILIES:
        assert f"\n{family.name}{{" not in text
    samples = _samples(text)
    assert samples
    assert all(s.labels.get(names.LABEL_NODE) == "worker-1" for s in samples)


def test_values_and_units():
    by_key = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in _samples(_exposition(_realistic_snapshot()))
    }

    def value(name: str, **labels: str) -> float:
        return by_key[(name, tuple(sorted({"node": "worker-1", **labels}.items())))]

    assert value(names.CPU_UTILIZATION.name) == 0.375
    assert value(names.PRESSURE.name, resource="memory", kind="full") == 0.0005
    assert value(names.PRESSURE_AVAILABLE.name, resource="io") == 0
    assert value(names.BPF_PROGRAM_ATTACHED.name, tracepoint="irq:softirq_entry") == 0
    assert value(names.SOURCE_INFO.name, source="ebpf") == 1
    assert value(names.RUNQUEUE_LATENCY_DROPPED.name) == 3
    assert value(names.CSV_WRITE_ERRORS.name, file="kernel_metrics.csv", reason="enospc") == 2
    assert value(names.CSV_ROWS_WRITTEN.name, file="kernel_metrics.csv") == 3826
    assert value(names.RUNQUEUE_LATENCY.name + "_count") == 89832
    assert value(names.RUNQUEUE_LATENCY.name + "_sum") == 2.731904


def test_latency_buckets_are_powers_of_two_microseconds_in_seconds():
    text = _exposition(_realistic_snapshot())
    for family in (names.RUNQUEUE_LATENCY, names.DSTATE_DURATION, names.SOFTIRQ_NET_RX_DURATION):
        les = [s.labels["le"] for s in _samples(text) if s.name == family.name + "_bucket"]
        assert les[:7] == ["1e-06", "4e-06", "1.6e-05", "6.4e-05", "0.000256", "0.001024", "0.002048"]
        assert les[-3:] == ["8.388608", "33.554432", "+Inf"]
        assert [float(le) for le in les] == [*(2**i / 1e6 for i in names.HISTOGRAM_LE_EXPONENTS), math.inf]


def test_scrapes_are_fresh_views_of_the_latest_snapshot():
    latest = {"snap": _realistic_snapshot()}
    collector = ExporterCollector(lambda: latest["snap"])
    registry = make_registry(collector, process_metrics=False)
    first = generate_latest(registry).decode()
    reading = latest["snap"].reading
    latest["snap"] = Snapshot(
        node="worker-1",
        source=names.SOURCE_EBPF,
        reading=Reading(
            raw=RawInterval(time=reading.raw.time, t=1.0, cpu_util=50.0), telemetry=reading.telemetry
        ),
    )
    second = generate_latest(registry).decode()
    assert 'ksense_cpu_utilization_ratio{node="worker-1"} 0.375' in first
    assert 'ksense_cpu_utilization_ratio{node="worker-1"} 0.5' in second
    assert names.BASELINE_FROZEN.name not in second


def test_before_the_first_snapshot_and_before_the_first_reading():
    assert _exposition(None).strip() == ""
    assert not ExporterCollector(lambda: None).ready()
    calibrating = Snapshot(node="n1", source=names.SOURCE_PROCFS)
    assert not ExporterCollector(lambda: calibrating).ready()
    names_exposed = {fam.name for fam in text_string_to_metric_families(_exposition(calibrating))}
    assert names_exposed == {names.SOURCE_INFO.name, "ksense_csv_rows_written", "ksense_csv_write_errors"}


def test_nothing_is_registered_at_import():
    assert not [m.name for m in REGISTRY.collect() if m.name.startswith("ksense_")]


def test_full_exposition_has_process_metrics_and_passes_promtool(promtool):
    text = _exposition(_realistic_snapshot(), process_metrics=True)
    assert "process_resident_memory_bytes" in text
    assert "process_cpu_seconds_total" in text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# --- HTTP ---------------------------------------------------------------------------------------
@pytest.fixture
def server_and_latest():
    latest: dict[str, Snapshot | None] = {"snap": None}
    collector = ExporterCollector(lambda: latest["snap"], csv_sinks=CSV_SINKS)
    server = MetricsServer(make_registry(collector), collector.ready, host="127.0.0.1", port=0)
    server.start()
    yield server, latest
    server.shutdown()


def _get(server: MetricsServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_http_probes_and_routing(server_and_latest, capfd):
    server, latest = server_and_latest
    assert _get(server, "/healthz")[::2] == (200, "ok")
    assert _get(server, "/readyz")[0] == 503
    latest["snap"] = _realistic_snapshot()
    assert _get(server, "/readyz")[0] == 200
    assert _get(server, "/nope")[0] == 404
    assert _get(server, "/")[0] == 404
    # No log line per request (house rule 14).
    assert capfd.readouterr() == ("", "")


def test_http_metrics(server_and_latest):
    server, latest = server_and_latest
    latest["snap"] = _realistic_snapshot()
    status, content_type, body = _get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert 'ksense_runqueue_latency_seconds_bucket{le="+Inf",node="worker-1"} 89832.0' in body
    assert "process_cpu_seconds_total" in body
    status, content_type, body = _get(server, "/metrics", {"Accept": "application/openmetrics-text"})
    assert (status, content_type.split(";")[0]) == (200, "application/openmetrics-text")
    assert body.endswith("# EOF\n")


def test_server_shutdown_is_idempotent_and_frees_the_port():
    collector = ExporterCollector(lambda: None)
    server = MetricsServer(
        make_registry(collector, process_metrics=False), collector.ready, host="127.0.0.1", port=0
    )
    server.shutdown()  # never started: nothing to do
    server.start()
    port = server.port
    server.shutdown()
    server.shutdown()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


# --- staleness (docs/design.md#scorer-inputs: an old sample must not look fresh) ------------------------------------
# Families that stay true while the sampler is stuck: what the exporter is and how it is doing.
KEPT_WHEN_STALE = {names.SOURCE_INFO.name, names.BPF_PROGRAM_ATTACHED.name, "ksense_csv_rows_written",
                   "ksense_csv_write_errors"}


def _exposed(collector: ExporterCollector) -> set[str]:
    text = generate_latest(make_registry(collector, process_metrics=False)).decode()
    return {fam.name for fam in text_string_to_metric_families(text)}


def test_a_live_reading_older_than_max_age_is_withheld_and_not_ready():
    snap = _realistic_snapshot()  # ebpf: raw.t is the tick's monotonic time
    now = {"t": snap.reading.raw.t + 3.0}
    collector = ExporterCollector(lambda: snap, csv_sinks=CSV_SINKS, max_age_s=3.0, clock=lambda: now["t"])
    assert collector.ready()
    assert names.FRICTION_RATE.name not in _exposed(collector)  # NaN: omitted anyway
    assert names.CPU_UTILIZATION.name in _exposed(collector)
    now["t"] += 0.001
    assert not collector.ready()
    assert _exposed(collector) == KEPT_WHEN_STALE


def test_replay_readings_carry_recorded_time_and_never_go_stale():
    live = _realistic_snapshot()
    replayed = Snapshot(node=live.node, source=names.SOURCE_REPLAY, reading=live.reading, derived=live.derived)
    collector = ExporterCollector(lambda: replayed, max_age_s=3.0, clock=lambda: live.reading.raw.t + 1e6)
    assert collector.ready()
    assert names.CPU_UTILIZATION.name in _exposed(collector)


def test_readyz_turns_503_when_the_reading_goes_stale():
    snap = _realistic_snapshot()
    now = {"t": snap.reading.raw.t}
    collector = ExporterCollector(lambda: snap, max_age_s=3.0, clock=lambda: now["t"])
    server = MetricsServer(make_registry(collector, process_metrics=False), collector.ready, host="127.0.0.1", port=0)
    server.start()
    try:
        assert _get(server, "/readyz")[0] == 200
        now["t"] += 10.0
        assert _get(server, "/readyz")[0] == 503
    finally:
        server.shutdown()


# --- series per node (docs/sizing.md#series-and-samples-per-node) -------------------------------
def _default_ebpf_snapshot() -> Snapshot:
    """An eBPF node with the defaults, every series it can have defined: every tracepoint of the
    loader attached, PSI on every resource, the baseline frozen, per-pod attribution on (its map
    and bookkeeping) with no pod to expose (pods add their own series: docs/sizing.md)."""
    zeros = np.zeros(histogram.NKEYS, dtype=np.int64)
    latency = (names.RUNQUEUE_LATENCY, names.DSTATE_DURATION, names.SOFTIRQ_NET_RX_DURATION)
    telemetry = Telemetry(
        histograms={f.name: histogram.to_export(zeros, 0) for f in latency},
        runqueue_max_seconds=0.001,
        runqueue_dropped_total=0,
        pressure={(r, k): 0.0 for r in names.PSI_RESOURCES for k in names.PSI_KINDS},
        pressure_available=dict.fromkeys(names.PSI_RESOURCES, True),
        attached=dict.fromkeys(loader.PROGRAMS, True),
        programs={label: ProgramStats(run_seconds=0.0, runs=0) for _, label in loader.PROGRAMS.values()},
        maps={m: MapStats(0, 1, 0) for m in ("runq_ts", "dstate_ts", "pod_keys")},
    )
    raw = dataclasses.replace(factories.raw_interval(), cpu_util=10.0, psi=1.0)
    derived = Derived(frozen=True, samples=300, warmup_remaining_s=0.0, friction=0.1, direction=1.0, df_dt=0.0,
                      energy=0.1, energy_w=5, energy_vol=0.1, energy_k=1.0)
    return Snapshot(
        node="worker-1",
        source=names.SOURCE_EBPF,
        reading=Reading(raw=raw, telemetry=telemetry, pods=PodsReport(capacity=256, cgroup_capacity=1024)),
        derived=derived,
        sample_duration=DurationHistogram(SAMPLE_DURATION_BOUNDS).snapshot(),
    )


def test_a_default_ebpf_node_serves_exactly_the_series_the_sizing_guide_states():
    # Both CSV files (kernel_metrics.csv, pod_metrics.csv) behind the queued writer: every reason.
    errors = {**dict.fromkeys(REASONS, 0), REASON_QUEUE_FULL: 0}
    sinks = {f: _StubSink(CsvStats(0, errors)) for f in (names.KERNEL_METRICS_CSV_NAME, names.POD_METRICS_CSV_NAME)}
    collector = ExporterCollector(_default_ebpf_snapshot, csv_sinks=sinks)
    text = generate_latest(make_registry(collector, process_metrics=True)).decode()
    wire, stored = factories.stated_series_per_node()
    assert len(_samples(text)) == wire
    assert stored == wire + 5  # up and the four scrape_* series
    assert wire + 5 <= 150  # issue 14's goal

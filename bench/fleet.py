"""A fleet of N synthetic nodes through a real Prometheus or a real VictoriaMetrics, read by the
real scorer and scheduler code: what ksense costs at 1,000 to 20,000 nodes (issue 14).

Nodes. Every node's series are what an eBPF exporter serves, rendered by the exporter's own
collector (exporter/sinks/prometheus.py: same names, labels, bucket layout, process_* and
python_info included) from the rows of the vendored real recording
(data/reference/kernel_metrics_real.csv.gz). Node i shows, at round k, the recorded row
`pool[(offset_i + k) % len(pool)]` (offset_i spreads the nodes over the recording): quiet nodes
cycle through the recording's quiet rows (frozen baseline, fuzzy score < the medium-low bound:
allowed), a share of stressed nodes through its stressed rows (score ≥ 70: denied at once), and
the stepped nodes show quiet rows until the step, stressed rows after it. The recording keeps
only summaries of each latency distribution (count, total, avg, p95, p99, max), so each row's
histogram is synthesised from them (80 % of the events at the average, 15 % at p95, 4 % at
p99, 1 % at the max; the exporter's own `histogram.key`/`to_export` place them), cumulative
over the recording like a real exporter's. With --pods N every node has N pods sharing its
recorded wait, D-state and CPU (`pods_report`), cut to the exporter's top-K plus `other`.

Feeding (--mode):
- `scrape`: the database scrapes N targets on loopback (one HTTP server, a `__metrics_path__`
  per node), each with its `node`, `namespace` and `instance` from the scrape config and
  honor_labels off, the exporter's own `node` label dropped — deploy/'s exporter job. Bounded by
  what one Python process can serve on a shared 2-core machine.
- `push`: every round, each node's exposition is POSTed in text format, the labels a scrape
  would attach added: to VictoriaMetrics' `/api/v1/import/prometheus`; to Prometheus through
  Debian's `vmagent` (same text import), which forwards it with Prometheus' remote-write
  protocol (snappy-compressed protobuf) to `--web.enable-remote-write-receiver`. Why vmagent
  and not a Python remote-write client: the Python side then stays the same for both
  databases, needs no new dependency (python-snappy, protobuf and generated message classes),
  and the CPU it costs is a maintained Go client's, measured (its RSS and CPU are reported).
  `promtool tsdb create-blocks-from openmetrics` only backfills blocks, which the head (where
  a live fleet's series and memory are) never sees, so it cannot measure a live fleet.

The scorer is `scorer.evaluator.Evaluator` over `PrometheusSource` (all its PromQL + the
controller: the full tick, as the scorer process runs it) ticking every --tick seconds; its
own exposition (`ScorerCollector`) is pushed to the database after each tick as the scorer's
scrape job would store it, and the scheduler's `PrometheusScores` reads the decisions from
there: one query per cycle, then `decide` for one pod over a NodeTable of the fleet's nodes
(bench/scheduler_decide.build_cluster's wire-format nodes), in a forked process of its own as
in a deployment (the feeding side too: neither holds the GIL the scorer's tick needs, nor the
reverse).

Figures per size and backend: series per node and samples/s per node (the database's own
counters), database RSS and CPU (its own process_* metrics; vmagent's beside it), the scorer's
full tick p50/p99, step change → deny as the scorer sees it and as the scheduler reads it
(from the moment the stressed sample reached the database: add up to one scrape interval for
a scraped node), the scheduler's score fetch and decision p50/p99 and decisions/s, and what
failed first. A least-squares line over the sizes gives the per-node slope. The machine is
shared (2 cores): each table also gives the scorer's in-process evaluate() for the same inputs
(no database) as a same-run baseline, and the ratio.

Run: .venv/bin/python -m bench.fleet [--sizes 1000,5000,10000] [--backends prometheus,victoriametrics]
     [--mode push|scrape] [--interval 5] [--tick 5] [--stressed 0.05] [--stepped 5]
Exits 0 when a goal is missed (the verdict says MISS), non-zero only when the harness fails.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gzip
import http.server
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import requests
import yaml
from prometheus_client import generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from bench._util import HarnessError, free_port, print_table, run_main
from common import names as n
from common.core.csvrow import parse_row
from common.core.durations import DurationHistogram
from common.core.model import Derived, ExportHistogram, RawInterval
from common.csvfile import REASON_QUEUE_FULL, REASONS, CsvStats
from common.metrics import make_registry
from common.names import LEVEL_HIGH
from exporter.bpf.loader import POD_NBUCKETS, PROGRAMS
from exporter.config import ExporterConfig
from exporter.core import histogram
from exporter.core import pods as core_pods
from exporter.core.model import MapStats, ProgramStats, Reading, Snapshot, Telemetry
from exporter.sampler import SAMPLE_DURATION_BOUNDS
from exporter.sinks.prometheus import ExporterCollector
from scheduler.core.choose import decide
from scheduler.core.filters import NodeTable, ScoreRecord, ScoreTable, node_info, pod_view
from scheduler.scores import PrometheusScores
from scorer.core import inference
from scorer.core import inputs as core_inputs
from scorer.core.decision import DecisionParams
from scorer.core.evaluate import evaluate
from scorer.core.model import Inputs
from scorer.evaluator import Evaluator
from scorer.metrics import ScorerCollector
from scorer.rulefile import load_rules
from scorer.sources.prometheus import QUERY_CONCURRENCY, TS_LABEL, PrometheusSource, tick_query, timestamped_query

REPO = Path(__file__).resolve().parent.parent
RECORDING = REPO / "data" / "reference" / "kernel_metrics_real.csv.gz"
PROMETHEUS = "prometheus"
VICTORIA = "victoriametrics"
BACKENDS = (PROMETHEUS, VICTORIA)
#: Placeholder for the node in a rendered row; replaced per node (push: plus the scrape's labels).
NODE_MARK = "@@node@@"
IMPORT_PATH = "/api/v1/import/prometheus"
PUSH_CHUNK = 250  # nodes per POST: bodies of a few MB
SCORER_INSTANCE = "ksense-scorer-0"

# Goals (issue 14).
GOAL_TICK_P99_S = 1.0
GOAL_STEP_S = 10.0
GOAL_DECIDE_P99_MS = 20.0
GOAL_SERIES_PER_NODE = 150


# --- the recording and its rows ------------------------------------------------------------------

def load_rows(path: Path = RECORDING) -> list[tuple[RawInterval, Derived]]:
    """Every data row of a kernel_metrics.csv(.gz), parsed by the exporter's own reader."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    return [parse_row(fields, i + 2) for i, fields in enumerate(rows[1:])]


def row_scores(rows: Sequence[tuple[RawInterval, Derived]]) -> np.ndarray:
    """The fuzzy score of each row with a frozen baseline and finite inputs; NaN elsewhere."""
    rb = load_rules()
    out = np.full(len(rows), np.nan)
    usable = [i for i, (raw, d) in enumerate(rows)
              if d.frozen and all(math.isfinite(v) for v in (d.friction, d.energy, raw.cpu_util, raw.psi))]
    signed = [rows[i][1].friction * (rows[i][1].direction if math.isfinite(rows[i][1].direction) else 1.0)
              for i in usable]
    out[usable] = inference.score(rb, signed, [rows[i][1].energy for i in usable],
                                  [rows[i][0].cpu_util for i in usable], [rows[i][0].psi for i in usable])
    return out


def pools(scores: np.ndarray, params: DecisionParams | None = None) -> tuple[list[int], list[int]]:
    """(quiet rows: scored below the medium-low bound, allowed; stressed rows: scored ≥ 70,
    denied at once)."""
    params = params or DecisionParams()
    quiet = [i for i, s in enumerate(scores) if s < params.medium_low_upper]
    stressed = [i for i, s in enumerate(scores) if s >= LEVEL_HIGH]
    if not quiet or not stressed:
        raise HarnessError(f"the recording has {len(quiet)} quiet and {len(stressed)} stressed rows: need both")
    return quiet, stressed


def _spread(count: int, avg_ms: float, points_ms: Sequence[tuple[float, float]]) -> np.ndarray:
    """One interval's kernel histogram keys: `count` events placed at (share, ms) points."""
    keys = np.zeros(histogram.NKEYS, dtype=np.int64)
    left = count
    for share, ms in points_ms:
        k = min(left, round(count * share))
        if k and math.isfinite(ms):
            keys[histogram.key(max(0, int(ms * 1000)))] += k
            left -= k
    if left and math.isfinite(avg_ms):
        keys[histogram.key(max(0, int(avg_ms * 1000)))] += left
    return keys


@dataclass(frozen=True)
class _CsvRows:
    """A CSV sink's health as the collector reads it."""

    value: CsvStats

    def stats(self) -> CsvStats:
        return self.value


#: Per-pod attribution is on by default; with --pods 0 only its bookkeeping series are exposed.
POD_CAPACITY = 256
#: A pod's run-queue waits, over the kernel's log2 buckets (1, 2, 4 ... µs): most within 8-64 µs.
POD_WAIT_SHAPE = np.array([0, 0, 1, 4, 10, 8, 4, 2, 1, 0.5, 0.2, 0.1] + [0] * (POD_NBUCKETS - 12))


def pods_report(pods: int, wait_s: float, dstate_s: float, cpu_s: float, psi: float) -> core_pods.PodsReport:
    """`pods` pods sharing a node's cumulative run-queue wait, D-state and CPU seconds and its PSI
    (pod j weighs 1/(j+1), so a few pods carry most), cut like the exporter's tracker: the top-K
    (ExporterConfig.pod_top_k) by wait exposed, the rest summed as `other`."""
    weights = 1 / np.arange(1, pods + 1)
    weights /= weights.sum() if pods else 1

    def series(uid: str, name: str, w: float) -> core_pods.PodSeries:
        waits = int(wait_s * w * 1e5)  # ≈ 10 µs a wait
        shape = POD_WAIT_SHAPE / POD_WAIT_SHAPE.sum()
        return core_pods.PodSeries(
            uid=uid, namespace="fleet" if name else "", name=name, wait_seconds=wait_s * w, waits=waits,
            dstate_seconds=dstate_s * w, dstate_episodes=int(dstate_s * w * 100),
            wait_buckets=core_pods.export_buckets(np.floor(shape * waits).astype(np.int64)),
            cpu_seconds=cpu_s * w, pressure={(res, kind): psi * w for res in n.PSI_RESOURCES for kind in n.PSI_KINDS})

    weight = {f"00000000-0000-4000-8000-{j:012d}": float(w) for j, w in enumerate(weights)}
    top, rest = core_pods.top_k(weight, ExporterConfig.pod_top_k)
    exposed = [series(uid, f"pod-{int(uid[-12:])}", weight[uid]) for uid in top]
    if rest:
        exposed.append(series(n.POD_UID_OTHER, "", sum(weight[uid] for uid in rest)))
    return core_pods.PodsReport(series=tuple(exposed), tracked=pods, capacity=POD_CAPACITY, cgroup_capacity=1024)

CSV_ERRORS = {**dict.fromkeys(REASONS, 0), REASON_QUEUE_FULL: 0}


class Exposition:
    """Each recorded row as the exporter's /metrics text (see the module docstring), rendered
    once by ExporterCollector and cached; `NODE_MARK` stands for the node."""

    def __init__(self, rows: Sequence[tuple[RawInterval, Derived]], pods: int = 0):
        self.rows = rows
        self.pods = pods
        runq = np.zeros((len(rows), histogram.NKEYS), dtype=np.int64)
        dstate = np.zeros_like(runq)
        softirq = np.zeros_like(runq)
        sums = np.zeros((len(rows), 3), dtype=np.int64)
        for i, (raw, _) in enumerate(rows):
            c = raw.sched_count or 0
            runq[i] = _spread(c, raw.sched_avg_ms, ((0.15, raw.sched_p95_ms), (0.04, raw.sched_p99_ms),
                                                    (0.01, raw.sched_max_ms)))
            for target, count, total in ((dstate, raw.dstate_count, raw.dstate_total_ms),
                                         (softirq, raw.softirq_count, raw.softirq_total_ms)):
                count = count or 0
                target[i] = _spread(count, total / count if count and math.isfinite(total) else math.nan, ())
            for col, total in enumerate((raw.sched_total_ms, raw.dstate_total_ms, raw.softirq_total_ms)):
                sums[i, col] = int(total * 1e6) if math.isfinite(total) else 0
        # Cumulative since the start of the recording, like the kernel's counters.
        self._cum = [np.cumsum(a, axis=0) for a in (runq, dstate, softirq)]
        self._sums = np.cumsum(sums, axis=0)
        self._cache: dict[int, str] = {}
        self._push_cache: dict[int, str] = {}
        self._lock = threading.Lock()

    def _snapshot(self, i: int) -> Snapshot:
        raw, derived = self.rows[i]
        families = (n.RUNQUEUE_LATENCY.name, n.DSTATE_DURATION.name, n.SOFTIRQ_NET_RX_DURATION.name)
        hists = {name: histogram.to_export(self._cum[j][i], int(self._sums[i, j])) for j, name in enumerate(families)}
        psi = raw.psi / 100 if math.isfinite(raw.psi) else 0.0
        pressure = {(res, kind): (psi if res == "cpu" else psi / 4) * (1.0 if kind == "some" else 0.5)
                    for res in n.PSI_RESOURCES for kind in n.PSI_KINDS}
        telemetry = Telemetry(
            histograms=hists,
            runqueue_max_seconds=raw.sched_max_ms / 1000,
            runqueue_dropped_total=0,
            pressure=pressure,
            pressure_available=dict.fromkeys(n.PSI_RESOURCES, True),
            attached=dict.fromkeys(PROGRAMS, True),
            programs={label: ProgramStats(run_seconds=(i + 1) * 2e-4, runs=(i + 1) * 5000)
                      for _, label in PROGRAMS.values()},
            maps={m: MapStats(entries=40, capacity=10240, update_failures=0)
                  for m in ("runq_ts", "dstate_ts", "pod_keys")},
        )
        durations = DurationHistogram(SAMPLE_DURATION_BOUNDS)
        for _ in range(min(i + 1, 3)):
            durations.observe(0.0008)
        sample = ExportHistogram(buckets=tuple((le, c * (i + 1) // min(i + 1, 3)) for le, c
                                               in durations.snapshot().buckets), sum_seconds=0.0008 * (i + 1))
        # A recording keeps no warm-up column; a live exporter exports 0 once frozen.
        derived = dataclasses.replace(derived, warmup_remaining_s=0.0 if derived.frozen else 300.0)
        report = pods_report(self.pods, self._sums[i, 0] / 1e9, self._sums[i, 1] / 1e9, (i + 1) * 5.0 * 2, psi)
        return Snapshot(node=NODE_MARK, source=n.SOURCE_EBPF, reading=Reading(raw, telemetry, pods=report),
                        derived=derived, sample_duration=sample)

    def text(self, i: int) -> str:
        got = self._cache.get(i)
        if got is None:
            snap = self._snapshot(i)
            # Both CSV sinks are on by default: rows and every error reason, zero, of each.
            csv = {name: _CsvRows(CsvStats(rows_written=i + 1, errors=CSV_ERRORS))
                   for name in (n.KERNEL_METRICS_CSV_NAME, n.POD_METRICS_CSV_NAME)}
            registry = make_registry(ExporterCollector(lambda: snap, csv_sinks=csv))
            got = generate_latest(registry).decode()
            with self._lock:
                self._cache[i] = got
        return got

    def push_text(self, i: int) -> str:
        got = self._push_cache.get(i)
        if got is None:
            got = self._push_cache[i] = push_template(self.text(i))
        return got


def series_per_node(text: str) -> int:
    """Sample lines in one node's exposition (comments excluded)."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


# --- the fleet -------------------------------------------------------------------------------

@dataclass
class Fleet:
    """Who shows which row when (module docstring). Nodes [0, stressed) are stressed, the
    next `stepped` are stepped at `step_round` (None: not yet), the rest are quiet."""

    names: Sequence[str]
    expo: Exposition
    quiet: Sequence[int]
    stressed_rows: Sequence[int]
    stressed: int
    stepped: int
    step_round: int | None = None
    offsets: Sequence[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(14)
        self.offsets = [rng.randrange(1 << 30) for _ in self.names]

    @property
    def stepped_names(self) -> list[str]:
        return list(self.names[self.stressed:self.stressed + self.stepped])

    @property
    def stressed_names(self) -> list[str]:
        return list(self.names[:self.stressed])

    def row(self, i: int, k: int) -> int:
        stressed = i < self.stressed or (
            i < self.stressed + self.stepped and self.step_round is not None and k >= self.step_round)
        pool = self.stressed_rows if stressed else self.quiet
        return pool[(self.offsets[i] + k) % len(pool)]

    def text(self, i: int, k: int) -> str:
        return self.expo.text(self.row(i, k))

    def push_text(self, i: int, k: int) -> str:
        return self.expo.push_text(self.row(i, k))


def make_fleet(names: Sequence[str], *, stressed_share: float, stepped: int, rows_per_pool: int | None = None,
               pods: int = 0) -> Fleet:
    """The fleet over the real recording, `pods` pods per node (`pods_report`); `rows_per_pool`
    keeps only that many rows of each pool, evenly spread (fewer renderings: a test's server
    then answers at once), and renders them now."""
    rows = load_rows()
    quiet, stressed = pools(row_scores(rows))
    if rows_per_pool is not None:
        quiet, stressed = (p[::max(1, len(p) // rows_per_pool)][:rows_per_pool] for p in (quiet, stressed))
    count = round(len(names) * stressed_share)
    fleet = Fleet(names, Exposition(rows, pods), quiet, stressed, stressed=count,
                  stepped=min(stepped, len(names) - count))
    if rows_per_pool is not None:
        for i in (*quiet, *stressed):
            fleet.expo.text(i)
    return fleet


def node_names(count: int) -> list[str]:
    return [f"fleet-{i:05d}" for i in range(count)]


# --- feeding: push ---------------------------------------------------------------------------

def scrape_labels(node: str, job: str = n.JOB_EXPORTER) -> str:
    """What the exporter scrape job attaches to a node's series (deploy/), as label text."""
    return f'{n.LABEL_NODE}="{node}",instance="{node}:9860",{n.LABEL_JOB}="{job}",{n.LABEL_NAMESPACE}="{n.NAMESPACE}"'


LABELS_MARK = "@@labels@@"


def push_template(text: str) -> str:
    """`text` with the scrape's labels (LABELS_MARK) on every sample line: in place of the
    exposition's own `node` (a scrape with honor_labels off drops it for the target's), and
    added to the lines without one (process_*, python_info)."""
    own = f'{n.LABEL_NODE}="{NODE_MARK}"'
    out = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#") and line.strip():
            if own in line:
                line = line.replace(own, LABELS_MARK)
            elif "{" in line:
                line = line.replace("{", "{" + LABELS_MARK + ",", 1)
            else:
                name, rest = line.split(" ", 1)
                line = f"{name}{{{LABELS_MARK}}} {rest}"
        out.append(line)
    return "".join(out)


def push_body(fleet: Fleet, indices: Sequence[int], k: int) -> bytes:
    return "".join(fleet.push_text(i, k).replace(LABELS_MARK, scrape_labels(fleet.names[i]))
                   for i in indices).encode()


class Pusher:
    """POSTs rounds of the fleet's expositions to a text import endpoint; `push(k)` returns
    when the round is accepted. Stepped nodes go first, so the step's arrival time is exact."""

    def __init__(self, url: str, fleet: Fleet, *, session: requests.Session | None = None):
        self.url = url.rstrip("/") + IMPORT_PATH
        self.fleet = fleet
        self.session = session or requests.Session()

    def push(self, k: int) -> float:
        """Push round k; returns when the stepped nodes' samples were accepted (monotonic)."""
        f = self.fleet
        first = list(range(f.stressed, f.stressed + f.stepped))
        order = first + [i for i in range(len(f.names)) if not f.stressed <= i < f.stressed + f.stepped]
        stepped_at = time.monotonic()
        for start in range(0, len(order), PUSH_CHUNK):
            chunk = order[start:start + PUSH_CHUNK]
            resp = self.session.post(self.url, data=push_body(f, chunk, k), timeout=60)
            if resp.status_code >= 300:
                raise HarnessError(f"import answered {resp.status_code}: {resp.text[:200]}")
            if start == 0:
                stepped_at = time.monotonic()
        return stepped_at


def push_text(url: str, text: str, job: str, instance: str) -> None:
    """One component's exposition (the scorer's) as its scrape job would store it."""
    params = [("extra_label", f"{n.LABEL_JOB}={job}"), ("extra_label", f"{n.LABEL_NAMESPACE}={n.NAMESPACE}"),
              ("extra_label", f"instance={instance}")]
    resp = requests.post(url.rstrip("/") + IMPORT_PATH, params=params, data=text.encode(), timeout=30)
    if resp.status_code >= 300:
        raise HarnessError(f"import answered {resp.status_code}: {resp.text[:200]}")


# --- feeding: scrape -------------------------------------------------------------------------

class PathServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering GET with a text exposition per path
    (`lookup`; `paths` maps fixed paths to body functions), 404 for anything else."""

    def __init__(self, paths: Mapping[str, Callable[[], bytes]] | None = None, *, port: int = 0,
                 name: str = "bench-http"):
        self.paths = dict(paths or {})
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = server.lookup(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=name, daemon=True)

    def lookup(self, path: str) -> bytes | None:
        body = self.paths.get(path)
        return None if body is None else body()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ScrapeServer(PathServer):
    """Serves node i's exposition at /nodes/<i>/metrics, round k = whole `interval_s` since
    start, and the `extra` paths (e.g. a scorer's /metrics); threads per connection (the
    database keeps connections alive)."""

    def __init__(self, fleet: Fleet, interval_s: float, port: int = 0,
                 extra: Mapping[str, Callable[[], bytes]] | None = None):
        super().__init__(extra, port=port, name="fleet-scrape")
        self.fleet = fleet
        self.interval_s = interval_s
        self.t0 = time.monotonic()
        self.stepped_at: float | None = None  # first request served a stepped node's stressed row

    def lookup(self, path: str) -> bytes | None:
        if (body := super().lookup(path)) is not None:
            return body
        m = re.fullmatch(r"/nodes/(\d+)/metrics", path)
        if m is None or int(m.group(1)) >= len(self.fleet.names):
            return None
        return self.body(int(m.group(1)))

    def round(self) -> int:
        return int((time.monotonic() - self.t0) // self.interval_s)

    def body(self, i: int) -> bytes:
        k = self.round()
        f = self.fleet
        if (self.stepped_at is None and f.step_round is not None and k >= f.step_round
                and f.stressed <= i < f.stressed + f.stepped):
            self.stepped_at = time.monotonic()
        return f.text(i, k).encode()


def exporter_scrape_job(fleet: Fleet, port: int) -> dict:
    """deploy/'s exporter job over the fleet: per-target node/namespace/instance, honor_labels
    off, the exposition's own node label dropped."""
    return {
        "job_name": n.JOB_EXPORTER,
        "honor_labels": False,
        "static_configs": [
            {"targets": [f"127.0.0.1:{port}"],
             "labels": {"__metrics_path__": f"/nodes/{i}/metrics", n.LABEL_NODE: name,
                        n.LABEL_NAMESPACE: n.NAMESPACE, "instance": f"{name}:9860"}}
            for i, name in enumerate(fleet.names)
        ],
        "metric_relabel_configs": [{"action": "labeldrop", "regex": f"exported_{n.LABEL_NODE}"}],
    }


def scorer_scrape_job(port: int, path: str = "/scorer/metrics") -> dict:
    """The scorer's scrape job (job and namespace from the scrape, its own per-node `node`)."""
    return {"job_name": n.JOB_SCORER, "honor_labels": False, "metrics_path": path,
            "static_configs": [{"targets": [f"127.0.0.1:{port}"],
                                "labels": {n.LABEL_NAMESPACE: n.NAMESPACE, "instance": SCORER_INSTANCE}}]}


def scrape_config(jobs: Sequence[Mapping], interval_s: float, rule_files: Sequence[Path] = ()) -> str:
    """A scrape config both databases read (VictoriaMetrics refuses unknown fields, so
    `evaluation_interval` and `rule_files`, Prometheus-only, only come with `rule_files`)."""
    config: dict = {"global": {"scrape_interval": f"{interval_s:g}s", "scrape_timeout": f"{interval_s:g}s"},
                    "scrape_configs": [dict(j) for j in jobs]}
    if rule_files:
        config["global"]["evaluation_interval"] = f"{interval_s:g}s"
        config["rule_files"] = [str(p) for p in rule_files]
    return yaml.safe_dump(config, sort_keys=False)


# --- databases -------------------------------------------------------------------------------

@dataclass
class Server:
    """A process we started; stopped by its PID."""

    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check(self) -> None:
        if self.proc.poll() is not None:
            log = self.log.read_text(errors="replace")[-1500:]
            raise HarnessError(f"{self.name} exited {self.proc.returncode}: {log}")


def _spawn(name: str, cmd: Sequence[str], workdir: Path, port: int, ready_path: str, deadline_s: float = 60) -> Server:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(name, proc, f"http://127.0.0.1:{port}", log)
    end = time.monotonic() + deadline_s
    while True:
        server.check()
        with contextlib.suppress(requests.RequestException):
            if requests.get(server.url + ready_path, timeout=1).status_code == 200:
                return server
        if time.monotonic() > end:
            server.stop()
            raise HarnessError(f"{name} not ready after {deadline_s:g}s: {log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.1)


def binary(name: str) -> str | None:
    path = f"/usr/bin/{name}"
    return path if os.access(path, os.X_OK) else shutil.which(name)


def start_prometheus(workdir: Path, config_text: str, *, receiver: bool, port: int | None = None) -> Server:
    """Debian's Prometheus with `config_text`, the remote-write receiver on when `receiver`."""
    exe = binary("prometheus")
    if exe is None:
        raise HarnessError("needs /usr/bin/prometheus (Debian package prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(config_text)
    port = port or free_port()
    cmd = [exe, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    if receiver:
        cmd.append("--web.enable-remote-write-receiver")
    return _spawn("prometheus", cmd, workdir, port, "/-/ready")


#: VictoriaMetrics hides samples younger than -search.latencyOffset (default 30 s) from queries
#: near now: with it, the scorer would decide on 30-s-old inputs. ksense needs 0s (docs/sizing.md).
VM_FLAGS = ("-search.latencyOffset=0s",)


def start_victoria(workdir: Path, config_text: str | None, *, port: int | None = None) -> Server:
    """Debian's victoria-metrics single node, scraping `config_text` when given."""
    exe = binary("victoria-metrics")
    if exe is None:
        raise HarnessError("needs /usr/bin/victoria-metrics (Debian package victoria-metrics)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [exe, f"-storageDataPath={workdir / 'vmdata'}", f"-httpListenAddr=127.0.0.1:{port}",
           "-loggerLevel=ERROR", *VM_FLAGS]
    if config_text is not None and yaml.safe_load(config_text).get("scrape_configs"):
        (workdir / "scrape.yml").write_text(config_text)
        cmd.append(f"-promscrape.config={workdir / 'scrape.yml'}")
    return _spawn("victoria-metrics", cmd, workdir, port, "/health")


def start_vmagent(workdir: Path, remote_write_url: str, *, port: int | None = None) -> Server:
    """Debian's vmagent accepting text imports and remote-writing them to `remote_write_url`."""
    exe = binary("vmagent")
    if exe is None:
        raise HarnessError("needs /usr/bin/vmagent (Debian package victoria-metrics)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [exe, f"-httpListenAddr=127.0.0.1:{port}", f"-remoteWrite.url={remote_write_url}",
           f"-remoteWrite.tmpDataPath={workdir / 'vmagent-queue'}", "-remoteWrite.flushInterval=200ms",
           "-loggerLevel=ERROR"]
    return _spawn("vmagent", cmd, workdir, port, "/health")


@dataclass(frozen=True)
class ProcStats:
    """A process's own metrics: RSS (bytes), CPU seconds, samples ingested, active series."""

    rss: float
    cpu_s: float
    samples: float
    series: float


def _families(url: str) -> dict[str, float]:
    text = requests.get(url.rstrip("/") + "/metrics", timeout=30).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


def db_stats(backend: str, url: str) -> ProcStats:
    m = _families(url)
    if backend == PROMETHEUS:
        appended = sum(v for k, v in m.items() if k.startswith("prometheus_tsdb_head_samples_appended_total"))
        return ProcStats(m["process_resident_memory_bytes"], m["process_cpu_seconds_total"], appended,
                         m["prometheus_tsdb_head_series"])
    rows = sum(v for k, v in m.items() if k.startswith("vm_rows_inserted_total"))
    active = m.get('vm_cache_entries{type="storage/hour_metric_ids"}', math.nan)
    return ProcStats(m["process_resident_memory_bytes"], m["process_cpu_seconds_total"], rows, active)


def agent_stats(url: str) -> ProcStats:
    m = _families(url)
    return ProcStats(m["process_resident_memory_bytes"], m["process_cpu_seconds_total"], math.nan, math.nan)


def instant(url: str, query: str) -> list[dict]:
    try:
        body = requests.get(url.rstrip("/") + "/api/v1/query", params={"query": query}, timeout=30).json()
    except (requests.RequestException, ValueError):
        return []
    return body.get("data", {}).get("result", []) if body.get("status") == "success" else []


def count_of(url: str, query: str) -> int:
    got = instant(url, f"count({query})")
    return int(float(got[0]["value"][1])) if got else 0


def wait_until(predicate: Callable[[], object], deadline_s: float, what: str, check: Callable[[], None] = lambda: None,
               poll_s: float = 0.25) -> object:
    end = time.monotonic() + deadline_s
    while True:
        check()
        got = predicate()
        if got:
            return got
        if time.monotonic() > end:
            raise HarnessError(f"timed out after {deadline_s:g}s waiting for {what}")
        time.sleep(poll_s)


# --- the scorer and the scheduler on the database ---------------------------------------------

class LegacySource(PrometheusSource):
    """The scorer's source as it read before the compact tick query (--legacy-queries, and the
    same-run comparison): per signal, every series with its own timestamp (`timestamped_query`,
    ≈ 2 × 170 bytes per node), paired per series in Python."""

    def _read(self, signal: str, at: float) -> dict:
        return core_inputs.split_timestamped(
            self.client.query(timestamped_query(self.selectors[signal]), at), TS_LABEL)


class ScorerOnDb:
    """The scorer's Evaluator over PrometheusSource(url) (LegacySource when `legacy`). Its
    exposition (`metrics()`) reaches the database as job ksense-scorer: scraped (served by the
    ScrapeServer) or, when `push_url` is given, pushed after each tick (to the database, or to
    vmagent in front of Prometheus)."""

    def __init__(self, query_url: str, push_url: str | None, *, long_win_s: float, interval_s: float,
                 legacy: bool = False, concurrency: int = QUERY_CONCURRENCY):
        self.source = (LegacySource if legacy else PrometheusSource)(query_url, long_win_s=long_win_s, timeout_s=30.0,
                                                                     concurrency=concurrency)
        self.evaluator = Evaluator(self.source, load_rules(), DecisionParams(), interval_s=interval_s,
                                   max_age_s=max(60.0, 3 * interval_s))
        self.registry = make_registry(ScorerCollector(self.evaluator), process_metrics=False)
        self.push_url = push_url
        self.durations: list[float] = []
        self.denied_at: dict[str, float] = {}

    def tick(self) -> dict[str, str]:
        start = time.monotonic()
        results = self.evaluator.tick()
        self.durations.append(time.monotonic() - start)
        done = time.monotonic()
        decisions = {node: r.decision for node, r in results.reports.items()}
        for node, d in decisions.items():
            if d == n.DECISION_DENY:
                self.denied_at.setdefault(node, done)
        if self.push_url is not None:
            push_text(self.push_url, self.metrics().decode(), n.JOB_SCORER, SCORER_INSTANCE)
        return decisions

    def metrics(self) -> bytes:
        return generate_latest(self.registry)


def scheduler_nodes(names: Sequence[str]) -> list[dict]:
    """Wire-format nodes (bench/scheduler_decide's realistic cluster) renamed to the fleet's nodes."""
    from bench.scheduler_decide import build_cluster

    nodes, _, _ = build_cluster(len(names), random.Random(5000))
    for node, name in zip(nodes, names, strict=True):
        node["metadata"]["name"] = name
        node["metadata"]["labels"]["kubernetes.io/hostname"] = name
    return nodes


PLAIN_POD = {"metadata": {"name": "web", "namespace": "default", "uid": "u-web"},
             "spec": {"schedulerName": n.SCHEDULER_NAME_DEFAULT,
                      "containers": [{"name": "app", "image": "app:1",
                                      "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}


@dataclass
class SchedulerOnDb:
    """The scheduler's score source on the database + `decide` for a plain pod over the fleet."""

    url: str
    names: Sequence[str]
    long_win_s: float
    fetch_ms: list[float] = field(default_factory=list)
    table_ms: list[float] = field(default_factory=list)  # the ScoreTable, built once per fetch
    decide_ms: list[float] = field(default_factory=list)  # one pod's decision over that table
    denied_at: dict[str, float] = field(default_factory=dict)
    chosen: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # chosen though not allowed in that cycle

    def __post_init__(self) -> None:
        self.scores = PrometheusScores(self.url, long_win_s=self.long_win_s, timeout_s=30.0)
        self.table = NodeTable.build([node_info(x) for x in scheduler_nodes(self.names)])
        self.pod = pod_view(PLAIN_POD)

    def cycle(self) -> Mapping[str, ScoreRecord]:
        t0 = time.perf_counter()
        fetched = self.scores.fetch()
        t1 = time.perf_counter()
        table = ScoreTable(fetched.records)
        t2 = time.perf_counter()
        decision = decide(self.pod, self.table, table)
        t3 = time.perf_counter()
        self.fetch_ms.append((t1 - t0) * 1e3)
        self.table_ms.append((t2 - t1) * 1e3)
        self.decide_ms.append((t3 - t2) * 1e3)
        now = time.monotonic()
        for node, rec in fetched.records.items():
            if not rec.allowed:
                self.denied_at.setdefault(node, now)
        if decision.node is not None:
            self.chosen.append(decision.node)
            chosen = fetched.records.get(decision.node)
            if chosen is None or not chosen.allowed:
                self.violations.append(decision.node)
        return fetched.records


SCHEDULER_FIGURES = ("fetch_ms", "table_ms", "decide_ms", "denied_at", "chosen", "violations")


class SchedulerProcess:
    """The scheduler's loop (a score fetch and a decide every `every_s`) in a forked child, as a
    deployment runs it: in a process of its own. In the scorer's process, the tick's JSON decoding
    and controller held the GIL its decisions waited for (a cycle's table and decision p99
    31–313 ms at 5,000–10,000 nodes, against ≈ 7 ms alone at 10,000). `stepped_denied` says
    when it has read every stepped node's deny; `stop()` returns the child's SchedulerOnDb
    figures."""

    def __init__(self, scheduler: SchedulerOnDb, stepped: Sequence[str], every_s: float):
        ctx = multiprocessing.get_context("fork")
        self._scheduler, self._stepped, self._every_s = scheduler, tuple(stepped), every_s
        self._stop = ctx.Event()
        self._stepped_denied = ctx.Event()
        self._receive, self._send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=self._run, name="fleet-scheduler", daemon=True)

    def start(self) -> None:
        self._proc.start()

    @property
    def stepped_denied(self) -> bool:
        return self._stepped_denied.is_set()

    def stop(self) -> SchedulerOnDb:
        """Stop the child and return its figures (the parent's object when it never started)."""
        if self._proc.pid is None or self._stop.is_set():
            return self._scheduler
        self._stop.set()
        if self._receive.poll(60):
            for name, value in self._receive.recv().items():
                setattr(self._scheduler, name, value)
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        return self._scheduler

    def _run(self) -> None:
        scheduler = self._scheduler
        try:
            while not self._stop.is_set():
                with contextlib.suppress(requests.RequestException):
                    scheduler.cycle()
                if all(x in scheduler.denied_at for x in self._stepped):
                    self._stepped_denied.set()
                self._stop.wait(self._every_s)
        finally:
            self._send.send({name: getattr(scheduler, name) for name in SCHEDULER_FIGURES})


# --- one measurement ---------------------------------------------------------------------------

def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Result:
    backend: str
    nodes: int
    mode: str
    series_per_node: float = math.nan  # stored, the pods' included
    pod_series_per_node: int = 0  # of those, a node's pods' (--pods)
    samples_per_node_s: float = math.nan
    db_rss_mib: float = math.nan
    db_cpu_pct: float = math.nan
    agent_rss_mib: float = math.nan
    agent_cpu_pct: float = math.nan
    push_s: float = math.nan
    tick_p50_s: float = math.nan
    tick_p99_s: float = math.nan
    tick_quiet_s: float = math.nan  # median tick with the feeding paused
    tick_quiet_new_s: float = math.nan  # the same, the scorer as shipped (alternating with the two below)
    tick_quiet_sequential_s: float = math.nan  # the same, one request at a time (concurrency 1)
    tick_quiet_legacy_s: float = math.nan  # the same, one at a time, the per-series query it replaced
    tick_quiet_all_pods_s: float = math.nan  # the same plus the 3 queries over every node's pods (--pods)
    stages: dict = field(default_factory=dict)  # --stages: path -> stage -> seconds per tick
    evaluate_ms: float = math.nan
    step_scorer_s: float = math.nan
    step_scheduler_s: float = math.nan
    fetch_p50_ms: float = math.nan
    fetch_p99_ms: float = math.nan
    table_p99_ms: float = math.nan  # the scheduler's ScoreTable per fetch
    decide_p50_ms: float = math.nan
    decide_p99_ms: float = math.nan
    decisions_per_s: float = math.nan
    scored: int = 0
    broke: str = ""


FEEDER_NICE = 19


class FeederProcess:
    """The feeding side (push rounds, or the scrape server) in a forked child process at the
    lowest priority (FEEDER_NICE), so that rendering and pushing never hold the GIL nor take the
    CPU the measured scorer, scheduler and database need. The
    parent steps the fleet through `step()`; the child reports back the step's arrival time
    (monotonic, shared by both processes), the rounds pushed and their duration, or an error."""

    def __init__(self, fleet: Fleet, *, mode: str, interval_s: float, push_url: str | None):
        ctx = multiprocessing.get_context("fork")
        self.fleet, self.mode, self.interval_s, self.push_url = fleet, mode, interval_s, push_url
        self.port = free_port() if mode == "scrape" else None
        self._step_round = ctx.Value("l", -1)
        self._stepped_at = ctx.Value("d", math.nan)
        self._round = ctx.Value("l", 0)
        self._push_s = ctx.Value("d", 0.0)
        self._pushes = ctx.Value("l", 0)
        self._paused = ctx.Value("l", 0)
        self._errors = ctx.Queue()
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=self._run, name="fleet-feeder", daemon=True)

    def start(self) -> None:
        self._proc.start()

    def stop(self) -> None:
        self._stop.set()
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()

    def pause(self) -> None:
        """Stop feeding (push: no more rounds; scrape: the server keeps answering)."""
        self._paused.value = 1

    def step(self) -> None:
        """Stepped nodes show stressed rows from the next round on."""
        self._step_round.value = self._round.value + 1

    @property
    def stepped_at(self) -> float | None:
        v = self._stepped_at.value
        return None if math.isnan(v) else v

    @property
    def push_s(self) -> float:
        return self._push_s.value / self._pushes.value if self._pushes.value else math.nan

    def check(self) -> None:
        if not self._errors.empty():
            raise HarnessError(f"feeder: {self._errors.get()}")
        if self._proc.exitcode not in (None, 0):
            raise HarnessError(f"feeder exited {self._proc.exitcode}")

    def _sync(self) -> None:
        v = self._step_round.value
        self.fleet.step_round = v if v >= 0 else None

    def _run(self) -> None:
        # The feeding stands for N other machines: on this one it takes only the CPU the
        # measured parts (database, scorer, scheduler) leave; samples/s per node shows a lag.
        os.nice(FEEDER_NICE)
        try:
            if self.mode == "scrape":
                self._serve()
            else:
                self._push()
        except Exception as exc:  # reported to the parent, which fails the measurement
            self._errors.put(f"{type(exc).__name__}: {exc}")

    def _serve(self) -> None:
        feeder = self

        class Server(ScrapeServer):
            def body(self, i: int) -> bytes:
                feeder._sync()
                feeder._round.value = self.round()
                out = super().body(i)
                if self.stepped_at is not None and feeder.stepped_at is None:
                    feeder._stepped_at.value = self.stepped_at
                return out

        assert self.port is not None, "scrape mode has a port"
        server = Server(self.fleet, self.interval_s, port=self.port)
        server.start()
        self._stop.wait()
        server.stop()

    def _push(self) -> None:
        assert self.push_url is not None, "push mode has a URL"
        pusher = Pusher(self.push_url, self.fleet)
        next_at = time.monotonic()
        k = 0
        while not self._stop.is_set():
            self._sync()
            if self._paused.value:
                self._stop.wait(0.1)
                continue
            t = time.monotonic()
            at = pusher.push(k)
            self._push_s.value += time.monotonic() - t
            self._pushes.value += 1
            if self.fleet.step_round is not None and k >= self.fleet.step_round and self.stepped_at is None:
                self._stepped_at.value = at
            k += 1
            self._round.value = k
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def measure(backend: str, size: int, args: argparse.Namespace, workdir: Path) -> Result:
    """One backend at one size: start, feed, tick, step, read figures, stop."""
    result = Result(backend, size, args.mode)
    fleet = make_fleet(node_names(size), stressed_share=args.stressed, stepped=args.stepped, pods=args.pods)
    result.pod_series_per_node = series_per_node(fleet.text(0, 0)) - series_per_node(
        Exposition(fleet.expo.rows).text(fleet.row(0, 0)))
    started: list[Server] = []
    feeder: FeederProcess | None = None
    sched_process: SchedulerProcess | None = None
    scorer_http = None
    stop = threading.Event()
    try:
        if args.mode == "scrape":
            feeder = FeederProcess(fleet, mode="scrape", interval_s=args.interval, push_url=None)
            scorer_port = free_port()
            assert feeder.port is not None
            config = scrape_config([exporter_scrape_job(fleet, feeder.port),
                                    scorer_scrape_job(scorer_port, "/metrics")], args.interval)
        else:
            config = scrape_config([], args.interval)
        if backend == PROMETHEUS:
            db = start_prometheus(workdir / "prom", config, receiver=True)
            started.append(db)
            agent = start_vmagent(workdir / "agent", db.url + "/api/v1/write")
            started.append(agent)
            push_url = agent.url
        else:
            db = start_victoria(workdir / "vm", config)
            started.append(db)
            agent, push_url = None, db.url
        if feeder is None:
            feeder = FeederProcess(fleet, mode="push", interval_s=args.interval, push_url=push_url)
        feeder.start()

        def check() -> None:
            for server in started:
                server.check()
            feeder.check()

        long_win_s = max(60.0, 3 * args.interval)
        scorer = ScorerOnDb(db.url, push_url if args.mode == "push" else None,
                            long_win_s=long_win_s, interval_s=args.tick, legacy=args.legacy_queries)
        if args.mode == "scrape":
            scorer_http, _ = start_http_server(scorer_port, "127.0.0.1", registry=scorer.registry)
        selector = f'{n.FRICTION.name}{{{n.EXPORTER_SELECTOR}}}'
        wait_until(lambda: count_of(db.url, selector) >= size, args.settle, f"{size} nodes in {backend}",
                   check)
        scheduler = SchedulerOnDb(db.url, fleet.names, long_win_s=max(60.0, 3 * args.tick))
        stats0, t_stats0 = db_stats(backend, db.url), time.monotonic()
        agent0 = agent_stats(agent.url) if agent else None

        sched_process = SchedulerProcess(scheduler, fleet.stepped_names, args.scheduler_every)
        tick_no = 0
        # Tick at least --ticks times; after that, until the scorer denied every stepped node
        # (at most 6 more ticks: a miss then shows as "-").
        while tick_no < args.ticks or (
                tick_no < args.ticks + 6 and not all(x in scorer.denied_at for x in fleet.stepped_names)):
            t = time.monotonic()
            decisions = scorer.tick()
            result.scored = sum(1 for node in fleet.names if node in decisions)
            if tick_no == 1:
                sched_process.start()
            if tick_no == args.ticks // 3 and fleet.stepped:
                feeder.step()
            check()
            tick_no += 1
            stop.wait(max(0.0, args.tick - (time.monotonic() - t)))
        # The same tick with the feeding paused (the inputs stay fresh for long_win_s): the
        # query cost without this machine's ingest competing for its two cores.
        feeder.pause()
        quiet = []
        for _ in range(3):
            t = time.monotonic()
            scorer.tick()
            quiet.append(time.monotonic() - t)
        result.tick_quiet_s = statistics.median(quiet)
        # The scorer as shipped, one request at a time and the legacy query, alternating on the
        # same data: the same-run ratios.
        quiet_scorers = {
            "new": ScorerOnDb(db.url, None, long_win_s=long_win_s, interval_s=args.tick),
            "sequential": ScorerOnDb(db.url, None, long_win_s=long_win_s, interval_s=args.tick, concurrency=1),
            "legacy": ScorerOnDb(db.url, None, long_win_s=long_win_s, interval_s=args.tick, legacy=True,
                                 concurrency=1),
        }
        if args.pods:
            quiet_scorers["all_pods"] = ScorerOnDb(db.url, None, long_win_s=long_win_s, interval_s=args.tick)
        paused: dict[str, list[float]] = {variant: [] for variant in quiet_scorers}
        for _ in range(3):
            for variant, other in quiet_scorers.items():
                t = time.monotonic()
                other.tick()
                if variant == "all_pods":  # plus the 3 queries over every node's pods each tick sent before
                    every = core_inputs.pod_queries(n.EXPORTER_SELECTOR, None).values()
                    with ThreadPoolExecutor(len(every)) as pool:
                        list(pool.map(other.source.client.query, every, [time.time()] * len(every)))
                paused[variant].append(time.monotonic() - t)
        result.tick_quiet_new_s = statistics.median(paused["new"])
        result.tick_quiet_sequential_s = statistics.median(paused["sequential"])
        result.tick_quiet_legacy_s = statistics.median(paused["legacy"])
        if args.pods:
            result.tick_quiet_all_pods_s = statistics.median(paused["all_pods"])
        if args.stages:
            result.stages = tick_stages(db.url, long_win_s)
        # Wait for the scheduler to see the stepped nodes (bounded), then stop everything.
        with contextlib.suppress(HarnessError):
            wait_until(lambda: sched_process.stepped_denied, 2 * args.tick,
                       "the scheduler to read the stepped nodes' deny")
        stats1, t_stats1 = db_stats(backend, db.url), time.monotonic()
        agent1 = agent_stats(agent.url) if agent else None
        stop.set()
        scheduler = sched_process.stop()

        elapsed = t_stats1 - t_stats0
        # count() over every exporter series; VictoriaMetrics refuses it past
        # -search.maxUniqueTimeseries (300,000 by default): then the database's own count of
        # active series less the scorer's (8 per node, under the limit).
        series = (count_of(db.url, f'{{{n.EXPORTER_SELECTOR}}}')
                  or stats1.series - count_of(db.url, f'{{{n.LABEL_JOB}="{n.JOB_SCORER}"}}'))
        result.series_per_node = series / size
        result.samples_per_node_s = (stats1.samples - stats0.samples) / elapsed / size
        result.db_rss_mib = stats1.rss / 2**20
        result.db_cpu_pct = 100 * (stats1.cpu_s - stats0.cpu_s) / elapsed
        if agent0 and agent1:
            result.agent_rss_mib = agent1.rss / 2**20
            result.agent_cpu_pct = 100 * (agent1.cpu_s - agent0.cpu_s) / elapsed
        result.push_s = feeder.push_s
        step_wall = feeder.stepped_at
        ticks = scorer.durations[2:] or scorer.durations
        result.tick_p50_s, result.tick_p99_s = pct(ticks, 50), pct(ticks, 99)
        result.evaluate_ms = in_process_evaluate_ms(scorer)
        if step_wall is not None and fleet.stepped:
            late = [scorer.denied_at.get(x, math.inf) - step_wall for x in fleet.stepped_names]
            result.step_scorer_s = max(late)
            late = [scheduler.denied_at.get(x, math.inf) - step_wall for x in fleet.stepped_names]
            result.step_scheduler_s = max(late)
        result.fetch_p50_ms, result.fetch_p99_ms = pct(scheduler.fetch_ms, 50), pct(scheduler.fetch_ms, 99)
        result.table_p99_ms = pct(scheduler.table_ms, 99)
        result.decide_p50_ms, result.decide_p99_ms = pct(scheduler.decide_ms, 50), pct(scheduler.decide_ms, 99)
        if scheduler.decide_ms:
            # One fetch and one ScoreTable per cycle, then one decide per pod: a cycle of 100 pods.
            per_cycle_ms = statistics.median(scheduler.fetch_ms) + statistics.median(scheduler.table_ms)
            result.decisions_per_s = 100 / ((per_cycle_ms + 100 * statistics.median(scheduler.decide_ms)) / 1e3)
        wrong = set(scheduler.violations) | (set(scheduler.chosen) & set(fleet.stressed_names))
        if wrong:
            result.broke = f"the scheduler chose nodes that were not allowed: {sorted(wrong)[:3]}"
    except HarnessError as exc:
        result.broke = str(exc).splitlines()[0][:160]
    finally:
        stop.set()
        if sched_process is not None:
            sched_process.stop()
        if feeder is not None:
            feeder.stop()
        if scorer_http is not None:
            scorer_http.shutdown()
        for server in reversed(started):
            server.stop()
    return result


def in_process_evaluate_ms(scorer: ScorerOnDb) -> float:
    """The same-run baseline: the controller alone (evaluate()) on the last tick's inputs,
    no database — median of 5."""
    inputs = scorer.source.fetch(datetime.now(UTC))
    rb, params = load_rules(), DecisionParams()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        evaluate(rb, params, {}, inputs)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


STAGES = ("database", "transfer", "json", "pairing", "build", "evaluate")


def tick_stages(url: str, long_win_s: float) -> dict[str, dict[str, float]]:
    """Where one tick's time goes, per query path ("new": the tick query, "legacy": the
    per-series one), in seconds per tick: the database's evaluation and encoding (time to the
    answer's headers), the body's transfer, JSON decoding, pairing (`split_tick` /
    `split_timestamped`), NodeInputs for every node (`core.build`) and the controller
    (`evaluate`). Duplicate and stale follow-ups are not counted (none on this fleet)."""
    session = requests.Session()
    selectors = core_inputs.selectors(n.EXPORTER_SELECTOR)
    at = round(time.time(), 3)
    rb, params = load_rules(), DecisionParams()
    out: dict[str, dict[str, float]] = {}
    for path in ("new", "legacy"):
        stages = dict.fromkeys(STAGES, 0.0)
        vectors = {}
        for signal, sel in selectors.items():
            expr = tick_query(sel, long_win_s) if path == "new" else timestamped_query(sel)
            t0 = time.perf_counter()
            resp = session.get(url.rstrip("/") + "/api/v1/query", params={"query": expr, "time": f"{at:.3f}"},
                               timeout=60)
            headers_s = resp.elapsed.total_seconds()
            body = resp.content
            t1 = time.perf_counter()
            result = json.loads(body)["data"]["result"]
            t2 = time.perf_counter()
            vectors[signal] = (core_inputs.split_tick(result, at)[0] if path == "new"
                               else core_inputs.split_timestamped(result, TS_LABEL))
            t3 = time.perf_counter()
            stages["database"] += headers_s
            stages["transfer"] += (t1 - t0) - headers_s
            stages["json"] += t2 - t1
            stages["pairing"] += t3 - t2
        t0 = time.perf_counter()
        nodes = core_inputs.build(vectors, {}, now=at, long_win_s=long_win_s)
        t1 = time.perf_counter()
        evaluate(rb, params, {}, Inputs(time=datetime.fromtimestamp(at, UTC), source="bench", nodes=nodes))
        stages["build"], stages["evaluate"] = t1 - t0, time.perf_counter() - t1
        out[path] = stages
    return out


# --- report ------------------------------------------------------------------------------------

def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys over xs; NaN when fewer than two finite points."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    if len(pts) < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
    return float(intercept), float(slope)


def _f(v: float, spec: str = ".2f") -> str:
    return "-" if not math.isfinite(v) else format(v, spec)


def report(results: Sequence[Result], args: argparse.Namespace) -> None:
    print(f"\nfleet: mode {args.mode}, feed every {args.interval:g} s, scorer tick {args.tick:g} s"
          f"{' (legacy queries)' if args.legacy_queries else ''}, "
          f"{args.stressed:.0%} stressed, {args.stepped} stepped; machine: {os.cpu_count()} cores, shared")
    header = ["backend / nodes", "series/node (pods')", "samples/s/node", "DB RSS MiB", "DB CPU %", "agent RSS/CPU",
              "tick p50 s", "tick p99 s", "tick fed paused s", "paused new/seq/legacy s", "seq÷new", "legacy÷new",
              "paused, every node's pods s",
              "evaluate ms", "tick/evaluate", "step→scorer s",
              "step→sched s", "fetch p99 ms", "table p99 ms", "decide p99 ms", "decisions/s", "scored"]
    rows = []
    for r in results:
        rows.append([
            f"{r.backend} {r.nodes}", f"{_f(r.series_per_node, '.1f')} ({r.pod_series_per_node})",
            _f(r.samples_per_node_s, ".1f"),
            _f(r.db_rss_mib, ".0f"), _f(r.db_cpu_pct, ".0f"),
            "-" if not math.isfinite(r.agent_rss_mib) else f"{r.agent_rss_mib:.0f}/{r.agent_cpu_pct:.0f}%",
            _f(r.tick_p50_s, ".3f"), _f(r.tick_p99_s, ".3f"), _f(r.tick_quiet_s, ".3f"),
            f"{_f(r.tick_quiet_new_s, '.3f')}/{_f(r.tick_quiet_sequential_s, '.3f')}/"
            f"{_f(r.tick_quiet_legacy_s, '.3f')}",
            _f(r.tick_quiet_sequential_s / r.tick_quiet_new_s if r.tick_quiet_new_s else math.nan, ".2f") + "×",
            _f(r.tick_quiet_legacy_s / r.tick_quiet_new_s if r.tick_quiet_new_s else math.nan, ".1f") + "×",
            _f(r.tick_quiet_all_pods_s, ".3f"),
            _f(r.evaluate_ms, ".1f"),
            _f(r.tick_p99_s * 1e3 / r.evaluate_ms if r.evaluate_ms else math.nan, ".0f") + "×",
            _f(r.step_scorer_s, ".1f"), _f(r.step_scheduler_s, ".1f"), _f(r.fetch_p99_ms, ".1f"),
            _f(r.table_p99_ms, ".1f"), _f(r.decide_p99_ms, ".2f"), _f(r.decisions_per_s, ".0f"),
            f"{r.scored}/{r.nodes}",
        ])
    print_table(header, rows)
    for r in results:
        for path, stages in r.stages.items():
            print(f"  {r.backend} {r.nodes} {path} query, seconds per tick: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()) + f" (sum {sum(stages.values()):.3f})")
    for r in results:
        if r.broke:
            print(f"  {r.backend} {r.nodes}: BROKE: {r.broke}")
    for backend in {r.backend for r in results}:
        mine = [r for r in results if r.backend == backend and not r.broke]
        if len(mine) >= 2:
            xs = [r.nodes for r in mine]
            for label, ys, unit in (("DB RSS", [r.db_rss_mib for r in mine], "MiB"),
                                    ("tick p50", [r.tick_p50_s * 1e3 for r in mine], "ms"),
                                    ("fetch p50", [r.fetch_p50_ms for r in mine], "ms")):
                a, b = fit(xs, ys)
                print(f"  fit {backend} {label}: {a:.1f} {unit} + {b * 1000:.2f} {unit} per 1,000 nodes")
    print("\ngoals at the largest size measured:")
    for backend in {r.backend for r in results}:
        mine = [r for r in results if r.backend == backend and not r.broke]
        if not mine:
            continue
        top = max(mine, key=lambda r: r.nodes)
        checks = [
            (f"tick p99 ≤ {GOAL_TICK_P99_S:g} s", top.tick_p99_s <= GOAL_TICK_P99_S),
            (f"step→decision ≤ {GOAL_STEP_S:g} s", top.step_scorer_s <= GOAL_STEP_S),
            (f"scheduler decision p99 ≤ {GOAL_DECIDE_P99_MS:g} ms (decide per pod, scores from the DB)",
             top.decide_p99_ms <= GOAL_DECIDE_P99_MS),
            (f"scheduler decision p99 ≤ {GOAL_DECIDE_P99_MS:g} ms counting the cycle's score fetch and table too",
             top.fetch_p99_ms + top.table_p99_ms + top.decide_p99_ms <= GOAL_DECIDE_P99_MS),
            (f"series/node ≤ {GOAL_SERIES_PER_NODE} (the pods' {top.pod_series_per_node} not counted)",
             top.series_per_node - top.pod_series_per_node <= GOAL_SERIES_PER_NODE),
        ]
        for what, ok in checks:
            print(f"  {backend} {top.nodes}: {what}: {'PASS' if ok else 'MISS'}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Figures, modes and goals: see the module docstring (bench/fleet.py).")
    p.add_argument("--sizes", default="1000,5000,10000", help="comma-separated fleet sizes (default %(default)s)")
    p.add_argument("--backends", default=",".join(BACKENDS), help="prometheus, victoriametrics or both (default both)")
    p.add_argument("--mode", choices=("push", "scrape"), default="push",
                   help="push: text import (VM) / vmagent → remote write (Prometheus), for 10,000+ nodes; "
                        "scrape: the database scrapes one loopback target per node (default %(default)s)")
    p.add_argument("--interval", type=float, default=5.0,
                   help="seconds between a node's samples: scrape interval or push round (default %(default)s)")
    p.add_argument("--tick", type=float, default=5.0, help="scorer tick seconds (default %(default)s)")
    p.add_argument("--legacy-queries", action="store_true",
                   help="the measured scorer reads every series with its timestamp, as before the compact tick "
                        "query, one request at a time (the paused-feeding figures always time it, the shipped "
                        "scorer and the shipped scorer one request at a time)")
    p.add_argument("--stages", action="store_true",
                   help="with the feeding paused, also split one tick of each query path (one request at a time) "
                        "into database, transfer, JSON, pairing, build and controller time")
    p.add_argument("--ticks", type=int, default=12,
                   help="scorer ticks per size; the step after a third (default %(default)s)")
    p.add_argument("--pods", type=int, default=0,
                   help="pods per node, their series cut like the exporter's (top 20 by wait + `other`); "
                        "the paused figures then also time the tick naming every node's pods, not only the denied "
                        "nodes' (default %(default)s)")
    p.add_argument("--stressed", type=float, default=0.05, help="share of nodes always stressed (default %(default)s)")
    p.add_argument("--stepped", type=int, default=5, help="quiet nodes stepped to stress mid-run (default %(default)s)")
    p.add_argument("--scheduler-every", type=float, default=1.0,
                   help="seconds between scheduler cycles (score fetch + decide) (default %(default)s)")
    p.add_argument("--settle", type=float, default=180.0,
                   help="seconds allowed for every node to appear in the database (default %(default)s)")
    p.add_argument("--workdir", help="keep the databases' data and logs here (default: a temporary directory)")
    p.add_argument("--json", help="also write the figures as JSON to this file")
    p.add_argument("--series", action="store_true", help="only print one node's exposition series count and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.series:
        expo = Exposition(load_rows(), args.pods)
        quiet, _ = pools(row_scores(expo.rows))
        print(f"series per node in one exposition: {series_per_node(expo.text(quiet[0]))}")
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            raise HarnessError(f"unknown backend {b!r}: one of {', '.join(BACKENDS)}")
    results = []
    with (contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory()) as base:
        for size in sizes:
            for backend in backends:
                work = Path(base) / f"{backend}-{size}"
                print(f"measuring {backend} at {size} nodes ({args.mode}) ...", flush=True)
                r = measure(backend, size, args, work)
                results.append(r)
                print("  " + json.dumps(r.__dict__), flush=True)  # every figure, as soon as it is known
    report(results, args)
    return 0


if __name__ == "__main__":
    run_main("fleet", main)

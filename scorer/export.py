"""`python -m scorer.export`: a time range of nodes' series from Prometheus into the CSV formats.

For offline plotting and analysis with the same tools that read the exporter's and scorer's own
files: per node, `<output-dir>/<node>/kernel_metrics.csv` (docs/metrics.md#kernel_metricscsv, 23 columns, written
with common.core.csvrow.format_row) and `<output-dir>/<node>/fuzzy_monitor.csv` (§2.2).

How the columns are recovered (range queries at `--step`, at most 11,000 points each, one
progress line per chunk on stderr):
- a row per *sample*, not per step: the row's Time is the scrape time of the node's
  ksense_baseline_frozen sample (resp. the scorer's ksense_node_score sample) and a step that
  sees the same sample as the step before adds no row, so a step finer than the scrape
  interval does not duplicate rows;
- the exporter's series are read per series, each value with its own series' timestamp (the
  live Prometheus source's query, paired by scorer.core.inputs): where a node has duplicate
  series (two scrape jobs, a Prometheus restart without staleness markers, remote-write), every
  column, counters included, comes from the node's newest series of its family, and the row's
  Time from the newest ksense_baseline_frozen series, so a stale series' larger value is never
  exported next to a fresh series' time;
- the per-interval totals and counts (SchedLat_Total_ms / _Count / _Dropped, DState_*,
  SoftIRQ_*) are differences of the cumulative histogram `_sum`/`_count` and counters between
  consecutive rows (a value below the previous one is a counter reset: the new value is the
  increase); the first row of an export, which has no previous one, leaves them empty — like
  the exporter's first partial interval. A row after a missed scrape covers both intervals;
- SchedLat_Avg_ms = total / count; SchedLat_Max_ms from ksense_runqueue_latency_max_seconds;
  CPUUtil = 100 × ksense_cpu_utilization_ratio; PSI = 100 × ksense_pressure_worst_ratio;
- **SchedLat_P95_ms and SchedLat_P99_ms stay empty**: the exported histogram has power-of-two
  buckets, and a quantile from them would be a different (2×-coarse) estimator than the
  exporter's 1/16-octave one under the same column name. Use histogram_quantile in Grafana;
- the derived columns come from their gauges; Direction/Energy_W/... are empty where the
  exporter omitted them (calibrating);
- fuzzy_monitor.csv: Score = max by (node) of ksense_node_score and Decision = min by (node) of
  ksense_node_admission_allowed (docs/metrics.md#scorer-metrics: replicas agree, deny wins); Level from the
  score; the four inputs from the exporter's series at the same step, empty where the scorer
  flagged them missing (ksense_node_input_missing); Reason is `missing metrics: <list>` when
  friction or energy were missing and empty otherwise (the scorer does not export its other
  reasons).
Files are written under a temporary name and renamed at the end: an interrupted export leaves
no half file behind. Exit 0 on success, 2 with a one-line message on bad arguments or when
Prometheus cannot be queried (no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import requests

from common import names as n
from common.core.csvrow import format_row
from common.core.model import Derived, RawInterval
from scorer.core.inference import level
from scorer.core.inputs import split_timestamped_matrix
from scorer.core.reports import monitor_row as monitor_cells
from scorer.sources import shown
from scorer.sources.prometheus import NAME as PROMETHEUS
from scorer.sources.prometheus import TS_LABEL, PromClient, PromError, chunks, timestamped_query

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

# Reference series: a row exists where these have a sample (their timestamp is the row's Time).
_REF = "ref"  # the timestamp of the node's newest ksense_baseline_frozen series
_SCORE_REF = "score_ref"
_FROZEN = "frozen"
_HIST = {"rq": n.RUNQUEUE_LATENCY.name, "ds": n.DSTATE_DURATION.name, "si": n.SOFTIRQ_NET_RX_DURATION.name}
# The exporter's series, read per series with their timestamps; per node and step the newest
# series of each is kept (see `tabulate`). key -> family.
_PER_SERIES = MappingProxyType(
    {
        **{f"{k}_{part}": f"{fam}_{part}" for k, fam in _HIST.items() for part in ("sum", "count")},
        "rq_max": n.RUNQUEUE_LATENCY_MAX.name,
        "rq_dropped": n.RUNQUEUE_LATENCY_DROPPED.name,
        "cpu": n.CPU_UTILIZATION.name,
        "psi": n.PRESSURE_WORST.name,
        _FROZEN: n.BASELINE_FROZEN.name,
        "samples": n.BASELINE_SAMPLES.name,
        "friction": n.FRICTION.name,
        "direction": n.FRICTION_DIRECTION.name,
        "rate": n.FRICTION_RATE.name,
        "energy": n.ENERGY.name,
        "energy_w": n.ENERGY_WINDOW.name,
        "energy_vol": n.ENERGY_VOLATILITY.name,
        "energy_k": n.ENERGY_K_FACTOR.name,
    }
)
# Cumulative series whose per-row differences are the interval's totals and counts.
_CUMULATIVE = ("rq_sum", "rq_count", "rq_dropped", "ds_sum", "ds_count", "si_sum", "si_count")


class UsageError(ValueError):
    """A bad argument; the message is shown as is."""


def parse_duration(text: str) -> float:
    """`500ms`, `1s`, `2m`, `1h`, `1d` or plain seconds -> seconds (> 0)."""
    m = _DURATION.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"not a positive duration: {text!r} (e.g. 1s, 500ms, 5m)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_time(text: str, now: float) -> float:
    """Unix seconds, RFC 3339 / ISO 8601 (`2026-02-17T13:39:14Z`, with an offset, or naive =
    local time like the CSV's Time column), `now`, or `now-<duration>`."""
    t = text.strip()
    if t == "now":
        return now
    if t.startswith("now-"):
        return now - parse_duration(t[4:])
    try:
        return float(t)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise UsageError(
            f"not a time: {text!r} (use Unix seconds, 2026-02-17T13:39:14Z, '2026-02-17 14:39:14' local, "
            "now or now-1h)"
        ) from None


def _node_matcher(nodes: Sequence[str]) -> str:
    alternatives = "|".join(re.escape(node) for node in nodes)
    return f'{n.LABEL_NODE}=~"{alternatives.replace(chr(92), chr(92) * 2)}"'


def queries(nodes: Sequence[str]) -> dict[str, str]:
    """key -> PromQL for the requested nodes. The exporter's series (the `_PER_SERIES` keys) are
    not aggregated: each query returns every series with its own timestamp, as the live source
    asks (`timestamped_query`), and `tabulate` keeps each node's newest series. The scorer's
    series are aggregated by `node` (by node and input for `missing`)."""
    m = _node_matcher(nodes)

    def mx(family: str, extra: str = "") -> str:
        return f"max by (node) ({family}{{{m}{extra}}})"

    q = {key: timestamped_query(f"{family}{{{m}}}") for key, family in _PER_SERIES.items()}
    q.update(
        {
            _SCORE_REF: f"max by (node) (timestamp({n.NODE_SCORE.name}{{{m}}}))",
            "score": mx(n.NODE_SCORE.name),
            "allowed": f"min by (node) ({n.NODE_ADMISSION_ALLOWED.name}{{{m}}})",
        }
    )
    q.update({f"missing_{inp}": mx(n.NODE_INPUT_MISSING.name, f',input="{inp}"') for inp in n.INPUTS})
    return q


Table = dict[str, dict[float, dict[str, float]]]  # node -> step time -> key -> value


def tabulate(results: Mapping[str, Iterable[Mapping]]) -> Table:
    """Matrix results per key -> one table per node, keyed by step time. A `_PER_SERIES` key's
    value is its newest series' at that step, paired per series with its own timestamp
    (scorer.core.inputs.split_timestamped_matrix, as the live source does), so a stale duplicate
    series can neither lend a row its larger value nor mix with a fresh one; the newest
    ksense_baseline_frozen sample's timestamp is the row's reference (`_REF`). Other keys are
    one series per node already."""
    table: Table = {}
    for key, series in results.items():
        if key in _PER_SERIES:
            for t, samples in split_timestamped_matrix(series, TS_LABEL).items():
                for node, sample in samples.items():
                    row = table.setdefault(node, {}).setdefault(t, {})
                    row[key] = sample.value
                    if key == _FROZEN:
                        row[_REF] = sample.ts
            continue
        for element in series:
            node = element["metric"].get(n.LABEL_NODE)
            if node is None:
                continue
            steps = table.setdefault(node, {})
            for t, v in element["values"]:
                steps.setdefault(round(float(t), 3), {})[key] = float(v)
    return table


def _get(row: Mapping[str, float], key: str, scale: float = 1.0) -> float:
    v = row.get(key, math.nan)
    return v * scale


def _count(delta: float) -> int | None:
    return None if math.isnan(delta) else round(delta)


def _local(ts: float) -> datetime:
    # Prometheus timestamps are whole milliseconds; rounding keeps float noise out of `.mmm`.
    return datetime.fromtimestamp(round(ts, 3))


@dataclass
class NodeCursor:
    """What one node's rows carry across steps and chunks: the last sample seen (to skip
    repeats) and the previous cumulative values (for the differences)."""

    last_ref: float = math.nan
    last_score_ref: float = math.nan
    previous: dict[str, float] = field(default_factory=dict)
    kernel_rows: int = 0
    monitor_rows: int = 0


def _delta(cursor: NodeCursor, row: Mapping[str, float], key: str) -> float:
    cur = row.get(key, math.nan)
    prev = cursor.previous.get(key, math.nan)
    if math.isnan(cur) or math.isnan(prev):
        return math.nan
    return cur - prev if cur >= prev else cur


def kernel_row(cursor: NodeCursor, row: Mapping[str, float]) -> list[str]:
    """The 23 kernel_metrics.csv cells of one sample (see the module docstring); advances `cursor`."""
    d = {key: _delta(cursor, row, key) for key in _CUMULATIVE}
    cursor.previous = {key: row[key] for key in _CUMULATIVE if key in row}
    total_ms = d["rq_sum"] * 1000.0
    count = d["rq_count"]
    raw = RawInterval(
        time=_local(row[_REF]),
        t=row[_REF],
        sched_total_ms=total_ms,
        sched_avg_ms=total_ms / count if count > 0 else math.nan,
        sched_max_ms=_get(row, "rq_max", 1000.0),
        sched_count=_count(count),
        sched_dropped=_count(d["rq_dropped"]),
        dstate_total_ms=d["ds_sum"] * 1000.0,
        dstate_count=_count(d["ds_count"]),
        softirq_total_ms=d["si_sum"] * 1000.0,
        softirq_count=_count(d["si_count"]),
        cpu_util=_get(row, "cpu", 100.0),
        psi=_get(row, "psi", 100.0),
    )
    w = row.get("energy_w", math.nan)
    derived = Derived(
        frozen=row.get("frozen") == 1.0,
        samples=_count(row.get("samples", math.nan)),
        warmup_remaining_s=math.nan,
        friction=_get(row, "friction"),
        direction=_get(row, "direction"),
        df_dt=_get(row, "rate"),
        energy=_get(row, "energy"),
        energy_w=_count(w),
        energy_vol=_get(row, "energy_vol"),
        energy_k=_get(row, "energy_k"),
    )
    return format_row(raw, derived)


def monitor_row(node: str, row: Mapping[str, float]) -> list[str]:
    """The fuzzy_monitor.csv cells of one scorer sample (see the module docstring)."""
    missing = [inp for inp in n.INPUTS if row.get(f"missing_{inp}", 0.0) == 1.0]
    friction, direction = row.get("friction", math.nan), row.get("direction", math.nan)
    values = {
        "friction": friction if math.isnan(direction) else friction * direction,
        "energy": row.get("energy", math.nan),
        "cpu": _get(row, "cpu", 100.0),
        "psi": _get(row, "psi", 100.0),
    }
    critical = [inp for inp in ("friction", "energy") if inp in missing]
    decision = n.DECISION_ALLOW if row.get("allowed") == 1.0 else n.DECISION_DENY
    reason = "missing metrics: " + ", ".join(critical) if critical else ""
    return monitor_cells(_local(row[_SCORE_REF]), node, values, missing, row["score"], level(row["score"]), decision,
                         reason)


class _Outputs:
    """One node's pair of CSV files, written under `.part` names and renamed by `commit()`."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.final = (directory / n.KERNEL_METRICS_CSV_NAME, directory / n.FUZZY_MONITOR_CSV_NAME)
        self._files = [open(p.with_name(p.name + ".part"), "w", newline="") for p in self.final]  # noqa: SIM115
        self.kernel, self.monitor = (csv.writer(f, lineterminator="\n") for f in self._files)
        self.kernel.writerow(n.KERNEL_METRICS_COLUMNS)
        self.monitor.writerow(n.FUZZY_MONITOR_COLUMNS)

    def commit(self) -> None:
        for f, final in zip(self._files, self.final, strict=True):
            f.close()
            os.replace(f.name, final)

    def abandon(self) -> None:
        for f in self._files:
            f.close()
            with contextlib.suppress(OSError):
                os.unlink(f.name)


def export(
    client: PromClient,
    nodes: Sequence[str],
    start: float,
    end: float,
    step: float,
    output_dir: Path,
    *,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, NodeCursor]:
    """Write the file pairs; returns per-node row counts (cursors). Raises PromError."""
    qs = queries(nodes)
    outputs = {node: _Outputs(output_dir / node) for node in nodes}
    cursors = {node: NodeCursor() for node in nodes}
    spans = list(chunks(start, end, step))
    try:
        for i, (lo, hi) in enumerate(spans, 1):
            started = time.monotonic()
            table = tabulate({key: client.query_range(expr, lo, hi, step) for key, expr in qs.items()})
            for node in nodes:
                out, cursor = outputs[node], cursors[node]
                for t in sorted(table.get(node, {})):
                    row = table[node][t]
                    ref = row.get(_REF)
                    if ref is not None and ref != cursor.last_ref:
                        cursor.last_ref = ref
                        out.kernel.writerow(kernel_row(cursor, row))
                        cursor.kernel_rows += 1
                    sref = row.get(_SCORE_REF)
                    if sref is not None and sref != cursor.last_score_ref and "score" in row:
                        cursor.last_score_ref = sref
                        out.monitor.writerow(monitor_row(node, row))
                        cursor.monitor_rows += 1
            rows = sum(c.kernel_rows for c in cursors.values())
            progress(
                f"export: chunk {i}/{len(spans)} {_iso(lo)} .. {_iso(hi)} "
                f"kernel_rows={rows} took={time.monotonic() - started:.1f}s"
            )
    except BaseException:
        for out in outputs.values():
            out.abandon()
        raise
    for out in outputs.values():
        out.commit()
    return cursors


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scorer.export",
        description="Export nodes' series from Prometheus into kernel_metrics.csv and fuzzy_monitor.csv "
        "(one pair per node under OUTPUT_DIR/<node>/).",
        epilog="Times: Unix seconds, RFC 3339 (2026-02-17T13:39:14Z), local '2026-02-17 14:39:14', now, now-1h. "
        "SchedLat_P95_ms/P99_ms stay empty (see the module docstring).",
    )
    p.add_argument("--prometheus-url", help="Prometheus query API (KSENSE_PROMETHEUS_URL)")
    p.add_argument("--node", action="append", required=True, help="node name; repeat for more nodes")
    p.add_argument("--start", required=True, help="range start")
    p.add_argument("--end", required=True, help="range end")
    p.add_argument("--step", default="1s", help="query resolution, default 1s (the scrape interval)")
    p.add_argument("--output-dir", required=True, type=Path, help="where the per-node directories go")
    p.add_argument("--timeout", default="30s", help="per-query timeout, default 30s")
    return p


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    url = args.prometheus_url or environ.get("KSENSE_PROMETHEUS_URL")
    try:
        if not url:
            raise UsageError("no Prometheus URL: pass --prometheus-url or set KSENSE_PROMETHEUS_URL")
        now = time.time()
        start, end = parse_time(args.start, now), parse_time(args.end, now)
        step, timeout = parse_duration(args.step), parse_duration(args.timeout)
        if end < start:
            raise UsageError(f"--end ({args.end}) is before --start ({args.start})")
    except UsageError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    client = PromClient(url, timeout_s=timeout, session=requests.Session())
    nodes = list(dict.fromkeys(args.node))
    try:
        cursors = export(client, nodes, start, end, step, args.output_dir)
    except PromError as exc:
        print(f"export: cannot query Prometheus at {url}: {shown(exc.reason, PROMETHEUS)} ({exc})", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"export: cannot write under {args.output_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for node, c in cursors.items():
        print(f"export: node={node} kernel_metrics_rows={c.kernel_rows} fuzzy_monitor_rows={c.monitor_rows} "
              f"dir={args.output_dir / node}", file=sys.stderr)
        if c.kernel_rows == 0 and c.monitor_rows == 0:
            print(f"export: warning: no series for node {node!r} in that range (name right? scraped?)",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

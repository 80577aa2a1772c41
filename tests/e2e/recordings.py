"""The replayed nodes' inputs: node-b's edited copy of the real recording, and an offline check.

The replay source follows each recording's own clock from its first row, so the scenario
steers node-b and node-c through their recordings: both carry the same contention episode at
the same recorded offsets (tests/fixtures/make_quiet_node.py: EPISODE_START_S … EPISODE_END_S),
which is when every node of the scenario is denied.

- node-c replays the committed quiet-node fixture as it is.
- node-b replays `node_b_recording(...)`: DURATION_S rows of data/reference/kernel_metrics_real.csv.gz
  from `REAL_START_ROW` (a stretch the scorer allows with a WARMUP_S baseline, checked by a test),
  re-timed to start at the run's start, with the same synthetic contention episode applied to
  its raw columns (`make_quiet_node.contended`), derived columns recomputed.

`simulate(...)` runs a recording through the exporter's derive step and the scorer's
controller and state machine — the live path without the processes — so a test can check the
decisions each recording implies before a scenario depends on them.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from common.core.csvrow import check_header, parse_row, time_seconds
from common.core.model import RawInterval
from common.csvfile import open_text
from common.names import INPUTS, KERNEL_METRICS_COLUMNS, SOURCE_REPLAY
from exporter.core import derive
from scorer.core.decision import DecisionParams
from scorer.core.model import Inputs, NodeInputs
from scorer.replay import replay
from scorer.rulefile import load_rules
from tests.fixtures import make_quiet_node as quiet

WARMUP_S = quiet.WARMUP_S
EPISODE_START_S = quiet.EPISODE_START_S
EPISODE_END_S = quiet.EPISODE_END_S
DURATION_S = quiet.DURATION_S
QUIET_NODE_CSV = quiet.FIXTURE
#: First row of the real recording that node-b replays (chosen with `simulate`: allowed from
#: the end of its warm-up to the episode, and again after it).
REAL_START_ROW = 450
#: Seed of the episode's jitter on node-b (deterministic edits).
NODE_B_SEED = 7


def read_raw(path: Path) -> list[RawInterval]:
    """The raw columns of every data row of a kernel_metrics.csv (or .csv.gz)."""
    with open_text(path) as f:
        reader = csv.reader(f)
        check_header(next(reader))
        return [parse_row(fields, reader.line_num)[0] for fields in reader]


def retimed(intervals: Sequence[RawInterval], start: datetime, step_s: float = 1.0) -> list[RawInterval]:
    """The same intervals at `start`, `start + step_s`, … (the real recording's cadence is 1 s)."""
    out = []
    for i, raw in enumerate(intervals):
        ts = start + timedelta(seconds=i * step_s)
        out.append(replace(raw, time=ts, t=time_seconds(ts)))
    return out


def with_episode(intervals: Sequence[RawInterval], seed: int) -> list[RawInterval]:
    """The contention episode of make_quiet_node applied at the same recorded offsets."""
    rng = random.Random(seed)
    t0 = intervals[0].t
    return [quiet.contended(raw, rng) if quiet.in_episode(raw.t - t0) else raw for raw in intervals]


def write_recording(path: Path, intervals: Sequence[RawInterval], warmup_s: float = WARMUP_S) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(KERNEL_METRICS_COLUMNS)
        writer.writerows(quiet.rows(intervals, warmup_s))
    return path


def node_b_recording(real_csv: Path, out: Path, start: datetime) -> Path:
    """node-b's input: the real recording's stretch from REAL_START_ROW, re-timed to `start`,
    with the contention episode."""
    real = read_raw(real_csv)[REAL_START_ROW:REAL_START_ROW + DURATION_S]
    if len(real) < DURATION_S:
        raise ValueError(f"{real_csv}: fewer than {REAL_START_ROW + DURATION_S} rows")
    return write_recording(out, with_episode(retimed(real, start), NODE_B_SEED))


@dataclass(frozen=True)
class Verdict:
    """What the scorer decides at one recorded second (offset from the first row)."""

    offset_s: float
    calibrating: bool
    friction_signed: float
    energy: float
    score: float
    decision: str


def simulate(intervals: Sequence[RawInterval], warmup_s: float = WARMUP_S,
             params: DecisionParams | None = None) -> list[Verdict]:
    """Exporter derive step + scorer controller and hysteresis, one tick per row."""
    state = derive.initial_state(derive.DeriveParams(warmup_s=warmup_s))
    series: list[Inputs] = []
    for raw in intervals:
        state, d = derive.step(state, raw)
        values = {"friction": d.friction, "energy": d.energy, "cpu": raw.cpu_util, "psi": raw.psi}
        node = NodeInputs(node="n", friction=d.friction, direction=d.direction, energy=d.energy,
                          cpu_pct=raw.cpu_util, psi_pct=raw.psi,
                          missing=tuple(k for k in INPUTS if math.isnan(values[k])), calibrating=not d.frozen)
        series.append(Inputs(time=raw.time, source=SOURCE_REPLAY, nodes={"n": node}))
    t0 = intervals[0].t
    out = []
    for raw, report in zip(intervals, replay(load_rules(None), params or DecisionParams(), series), strict=True):
        out.append(Verdict(raw.t - t0, report.inputs.calibrating, report.inputs.friction_signed,
                           report.inputs.energy, report.score, report.decision))
    return out

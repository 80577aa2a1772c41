"""A recording directory read back and aligned per kernel row, checked on the way in.

`lab record` writes four files (each may be gzip-compressed as FILE.gz, as the committed data
is). `load` joins them on the kernel rows' clock: each kernel row (the interval ending at its
Time) gets the tenant's p99 and errors of the client second it mostly covers, and the stress
phase it falls in. Anything that would make the figures meaningless is refused with the file
and the problem named: a missing or malformed file, clocks that do not overlap, no calm phase
to derive the SLO from.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from common.core.csvrow import RowError, parse_time, time_seconds
from common.csvfile import open_text
from common.names import RQ_P99
from lab.core.schedule import CALM
from lab.tenant import CLIENT_COLUMNS
from scorer.core.model import Inputs
from scorer.replay import read_rows, row_inputs

KERNEL, CLIENT, PHASES, META = "kernel_metrics.csv", "client_latency.csv", "phases.csv", "meta.json"
#: Share of kernel rows that must have a client second; less means the clocks disagree.
MIN_OVERLAP = 0.8


class RecordingError(Exception):
    """A recording that cannot be evaluated; the message names the file and the problem."""


@dataclass(frozen=True)
class Recording:
    """One recording, one entry per kernel row (index i = the i-th second of the recording)."""

    name: str
    path: Path
    meta: dict
    time_s: NDArray[np.float64]
    inputs: list[Inputs] = field(repr=False)
    frozen: NDArray[np.bool_] = field(repr=False)
    features: dict[str, NDArray[np.float64]] = field(repr=False)
    p99_ms: NDArray[np.float64] = field(repr=False)
    errors: NDArray[np.float64] = field(repr=False)
    phase: list[str] = field(repr=False)
    intensity: NDArray[np.float64] = field(repr=False)

    @property
    def calm(self) -> NDArray[np.bool_]:
        return np.array([p in CALM for p in self.phase], dtype=bool)

    def calm_p99_ms(self) -> float:
        """Median tenant p99 over the calm seconds (warm-up and quiet phases)."""
        values = self.p99_ms[self.calm & np.isfinite(self.p99_ms)]
        if values.size == 0:
            raise RecordingError(f"{self.path / PHASES}: no calm (warmup or quiet) phase with tenant data: "
                                 "cannot derive the SLO (give --slo-ms)")
        return float(np.median(values))


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise RecordingError(f"{directory / name}: missing (a recording holds {KERNEL}, {CLIENT}, {PHASES} and {META}, "
                         "each optionally .gz)")


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open_text(path) as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise RecordingError(f"{path}: header lacks {', '.join(missing)} (expected {','.join(columns)})")
            return list(reader)
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as exc:
        raise RecordingError(f"{path}: cannot read: {exc}") from None


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        return float(text) if text.strip() else math.nan
    except ValueError:
        raise RecordingError(f"{path}: line {line}, column {column}: not a number: {text!r}") from None


def _stamp(text: str, path: Path, line: int, column: str) -> float:
    try:
        return time_seconds(parse_time(text))
    except ValueError:
        raise RecordingError(f"{path}: line {line}, column {column}: not a time: {text!r}") from None


def load(directory: Path) -> Recording:
    """Read, check and align one recording directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RecordingError(f"{directory}: not a directory")
    paths = {name: _find(directory, name) for name in (KERNEL, CLIENT, PHASES, META)}
    try:
        meta = json.loads(paths[META].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordingError(f"{paths[META]}: cannot read: {exc}") from None
    try:
        rows = read_rows(paths[KERNEL])
    except RowError as exc:
        raise RecordingError(f"{paths[KERNEL]}: {exc}") from None
    except OSError as exc:
        raise RecordingError(f"{paths[KERNEL]}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise RecordingError(f"{paths[KERNEL]}: no data rows")
    node = directory.name
    t = np.array([time_seconds(raw.time) for raw, _ in rows])

    client: dict[int, tuple[float, float]] = {}
    for line, row in enumerate(_read_csv(paths[CLIENT], CLIENT_COLUMNS), 2):
        second = int(_stamp(row["Time"], paths[CLIENT], line, "Time"))
        client[second] = (_number(row["p99_ms"], paths[CLIENT], line, "p99_ms"),
                          _number(row["errors"], paths[CLIENT], line, "errors"))
    # Kernel row T covers (T - 1, T]; the client second s covers [s, s + 1): the one it mostly covers.
    seconds = np.floor(t - 0.5).astype(np.int64)
    joined = [client.get(s, (math.nan, math.nan)) for s in seconds.tolist()]
    matched = sum(1 for s in seconds.tolist() if s in client)
    if matched < MIN_OVERLAP * len(rows):
        first, last = (min(client), max(client)) if client else (0, 0)
        raise RecordingError(
            f"{paths[CLIENT]}: mismatched clocks: only {matched} of {len(rows)} kernel rows have a client second "
            f"(client covers {_fmt(first)} to {_fmt(last)}, {paths[KERNEL].name} {_fmt(t[0])} to {_fmt(t[-1])})")

    phase = [""] * len(rows)
    intensity = np.zeros(len(rows))
    phase_rows = _read_csv(paths[PHASES], ("start", "end", "stressor", "intensity"))
    if not phase_rows:
        raise RecordingError(f"{paths[PHASES]}: no phases")
    for line, row in enumerate(phase_rows, 2):
        start = _stamp(row["start"], paths[PHASES], line, "start")
        end = _stamp(row["end"], paths[PHASES], line, "end")
        if not (t[0] - 5 <= start < end <= t[-1] + 5):
            raise RecordingError(f"{paths[PHASES]}: line {line}: phase {_fmt(start)} to {_fmt(end)} lies outside "
                                 f"{paths[KERNEL].name} ({_fmt(t[0])} to {_fmt(t[-1])}): mismatched clocks")
        inside = np.flatnonzero((t - 0.5 >= start) & (t - 0.5 < end))
        for i in inside.tolist():
            phase[i] = row["stressor"]
        intensity[inside] = _number(row["intensity"], paths[PHASES], line, "intensity")

    raws = [raw for raw, _ in rows]
    derived = [d for _, d in rows]
    features = {
        "cpu": np.array([r.cpu_util for r in raws]),
        "psi": np.array([r.psi for r in raws]),
        RQ_P99: np.array([r.sched_p99_ms for r in raws]),
        "dstate_ms": np.array([r.dstate_total_ms for r in raws]),
        "softirq_ms": np.array([r.softirq_total_ms for r in raws]),
        "friction": np.array([d.friction for d in derived]),
        "direction": np.array([d.direction for d in derived]),
        "energy": np.array([d.energy for d in derived]),
    }
    with np.errstate(invalid="ignore"):
        direction = features["direction"]
        features["friction_signed"] = np.where(np.isnan(direction), features["friction"],
                                               features["friction"] * direction)
    return Recording(
        name=node, path=directory, meta=meta, time_s=t, inputs=[row_inputs(r, d, node) for r, d in rows],
        frozen=np.array([d.frozen for d in derived]), features=features,
        p99_ms=np.array([j[0] for j in joined]), errors=np.array([j[1] for j in joined]),
        phase=phase, intensity=intensity,
    )


def _fmt(seconds: float) -> str:
    from datetime import datetime, timedelta

    return (datetime(1970, 1, 1) + timedelta(seconds=float(seconds))).strftime("%Y-%m-%d %H:%M:%S")

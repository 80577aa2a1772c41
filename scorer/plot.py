"""`python -m scorer.plot`: a PNG of scores, decisions and inputs from monitor or replay CSVs (docs/tools.md).

For a report or an incident review, not for live viewing (that is Grafana's job). Reads one or
more `fuzzy_monitor.csv` (docs/metrics.md#fuzzy_monitorcsv, one line per node; `--node` keeps one) and/or replay
outputs (docs/metrics.md#replay-output, the node is the file's stem), recognised by their header, and draws
three panels over one time axis:

1. the score with the level bands (low < 45 ≤ medium-low < lo ≤ medium-mid < mid ≤ medium-high
   < 70 ≤ high) and, per node, the spans where the decision was deny; with `--scores
   fuzzy_score.csv` a marker per recorded admission review at the score the pod met;
2. signed friction and energy;
3. CPU % and PSI %.

The image is exactly `--width` × `--height` pixels (`--dpi` scales text and lines only).
matplotlib is the optional `plot` extra; it is imported only here, through its object API and
the Agg canvas (no pyplot, no display, no global backend switch).

Exit status: 0 done; 2 when an input is unusable (one line naming the file and the line), the
output cannot be written, or matplotlib is not installed.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from common.core.csvrow import parse_time
from common.names import (
    DECISION_DENY,
    FUZZY_MONITOR_COLUMNS,
    FUZZY_SCORE_COLUMNS,
    KERNEL_METRICS_COLUMNS,
    LEVEL_HIGH,
    LEVEL_MEDIUM,
    REPLAY_COLUMNS,
)
from scorer.core.decision import DecisionParams

KIND_MONITOR = "fuzzy_monitor.csv"
KIND_REPLAY = "replay output"

INSTALL_HINT = ("matplotlib is not installed; it is the optional `plot` extra: pip install '.[plot]' "
                "(or uv pip install -r requirements/plot.txt)")

# Pixel sizes accepted: small enough to render in seconds, large enough to hold three panels.
MIN_PX, MAX_PX = 300, 12000
MIN_DPI, MAX_DPI = 30, 600


class PlotError(Exception):
    """A problem the user must fix; main prints it as one line and exits 2."""


@dataclass
class Series:
    """One node's rows from one file, in file order."""

    node: str
    path: Path
    kind: str
    time: list[datetime] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    friction: list[float] = field(default_factory=list)
    energy: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    psi: list[float] = field(default_factory=list)
    deny: list[bool] = field(default_factory=list)
    label: str = ""


@dataclass(frozen=True)
class Review:
    """One recorded admission review: when, and the score the pod met (target, else best node)."""

    time: datetime
    node: str
    score: float


# --------------------------------------------------------------------------------------------
# Parsing (pure: rows in, series out)


def _cell_number(text: str, path: Path, line: int, column: str) -> float:
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise PlotError(f"{path}: line {line}, column {column}: not a number: {text!r}") from None
    return value if math.isfinite(value) else math.nan


def _cell_time(text: str, path: Path, line: int, column: str) -> datetime:
    try:
        return parse_time(text.strip())
    except ValueError:
        raise PlotError(f"{path}: line {line}, column {column}: not a time "
                        f"(YYYY-MM-DD HH:MM:SS[.mmm]): {text!r}") from None


def detect_kind(header: Sequence[str], path: Path) -> str:
    """KIND_MONITOR or KIND_REPLAY from the header line; PlotError naming line 1 otherwise."""
    names = tuple(h.strip() for h in header)
    if names == FUZZY_MONITOR_COLUMNS:
        return KIND_MONITOR
    if names == REPLAY_COLUMNS:
        return KIND_REPLAY
    if names == KERNEL_METRICS_COLUMNS:
        raise PlotError(f"{path}: line 1: this is a kernel_metrics.csv; replay it first: "
                        f"python -m scorer.replay {path} --output decisions.csv")
    raise PlotError(f"{path}: line 1: header is neither a fuzzy_monitor.csv ({','.join(FUZZY_MONITOR_COLUMNS)}) "
                    f"nor a replay output ({','.join(REPLAY_COLUMNS)})")


def parse_rows(kind: str, rows: Iterable[tuple[int, Sequence[str]]], path: Path, replay_node: str) -> list[Series]:
    """Series per node (first-seen order) from the data rows `(line number, fields)` of one file."""
    columns = FUZZY_MONITOR_COLUMNS if kind == KIND_MONITOR else REPLAY_COLUMNS
    time_col = columns[0]
    by_node: dict[str, Series] = {}
    for line, fields in rows:
        if len(fields) != len(columns):
            raise PlotError(f"{path}: line {line}: expected {len(columns)} fields, got {len(fields)}")
        c = dict(zip(columns, fields, strict=True))
        node = c["Node"].strip() if kind == KIND_MONITOR else replay_node
        if not node:
            raise PlotError(f"{path}: line {line}, column Node: empty")
        s = by_node.get(node)
        if s is None:
            s = by_node[node] = Series(node, path, kind)
        s.time.append(_cell_time(c[time_col], path, line, time_col))
        s.score.append(_cell_number(c["Score"], path, line, "Score"))
        s.friction.append(_cell_number(c["FrictionSigned"], path, line, "FrictionSigned"))
        s.energy.append(_cell_number(c["Energy"], path, line, "Energy"))
        s.cpu.append(_cell_number(c["CPUUtil"], path, line, "CPUUtil"))
        s.psi.append(_cell_number(c["PSI"], path, line, "PSI"))
        s.deny.append(c["Decision"].strip().lower() == DECISION_DENY)
    return list(by_node.values())


def parse_reviews(rows: Iterable[tuple[int, Sequence[str]]], path: Path) -> list[Review]:
    """Reviews from the data rows of a fuzzy_score.csv (docs/metrics.md#fuzzy_scorecsv)."""
    out = []
    for line, fields in rows:
        if len(fields) != len(FUZZY_SCORE_COLUMNS):
            raise PlotError(f"{path}: line {line}: expected {len(FUZZY_SCORE_COLUMNS)} fields, got {len(fields)}")
        c = dict(zip(FUZZY_SCORE_COLUMNS, fields, strict=True))
        target = _cell_number(c["TargetScore"], path, line, "TargetScore")
        best = _cell_number(c["BestScore"], path, line, "BestScore")
        if not math.isnan(target):
            node, score = c["TargetNode"].strip(), target
        else:
            node, score = c["BestNode"].strip(), best
        out.append(Review(_cell_time(c["Time"], path, line, "Time"), node, score))
    return out


def deny_spans(times: Sequence[float], deny: Sequence[bool]) -> list[tuple[float, float]]:
    """(start, width) of each run of deny rows; a run lasts until the next row's time (the last
    row counts for the median step). Times are numbers (matplotlib date numbers)."""
    t = np.asarray(times, dtype=float)
    d = np.asarray(deny, dtype=bool)
    if t.size == 0 or not d.any():
        return []
    step = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    ends = np.append(t[1:], t[-1] + step)
    edges = np.diff(np.concatenate(([0], d.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(float(t[a]), float(ends[b] - t[a])) for a, b in zip(starts, stops, strict=True)]


# --------------------------------------------------------------------------------------------
# Reading files (the shell)


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and numbered data rows; PlotError for a missing, empty, binary or malformed file."""
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
                if header is None:
                    raise PlotError(f"{path}: line 1: empty file, expected a CSV header")
                for fields in reader:
                    if fields:  # tolerate blank lines
                        rows.append((reader.line_num, fields))
            except csv.Error as exc:
                raise PlotError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None
            except UnicodeDecodeError as exc:
                raise PlotError(f"{path}: line {reader.line_num + 1}: not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise PlotError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return header, rows


def load_series(path: Path) -> list[Series]:
    header, rows = _read_csv(path)
    kind = detect_kind(header, path)
    if not rows:
        raise PlotError(f"{path}: line 2: no data rows after the {kind} header")
    return parse_rows(kind, rows, path, replay_node=path.stem)


def load_reviews(path: Path) -> list[Review]:
    header, rows = _read_csv(path)
    if tuple(h.strip() for h in header) != FUZZY_SCORE_COLUMNS:
        raise PlotError(f"{path}: line 1: header is not the fuzzy_score.csv header ({','.join(FUZZY_SCORE_COLUMNS)})")
    return parse_reviews(rows, path)


# --------------------------------------------------------------------------------------------
# Drawing


@dataclass(frozen=True)
class Size:
    width_px: int
    height_px: int
    dpi: float


def render(series: list[Series], reviews: list[Review] | None, output: Path, size: Size,
           params: DecisionParams, title: str) -> None:
    """Draw the three panels into `output` (PNG), exactly size.width_px × size.height_px."""
    try:
        from matplotlib import dates as mdates
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(INSTALL_HINT) from None

    # +0.5 px: Agg truncates figsize × dpi to whole pixels, and w / dpi × dpi may land just below w.
    fig = Figure(figsize=((size.width_px + 0.5) / size.dpi, (size.height_px + 0.5) / size.dpi), dpi=size.dpi)
    FigureCanvasAgg(fig)
    ax_score, ax_fe, ax_load = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]})
    colors = [f"C{i % 10}" for i in range(len(series))]

    # Panel 1: bands, thresholds, scores, deny spans, reviews.
    lo, mid = params.medium_low_upper, params.medium_mid_upper
    bands = ((0, LEVEL_MEDIUM, "#2ca02c", "low"), (LEVEL_MEDIUM, lo, "#bcbd22", "medium-low"),
             (lo, mid, "#ffbf00", "medium-mid"), (mid, LEVEL_HIGH, "#ff7f0e", "medium-high"),
             (LEVEL_HIGH, 100, "#d62728", "high"))
    for y0, y1, color, _name in bands:
        if y1 > y0:
            ax_score.axhspan(y0, y1, color=color, alpha=0.08, linewidth=0)
    for y in sorted({LEVEL_MEDIUM, lo, mid, LEVEL_HIGH}):
        ax_score.axhline(y, color="0.45", linewidth=0.6, linestyle=":")
        ax_score.annotate(f"{y:g}", xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(3, 0),
                          textcoords="offset points", va="center", fontsize="x-small", color="0.35")
    strip = 4.0  # height of one node's deny strip above 100
    for i, (s, color) in enumerate(zip(series, colors, strict=True)):
        t = mdates.date2num(s.time)
        ax_score.plot(t, s.score, color=color, linewidth=0.9, label=f"score {s.label}")
        spans = deny_spans(t, s.deny)
        if spans:
            if len(series) == 1:
                ax_score.broken_barh(spans, (0, 100), facecolors="#d62728", alpha=0.10, linewidth=0)
            ax_score.broken_barh(spans, (101 + i * strip, strip * 0.8), facecolors=color, linewidth=0,
                                 label=f"deny {s.label}")
    ax_score.set_ylim(0, 101 + max(1, len(series)) * strip)
    if reviews:
        times = mdates.date2num([r.time for r in reviews])
        ys = [r.score if math.isfinite(r.score) else 1.0 for r in reviews]
        ax_score.plot(times, ys, linestyle="none", marker="^", markersize=5, markerfacecolor="white",
                      markeredgecolor="black", label="admission review")
    ax_score.set_ylabel("score")
    ax_score.set_title(title, fontsize="medium")

    # Panel 2: signed friction and energy.
    ax_fe.axhline(0, color="0.6", linewidth=0.6)
    for s, color in zip(series, colors, strict=True):
        t = mdates.date2num(s.time)
        ax_fe.plot(t, s.friction, color=color, linewidth=0.8, label=f"friction {s.label}")
        ax_fe.plot(t, s.energy, color=color, linewidth=0.8, linestyle="--", label=f"energy {s.label}")
    ax_fe.set_ylabel("friction (signed) / energy")

    # Panel 3: CPU and PSI.
    for s, color in zip(series, colors, strict=True):
        t = mdates.date2num(s.time)
        ax_load.plot(t, s.cpu, color=color, linewidth=0.8, label=f"CPU {s.label}")
        ax_load.plot(t, s.psi, color=color, linewidth=0.8, linestyle="--", label=f"PSI {s.label}")
    ax_load.set_ylabel("CPU % / PSI %")
    ax_load.set_ylim(0, 100)

    locator = mdates.AutoDateLocator()
    ax_load.xaxis.set_major_locator(locator)
    ax_load.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for ax in (ax_score, ax_fe, ax_load):
        ax.grid(True, axis="x", color="0.9", linewidth=0.5)
        ax.margins(x=0)
        # Outside, right of the band labels: the data may be anywhere in the panel.
        ax.legend(loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize="x-small", borderaxespad=0.0)
    fig.subplots_adjust(left=0.07, right=0.82, top=0.95, bottom=0.07, hspace=0.08)

    tmp = output.with_name(f".{output.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=size.dpi)
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PlotError(f"{output}: cannot write: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    d = DecisionParams()
    p = argparse.ArgumentParser(
        prog="python -m scorer.plot",
        description="Plot scores with bands and decisions, signed friction and energy, CPU and PSI from "
                    "fuzzy_monitor.csv files and/or replay outputs (python -m scorer.replay) into one PNG.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN.csv",
                   help="fuzzy_monitor.csv (one line per node) or replay output (node = file stem), by header")
    p.add_argument("--output", "-o", type=Path, required=True, help="PNG to write (replaced if present)")
    p.add_argument("--scores", type=Path, help="fuzzy_score.csv: mark each recorded admission review")
    p.add_argument("--node", help="plot only this node of the fuzzy_monitor.csv inputs (replay inputs are kept)")
    p.add_argument("--width", type=int, default=1400, help="image width in pixels (default 1400)")
    p.add_argument("--height", type=int, default=900, help="image height in pixels (default 900)")
    p.add_argument("--dpi", type=float, default=100.0, help="text and line scale, dots per inch (default 100)")
    p.add_argument("--medium-low-upper", type=float, default=d.medium_low_upper,
                   help=f"lo band line, as the scorer's FUZZY_MEDIUM_LOW_UPPER (default {d.medium_low_upper:g})")
    p.add_argument("--medium-mid-upper", type=float, default=d.medium_mid_upper,
                   help=f"mid band line, as the scorer's FUZZY_MEDIUM_MID_UPPER (default {d.medium_mid_upper:g})")
    p.add_argument("--title", help="figure title (default: the input file names)")
    return p


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problems = []
    for name, value in (("--width", args.width), ("--height", args.height)):
        if not MIN_PX <= value <= MAX_PX:
            problems.append(f"{name} {value}: expected {MIN_PX}…{MAX_PX} pixels")
    if not (math.isfinite(args.dpi) and MIN_DPI <= args.dpi <= MAX_DPI):
        problems.append(f"--dpi {args.dpi:g}: expected {MIN_DPI}…{MAX_DPI}")
    try:
        params = DecisionParams(medium_low_upper=args.medium_low_upper, medium_mid_upper=args.medium_mid_upper)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise PlotError("invalid options: " + "; ".join(problems))
    if args.output.suffix.lower() != ".png":
        raise PlotError(f"{args.output}: the output is a PNG; name it *.png")

    series = [s for path in args.inputs for s in load_series(path)]
    if args.node is not None:
        monitor_nodes = sorted({s.node for s in series if s.kind == KIND_MONITOR})
        if args.node not in monitor_nodes:
            raise PlotError(f"--node {args.node}: in none of the fuzzy_monitor.csv inputs; nodes there: "
                            f"{', '.join(monitor_nodes) or 'none (replay outputs hold one node each)'}")
        series = [s for s in series if s.kind == KIND_REPLAY or s.node == args.node]
    _label(series)
    reviews = None
    if args.scores is not None:
        reviews = load_reviews(args.scores)
        if args.node is not None:
            reviews = [r for r in reviews if r.node in ("", args.node)]
    title = args.title or "ksense scores: " + ", ".join(p.name for p in args.inputs)
    size = Size(args.width, args.height, args.dpi)
    render(series, reviews, args.output, size, params, title)
    rows = sum(len(s.time) for s in series)
    print(f"plot: {len(series)} series, {rows} rows"
          + (f", {len(reviews)} admission reviews" if reviews is not None else "")
          + f" -> {args.output} ({args.width}x{args.height} px)")
    return 0


def _label(series: list[Series]) -> None:
    """Label each series by its node, adding the file name when two files hold the same node."""
    counts: dict[str, int] = {}
    for s in series:
        counts[s.node] = counts.get(s.node, 0) + 1
    for s in series:
        s.label = s.node if counts[s.node] == 1 else f"{s.node} ({s.path.name})"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except PlotError as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""kernel_metrics.csv rows <-> values (docs/metrics.md#kernel_metricscsv), pure.

The formats are the prototype's, so recordings such as data/reference/kernel_metrics_real.csv.gz
load in every tool. Splitting lines into fields (and quoting) is the shell's job (`csv`);
here a row is a sequence of strings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from common.core.model import Derived, RawInterval
from common.names import KERNEL_METRICS_COLUMNS, MODE_CALIBRATING, MODE_FROZEN

_EPOCH = datetime(1970, 1, 1)


class RowError(ValueError):
    """A kernel_metrics.csv row that cannot be read; the message names line and column."""

    def __init__(self, line: int, column: str | None, problem: str):
        where = f"line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{where}: {problem}")
        self.line = line
        self.column = column


def format_time(ts: datetime) -> str:
    """`YYYY-MM-DD HH:MM:SS.mmm` (local wall time, milliseconds)."""
    return ts.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def parse_time(text: str) -> datetime:
    """Accept `Time` with or without milliseconds."""
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(text, fmt)


def time_seconds(ts: datetime) -> float:
    """Seconds since 1970 of a naive wall time, without time-zone or DST arithmetic."""
    return (ts - _EPOCH).total_seconds()


def format_number(value: float | None, decimals: int) -> str:
    """`value` with `decimals` decimals; an empty cell when there is no value (None, NaN, ±inf).
    Every ksense CSV writes its numbers this way."""
    return "" if value is None or not math.isfinite(value) else f"{value:.{decimals}f}"


def _i(value: int | None) -> str:
    return "" if value is None else str(int(value))


def format_row(raw: RawInterval, derived: Derived) -> list[str]:
    """The 23 cells of one row, in docs/metrics.md order."""
    return [
        format_time(raw.time),
        format_number(raw.sched_total_ms, 2),
        format_number(raw.sched_avg_ms, 4),
        format_number(raw.sched_p95_ms, 4),
        format_number(raw.sched_p99_ms, 4),
        format_number(raw.sched_max_ms, 4),
        _i(raw.sched_count),
        _i(raw.sched_dropped),
        format_number(raw.dstate_total_ms, 2),
        _i(raw.dstate_count),
        format_number(raw.softirq_total_ms, 2),
        _i(raw.softirq_count),
        format_number(raw.cpu_util, 6),
        format_number(raw.psi, 6),
        MODE_FROZEN if derived.frozen else MODE_CALIBRATING,
        _i(derived.samples),
        format_number(derived.friction, 6),
        format_number(derived.direction, 1),
        format_number(derived.df_dt, 6),
        format_number(derived.energy, 6),
        _i(derived.energy_w),
        format_number(derived.energy_vol, 6),
        format_number(derived.energy_k, 6),
    ]


def check_header(fields: Sequence[str], line: int = 1) -> None:
    """Raise RowError unless `fields` is exactly the 23-column header."""
    if tuple(f.strip() for f in fields) != KERNEL_METRICS_COLUMNS:
        raise RowError(
            line, None, f"header is not the {len(KERNEL_METRICS_COLUMNS)}-column kernel_metrics.csv header"
        )


def _float(cell: str, line: int, column: str) -> float:
    if cell == "":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise RowError(line, column, f"not a number: {cell!r}") from None


def _int(cell: str, line: int, column: str) -> int | None:
    if cell == "":
        return None
    try:
        return int(float(cell))
    except ValueError:
        raise RowError(line, column, f"not an integer: {cell!r}") from None


def parse_row(fields: Sequence[str], line: int) -> tuple[RawInterval, Derived]:
    """One data row -> (raw columns, the derived columns as recorded). `line` is 1-based."""
    if len(fields) != len(KERNEL_METRICS_COLUMNS):
        raise RowError(line, None, f"expected {len(KERNEL_METRICS_COLUMNS)} fields, got {len(fields)}")
    c = dict(zip(KERNEL_METRICS_COLUMNS, fields, strict=True))
    try:
        ts = parse_time(c["Time"])
    except ValueError:
        raise RowError(line, "Time", f"not a time: {c['Time']!r}") from None
    raw = RawInterval(
        time=ts,
        t=time_seconds(ts),
        sched_total_ms=_float(c["SchedLat_Total_ms"], line, "SchedLat_Total_ms"),
        sched_avg_ms=_float(c["SchedLat_Avg_ms"], line, "SchedLat_Avg_ms"),
        sched_p95_ms=_float(c["SchedLat_P95_ms"], line, "SchedLat_P95_ms"),
        sched_p99_ms=_float(c["SchedLat_P99_ms"], line, "SchedLat_P99_ms"),
        sched_max_ms=_float(c["SchedLat_Max_ms"], line, "SchedLat_Max_ms"),
        sched_count=_int(c["SchedLat_Count"], line, "SchedLat_Count"),
        sched_dropped=_int(c["SchedLat_Dropped"], line, "SchedLat_Dropped"),
        dstate_total_ms=_float(c["DState_Total_ms"], line, "DState_Total_ms"),
        dstate_count=_int(c["DState_Count"], line, "DState_Count"),
        softirq_total_ms=_float(c["SoftIRQ_Total_ms"], line, "SoftIRQ_Total_ms"),
        softirq_count=_int(c["SoftIRQ_Count"], line, "SoftIRQ_Count"),
        cpu_util=_float(c["CPUUtil"], line, "CPUUtil"),
        psi=_float(c["PSI"], line, "PSI"),
    )
    mode = c["BaselineMode"]
    if mode not in (MODE_CALIBRATING, MODE_FROZEN):
        raise RowError(line, "BaselineMode", f"expected {MODE_CALIBRATING} or {MODE_FROZEN}, got {mode!r}")
    w = _int(c["Energy_W"], line, "Energy_W")
    vol = _float(c["Energy_Vol"], line, "Energy_Vol")
    k = _float(c["Energy_kFactor"], line, "Energy_kFactor")
    recorded = Derived(
        frozen=mode == MODE_FROZEN,
        samples=_int(c["BaselineSamples"], line, "BaselineSamples") or 0,
        warmup_remaining_s=math.nan,
        friction=_float(c["Friction"], line, "Friction"),
        direction=_float(c["Direction"], line, "Direction"),
        df_dt=_float(c["dF_dt"], line, "dF_dt"),
        energy=_float(c["Energy"], line, "Energy"),
        energy_w=40 if w is None else w,
        energy_vol=0.0 if math.isnan(vol) else vol,
        energy_k=1.0 if math.isnan(k) else k,
    )
    return raw, recorded

"""A small synthetic recording directory in lab record's layout, for the readers' tests."""

from __future__ import annotations

import csv
import gzip
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from common.core.csvrow import format_row, format_time
from common.core.model import Derived, RawInterval
from common.names import KERNEL_METRICS_COLUMNS
from lab.record import PHASE_COLUMNS
from lab.tenant import CLIENT_COLUMNS, summary_row

T0 = datetime(2026, 3, 1, 12, 0, 0, 400_000)


def write_recording(directory: Path, *, seconds: int = 120, warmup: int = 30, client_shift_s: int = 0,
                    phases: list[tuple[int, int, str]] | None = None, gz: bool = False, seed: int = 1,
                    busy: dict[str, float] | None = None) -> Path:
    """Kernel rows every second from T0 (baseline frozen after `warmup`), a client second per
    kernel second (shifted by `client_shift_s`), and phases (start s, end s, stressor) — by
    default warmup, then cpu with a hurting tenant, then quiet. `busy` sets the stressed
    seconds' cpu, psi, friction and energy (default: plainly overloaded)."""
    load = {"cpu": 100.0, "psi": 40.0, "friction": 90.0, "energy": 50.0, **(busy or {})}
    directory.mkdir(parents=True, exist_ok=True)
    phases = phases or [(0, warmup, "warmup"), (warmup, 80, "cpu"), (80, seconds, "quiet")]
    stress = {s for a, b, name in phases if name not in ("warmup", "quiet") for s in range(a, b)}
    def opener(p: Path):
        return gzip.open(p.with_name(p.name + ".gz"), "wt", newline="") if gz else open(p, "w", newline="")

    with opener(directory / "kernel_metrics.csv") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(KERNEL_METRICS_COLUMNS)
        for i in range(seconds):
            busy = i in stress
            raw = RawInterval(time=T0 + timedelta(seconds=i + 1), t=float(i), sched_total_ms=10.0, sched_avg_ms=0.01,
                              sched_p95_ms=0.02, sched_p99_ms=2.0 if busy else 0.05, sched_max_ms=3.0,
                              sched_count=1000, sched_dropped=0, dstate_total_ms=0.0, dstate_count=0,
                              softirq_total_ms=1.0, softirq_count=100, cpu_util=load["cpu"] if busy else 5.0,
                              psi=load["psi"] if busy else 0.5)
            frozen = i >= warmup
            derived = Derived(frozen=frozen, samples=min(i, warmup), warmup_remaining_s=max(0, warmup - i),
                              friction=(load["friction"] if busy else 3.0) if frozen else float("nan"),
                              direction=1.0 if frozen else float("nan"),
                              energy=(load["energy"] if busy else 2.0) if frozen else float("nan"))
            w.writerow(format_row(raw, derived))
    with opener(directory / "client_latency.csv") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CLIENT_COLUMNS)
        epoch0 = int((T0 - datetime(1970, 1, 1)).total_seconds())
        for i in range(seconds):
            second = epoch0 + i + client_shift_s
            lat = [8.0] * 10 if i in stress else [1.0] * 10
            row = summary_row(second, lat, 0)
            # summary_row writes local time; the test recordings are naive like the exporter's.
            row[0] = (datetime(1970, 1, 1) + timedelta(seconds=second)).strftime("%Y-%m-%d %H:%M:%S")
            w.writerow(row)
    with opener(directory / "phases.csv") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(PHASE_COLUMNS)
        for a, b, name in phases:
            w.writerow([format_time(T0 + timedelta(seconds=a)), format_time(T0 + timedelta(seconds=b)), name,
                        "0.00" if name in ("warmup", "quiet") else "1.00", ""])
    (directory / "meta.json").write_text(json.dumps({"seed": seed, "started": format_time(T0), "cpus": 2}))
    return directory


@pytest.fixture
def recording_dir(tmp_path: Path) -> Path:
    return write_recording(tmp_path / "rec")

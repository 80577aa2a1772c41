"""Helpers shared by the benchmarks: the bpf_stats sysctl and timed local commands."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 for the block, then the previous value again (accounting
    costs two clock reads per program run, so it is not left on)."""
    old = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1\n")
    try:
        yield
    finally:
        BPF_STATS.write_text(old + "\n")


def run_timed(cmd: list[str], timeout: float = 60.0) -> tuple[float, str]:
    """Run a local command to completion; (wall seconds, stdout). Raises on failure."""
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return time.monotonic() - start, done.stdout


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table: first column left-aligned, the figures right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for j, r in enumerate([header, *rows]):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        print("  ".join(cells))
        if j == 0:
            print("  ".join("-" * w for w in widths))

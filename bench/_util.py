"""Helpers shared by the benchmarks: the bpf_stats sysctl and timed local commands."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
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

"""Helpers shared by the benchmarks: the harness error and entry point, free ports, the
bpf_stats sysctl, timed local commands and the result table."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


class HarnessError(RuntimeError):
    """The measurement itself failed (a process died, a server did not start, a request failed)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the measured server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the processes


def run_main(name: str, main: Callable[[], int]) -> None:
    """A benchmark's `__main__`: SIGTERM unwinds like Ctrl-C (its processes are stopped), and a
    harness failure is one line on stderr and exit 1."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        sys.exit(main())
    except (HarnessError, OSError, subprocess.SubprocessError) as exc:
        print(f"{name}: harness failure: {exc}", file=sys.stderr)
        sys.exit(1)


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

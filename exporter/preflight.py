"""Can eBPF run here? The checks collector_only.py makes before it starts, each with its fix.

The checks are cheap and side-effect free: effective uid, whether Debian's bcc module can be
found (without importing it: only the loader imports bcc), and whether tracefs is mounted.
Each failure carries the exact commands that fix it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str


def check(
    *,
    euid: int | None = None,
    bcc_found: bool | None = None,
    tracefs: Path | None = None,
) -> list[Problem]:
    """Every reason eBPF cannot start, in the order a user should fix them."""
    tracefs = TRACEFS if tracefs is None else tracefs
    euid = os.geteuid() if euid is None else euid
    bcc_found = importlib.util.find_spec("bcc") is not None if bcc_found is None else bcc_found
    problems = []
    if euid != 0:
        problems.append(
            Problem(
                "not running as root: loading eBPF programs needs root (CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN)",
                "sudo -E .venv/bin/python collector_only.py",
            )
        )
    if not bcc_found:
        problems.append(
            Problem(
                "the bcc Python module is missing (Debian's python3-bpfcc, not the PyPI package 'bcc')",
                "sudo apt-get install -y bpfcc-tools python3-bpfcc linux-headers-amd64\n"
                "    sudo scripts/setup.sh   # links bcc into .venv and the kernel headers bcc needs",
            )
        )
    if not (tracefs / "events" / "sched").is_dir():
        problems.append(
            Problem(
                f"tracefs is not mounted at {tracefs}: tracepoints cannot be found",
                f"sudo mount -t tracefs nodev {tracefs}\n"
                "    sudo mount -t debugfs none /sys/kernel/debug   # older kernels expose tracing there",
            )
        )
    return problems


def report(problems: list[Problem]) -> str:
    lines = ["collector_only: cannot start eBPF collection:"]
    for p in problems:
        lines.append(f"  - {p.what}\n    fix: {p.fix}")
    lines.append("(or run without eBPF: --source procfs, or replay a recording: --source replay:FILE)")
    return "\n".join(lines)

"""Child processes the lab starts, each in its own process group, and stopped for sure.

A recording runs stressors that fork (stress-ng workers, hackbench groups): stopping only the
parent would leave the workers burning the next phase. Every child here is a session leader;
`stop` signals the whole group, waits, then kills it. `missing_tools` names what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: Debian package of each external tool the lab runs.
PACKAGES = {
    "stress-ng": "stress-ng", "hackbench": "rt-tests", "iperf3": "iperf3", "redis-server": "redis-server",
}


def missing_tools(tools: Sequence[str]) -> list[str]:
    """`tool (apt-get install PACKAGE)` for each tool not on PATH."""
    return [f"{t} (apt-get install {PACKAGES.get(t, t)})" for t in tools if shutil.which(t) is None]


class Child:
    """One started command; its stderr goes to `log` so a failing stressor can be diagnosed."""

    def __init__(self, argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
                 preexec: Callable[[], None] | None = None, stdout: int | None = subprocess.DEVNULL):
        self.argv = list(argv)
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err,
                                         env=env, start_new_session=True, preexec_fn=preexec)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after `grace_s`; returns the exit status."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        # Workers of a group may outlive their leader: always sweep the group.
        _signal_group(self.proc.pid, signal.SIGKILL)
        try:
            return self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            return None


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all(children: Sequence[Child]) -> None:
    """Stop every child: all signalled first, so their grace periods overlap."""
    for child in children:
        if child.alive():
            _signal_group(child.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(max(0.0, deadline - time.monotonic()))
    for child in children:
        child.stop(grace_s=2.0)

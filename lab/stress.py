"""Stressors as real processes: a schedule phase (`lab.core.schedule`) turned into commands.

`commands` is pure (what would run, for the schedule's intensity and this machine's CPUs);
`Stress` starts and stops them. Memory pressure needs a memory limit to reclaim against:
the workers run in a memory cgroup of their own (cgroup v2 `memory.max` where the unified
hierarchy has the memory controller, else cgroup v1 `memory.limit_in_bytes`), removed after.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from lab.procs import Child, stop_all

#: Memory limit of the memory stressor's cgroup; its workers allocate 0.7-1.5 × this.
MEMORY_LIMIT_MIB = 128
TOOLS = ("stress-ng", "hackbench", "iperf3")


@dataclass(frozen=True)
class Command:
    """One process of a stressor: argv, and whether it runs inside the memory cgroup."""

    argv: tuple[str, ...]
    memory_cgroup: bool = False


def cpu_workers(intensity: float, cpus: int) -> int:
    """Busy workers of the `cpu` stressor: 1 up to 2 per CPU."""
    return max(1, round(max(0.0, min(1.0, intensity)) * 2 * cpus))


def partial_load(intensity: float) -> int:
    """Busy percentage of each `cpu-partial` worker (one per CPU): 30 up to 100."""
    return round(30 + 70 * max(0.0, min(1.0, intensity)))


def label(stressor: str, intensity: float, cpus: int) -> str:
    """A phase's name for reports: CPU stressors by what they load (`cpu 3 hogs`,
    `cpu-partial 65%` rounded to tens), the others by name (a mix is `mix`)."""
    if stressor == "cpu":
        n = cpu_workers(intensity, cpus)
        return f"cpu {n} hog{'s' if n > 1 else ''}"
    if stressor == "cpu-partial":
        return f"cpu-partial {round(partial_load(intensity), -1):.0f}%"
    return "mix" if stressor.startswith("mix:") else stressor


def commands(stressor: str, intensity: float, cpus: int, tmp: Path, port: int) -> list[Command]:
    """The processes of one stressor at `intensity` in (0, 1] (see lab.core.schedule)."""
    scale = max(0.0, min(1.0, intensity))
    if stressor == "cpu":
        return [Command(("stress-ng", "-q", "--cpu", str(cpu_workers(scale, cpus)), "--cpu-load", "100"))]
    if stressor == "cpu-partial":
        return [Command(("stress-ng", "-q", "--cpu", str(cpus), "--cpu-load", str(partial_load(scale))))]
    if stressor == "hackbench":
        groups = max(1, round(scale * 4))
        return [Command(("hackbench", "-g", str(groups), "-l", "1000000000", "-s", "100"))]
    if stressor == "memory":
        total = MEMORY_LIMIT_MIB * (0.7 + 0.8 * scale)
        return [Command(("stress-ng", "-q", "--vm", "2", "--vm-bytes", f"{round(total / 2)}M"), memory_cgroup=True)]
    if stressor == "io":
        workers = max(1, round(scale * 4))
        return [Command(("stress-ng", "-q", "--hdd", str(workers), "--hdd-opts", "sync", "--hdd-bytes", "64M",
                         "--temp-path", str(tmp)))]
    if stressor == "netrx":
        rate = f"{max(1, round(scale * 10))}G"
        return [Command(("iperf3", "-s", "-B", "127.0.0.1", "-p", str(port))),
                Command(("sh", "-c", f"sleep 0.5; exec iperf3 -c 127.0.0.1 -p {port} -t 86400 -P 2 -b {rate}"))]
    raise ValueError(f"unknown stressor {stressor!r}")


class MemoryCgroup:
    """A memory cgroup with a limit; `enter` moves the calling process in (a preexec hook)."""

    def __init__(self, limit_mib: int, name: str):
        unified = Path("/sys/fs/cgroup")
        if not (unified / "cgroup.controllers").exists():
            unified = Path("/sys/fs/cgroup/unified")
        controllers = (unified / "cgroup.controllers").read_text().split() if unified.exists() else []
        if "memory" in controllers:
            self.path, limit_file = unified / name, "memory.max"
        elif Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():
            self.path, limit_file = Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes"
        else:
            raise OSError("no memory cgroup controller (neither cgroup v2 memory nor v1 /sys/fs/cgroup/memory)")
        self.path.mkdir(exist_ok=True)
        (self.path / limit_file).write_text(str(limit_mib * 1024 * 1024))
        self._procs = str(self.path / "cgroup.procs")

    def enter(self) -> None:
        with open(self._procs, "w") as f:
            f.write(str(os.getpid()))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


class Stress:
    """The processes of one phase; `stop` ends them all."""

    def __init__(self, parts: tuple[str, ...], intensity: float, *, cpus: int, tmp: Path, port: int, log: Path):
        self.children: list[Child] = []
        self.cgroup: MemoryCgroup | None = None
        try:
            for part in parts:
                for cmd in commands(part, intensity, cpus, tmp, port):
                    preexec = None
                    if cmd.memory_cgroup:
                        if self.cgroup is None:
                            self.cgroup = MemoryCgroup(MEMORY_LIMIT_MIB, f"ksense-lab-{os.getpid()}")
                        preexec = self.cgroup.enter
                    self.children.append(Child(cmd.argv, log, preexec=preexec))
        except BaseException:
            self.stop()
            raise

    @property
    def argv(self) -> str:
        return " & ".join(" ".join(c.argv) for c in self.children)

    def dead(self) -> list[str]:
        """Commands that exited before their phase ended (a stressor that failed to run)."""
        return [" ".join(c.argv) for c in self.children if not c.alive()]

    def stop(self) -> None:
        stop_all(self.children)
        if self.cgroup is not None:
            self.cgroup.remove()

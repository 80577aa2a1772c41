"""What the exporter costs the node it watches: CPU, memory and time to the first CSV row.

Starts `python -m exporter --source ebpf` at 1 Hz with the CSV on (temp file, temp state dir,
free port) and, in the same run and sampled at the same instants, two baselines:
- the **floor**: a bare interpreter that imports numpy + prometheus_client and then sleeps 1 s
  in a loop. Its CPU is what any idle Python process costs here (timer wakeups, measurement
  noise); its RSS is what the exporter's two heavy imports cost before any ksense code runs.
- the **procfs source** (`--source procfs`, same flags): the same exporter without eBPF, so the
  ratio shows what the eBPF path costs in user space relative to the fallback.

Figures (goals and prototype references from the issue's benchmark section):
1. start → first CSV row: Popen to the first complete data row in the file (polled every
   10 ms), median of 3 start-ups (2 with --quick); baseline = wall time of
   `python -c 'import numpy, prometheus_client'` (median of 3), the least any Python exporter
   with those imports can take. The eBPF source first lets a partial window after attach pass
   (it only warms the deltas, docs/design.md#one-interval), so its first row cannot come sooner than the source's
   open + that window + one interval. Goal ≤ 2 s; prototype 1.5 s.
2. CPU, % of one core = Δ(utime + stime) of /proc/<pid>/stat ÷ Δwall, over ~20 s idle and ~20 s
   under `stress-ng --cpu 2 --sock 1` (CPU saturation plus loopback TCP, i.e. NET_RX softirqs).
   /proc/<pid>/stat counts in clock ticks (10 ms), ±0.05 % of a core over 20 s, so the
   nanosecond on-CPU time of the live threads (/proc/<pid>/task/*/schedstat) is printed beside
   it and gives the ×floor ratio. Nothing scrapes /metrics during the phases (Prometheus' 15 s
   scrapes are measured by bench.scrape_latency). Kernel time of the BPF programs is charged
   to the traced tasks, not to the exporter: bench.bpf_cost measures it. Goal ≤ 0.2 %;
   prototype user CPU 0.13–0.17 %.
3. steady RSS: median of /proc/<pid>/status VmRSS sampled once a second in both phases, in MiB
   (kB ÷ 1024, as ps and top show it), with its anonymous and file-backed parts (shared
   libraries such as bcc's LLVM count in full in RssFile). Goal ≤ 120; prototype 164.

Exits 0 when a goal is missed (the verdict says MISS), non-zero only when the harness fails.
Run: .venv/bin/python -m bench.exporter_cost [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench._util import HarnessError, free_port, print_table, run_main
from exporter.config import ExporterConfig

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

GOAL_CPU_PCT = 0.2
GOAL_RSS_MIB = 120.0
GOAL_FIRST_ROW_S = 2.0
PROTO_USER_CPU_PCT = (0.13, 0.17)
PROTO_RSS_MIB = 164.0
PROTO_FIRST_ROW_S = 1.5

MIN_TICKS = 5  # fewest clock ticks a tick-based baseline needs before a ratio to it is printed

FLOOR_IMPORT = "import numpy, prometheus_client"
FLOOR_SLEEPER = FLOOR_IMPORT + "\nimport time\nwhile True:\n    time.sleep(1)"


# --- processes -----------------------------------------------------------------------------------
def spawn(cmd: Sequence[str], log: Path) -> subprocess.Popen:
    """Start `cmd` in its own session (so its whole process group can be killed) with stdout
    and stderr going to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; idempotent."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    # Anything left in the group (a child that outlived its parent).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Exporter:
    """One exporter process with its own port, CSV, state dir and log under `workdir`."""

    source: str
    workdir: Path
    csv: bool = True
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    started: float = 0.0

    @property
    def csv_path(self) -> Path:
        return self.workdir / "kernel_metrics.csv"

    @property
    def log(self) -> Path:
        return self.workdir / "exporter.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # once attached, the exporter writes as ExporterConfig.run_as, as deployed
            self.workdir.parent.chmod(0o755)
            os.chown(self.workdir, *ExporterConfig.run_as)
        cmd = [
            PYTHON,
            "-m",
            "exporter",
            "--source",
            self.source,
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--interval",
            "1",
            "--state-dir",
            str(self.workdir / "state"),
        ]
        cmd += ["--csv", str(self.csv_path)] if self.csv else ["--no-csv"]
        self.started = time.monotonic()
        self.proc = spawn(cmd, self.log)

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise HarnessError(f"exporter ({self.source}) exited with {code}:\n{tail(self.log)}")

    def wait_first_row(self, timeout: float = 20.0) -> float:
        """Seconds from Popen to the first complete data row in the CSV."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.csv_path.read_bytes().count(b"\n") >= 2:  # header + one whole row
                    return time.monotonic() - self.started
            self.check_alive()
            time.sleep(0.01)
        raise HarnessError(f"no CSV row from the {self.source} exporter within {timeout:.0f} s:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@contextlib.contextmanager
def running(procs: list[subprocess.Popen], exporters: list[Exporter]) -> Iterator[None]:
    """Stop every process and exporter on the way out, errors included."""
    try:
        yield
    finally:
        for proc in procs:
            stop(proc)
        for exp in exporters:
            exp.stop()


# --- /proc sampling -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CpuSample:
    wall: float
    ticks: tuple[int, int]  # (utime, stime) in clock ticks, from /proc/<pid>/stat
    tasks_ns: dict[int, int]  # tid -> on-CPU ns, from /proc/<pid>/task/<tid>/schedstat


def cpu_sample(pid: int) -> CpuSample:
    wall = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state) of proc(5)
    tasks: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            tasks[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return CpuSample(wall, (int(fields[11]), int(fields[12])), tasks)


@dataclass(frozen=True)
class Cpu:
    total_ticks: int  # Δ(utime + stime)
    user_ticks: int
    sched_ns: int  # on-CPU ns of the threads alive at both ends
    wall: float

    def pct(self, ticks: int) -> float:
        return ticks / CLK_TCK / self.wall * 100

    @property
    def total_pct(self) -> float:
        return self.pct(self.total_ticks)

    @property
    def user_pct(self) -> float:
        return self.pct(self.user_ticks)

    @property
    def sched_pct(self) -> float:
        return self.sched_ns / 1e9 / self.wall * 100


def cpu_between(a: CpuSample, b: CpuSample) -> Cpu:
    return Cpu(
        total_ticks=sum(b.ticks) - sum(a.ticks),
        user_ticks=b.ticks[0] - a.ticks[0],
        sched_ns=sum(ns - a.tasks_ns[tid] for tid, ns in b.tasks_ns.items() if tid in a.tasks_ns),
        wall=b.wall - a.wall,
    )


RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile")


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS and its anonymous and file-backed parts (shared libraries count in full), MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in RSS_FIELDS:
            out[key] = int(rest.split()[0]) / 1024
    if len(out) != len(RSS_FIELDS):
        raise HarnessError(f"no {RSS_FIELDS} in /proc/{pid}/status")
    return out


def system_counters() -> tuple[float, int, int]:
    """(monotonic time, busy ticks, context switches) of the whole machine, from /proc/stat."""
    busy = ctxt = 0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            busy = sum(v[:8]) - v[3] - v[4]  # all but idle and iowait (guest time is inside user)
        elif line.startswith("ctxt "):
            ctxt = int(line.split()[1])
    return time.monotonic(), busy, ctxt


@dataclass
class Phase:
    name: str
    cpu: dict[str, Cpu]
    rss: dict[str, list[dict[str, float]]]
    machine_busy_pct: float
    ctxt_per_s: float
    csv_rows: int = 0

    def steady_rss(self, who: str, part: str = "VmRSS") -> list[float]:
        return [r[part] for r in self.rss[who]]


def measure_phase(name: str, pids: dict[str, int], seconds: float, alive: Callable[[], None]) -> Phase:
    """Sample every process at the same instants: CPU at both ends, RSS once a second."""
    rss: dict[str, list[dict[str, float]]] = {k: [] for k in pids}
    sys0 = system_counters()
    first = {k: cpu_sample(pid) for k, pid in pids.items()}
    end = time.monotonic() + seconds
    while True:
        alive()
        for k, pid in pids.items():
            rss[k].append(rss_mib(pid))
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(1.0, left))
    last = {k: cpu_sample(pid) for k, pid in pids.items()}
    sys1 = system_counters()
    wall = sys1[0] - sys0[0]
    return Phase(
        name=name,
        cpu={k: cpu_between(first[k], last[k]) for k in pids},
        rss=rss,
        machine_busy_pct=(sys1[1] - sys0[1]) / CLK_TCK / wall / (os.cpu_count() or 1) * 100,
        ctxt_per_s=(sys1[2] - sys0[2]) / wall,
    )


def csv_rows(path: Path) -> int:
    return max(path.read_bytes().count(b"\n") - 1, 0)


# --- report ---------------------------------------------------------------------------------------
def ratio(a: float, b: float | None) -> str:
    if b is None:
        return "-"
    if b <= 0:
        return "∞" if a > 0 else "-"
    return f"{a / b:.2f}" if a / b < 100 else f"{a / b:.0f}"


def verdict(value: float, goal: float) -> str:
    return "PASS" if value <= goal else "MISS"




HEADER = ["figure", "ksense", "floor", "×floor", "procfs", "×procfs", "prototype", "×proto", "goal", "result"]


def row(
    figure: str,
    value: float,
    floor: float | None,
    procfs: float | None,
    *,
    fmt: str = ".3f",
    proto: float | None = None,
    proto_text: str | None = None,
    goal: float | None = None,
    floor_ratio: str | None = None,
    procfs_ratio: str | None = None,
) -> list[str]:
    """One table row: the figure, each baseline with the ratio ksense ÷ baseline, goal, verdict."""

    def show(x: float | None) -> str:
        return "-" if x is None else format(x, fmt)

    return [
        figure,
        show(value),
        show(floor),
        floor_ratio if floor_ratio is not None else ratio(value, floor),
        show(procfs),
        procfs_ratio if procfs_ratio is not None else ratio(value, procfs),
        proto_text or show(proto),
        ratio(value, proto),
        "-" if goal is None else f"≤ {goal:g}",
        "-" if goal is None else verdict(value, goal),
    ]


def tick_ratio(value: Cpu, base: Cpu, user: bool = False) -> str:
    """Ratio of two tick-based figures; none when the baseline has too few clock ticks to mean
    anything (a single tick more or less would change it by 20 % or more)."""
    ticks = base.user_ticks if user else base.total_ticks
    if ticks < MIN_TICKS:
        return f"<{MIN_TICKS} ticks"
    return ratio(value.user_pct if user else value.total_pct, base.pct(ticks))


def report(
    phases: Sequence[Phase], first_row: dict[str, list[float]], floor_starts: Sequence[float], seconds: float
) -> None:
    ncpu = os.cpu_count() or 1
    print(f"ksense exporter cost — {ncpu} CPUs, interval 1 s, {seconds:.0f} s per phase, every figure from this run")
    print("  ksense = python -m exporter --source ebpf (CSV on)")
    print("  floor  = python that imports numpy + prometheus_client, then sleeps 1 s in a loop")
    print("  procfs = the same exporter with --source procfs (no eBPF)")
    for ph in phases:
        print(
            f"  phase {ph.name:<4}: machine busy {ph.machine_busy_pct:5.1f} %, "
            f"{ph.ctxt_per_s:6.0f} context switches/s, ksense wrote {ph.csv_rows} CSV rows"
        )
    print()

    proto_user = sum(PROTO_USER_CPU_PCT) / 2
    table: list[list[str]] = []
    for ph in phases:
        e, f, p = ph.cpu["ebpf"], ph.cpu["floor"], ph.cpu["procfs"]
        table.append(
            row(
                f"CPU {ph.name}: user+sys, % of a core (stat)",
                e.total_pct,
                f.total_pct,
                p.total_pct,
                goal=GOAL_CPU_PCT,
                floor_ratio=tick_ratio(e, f),
                procfs_ratio=tick_ratio(e, p),
            )
        )
        table.append(
            row(
                f"CPU {ph.name}: on-CPU, % of a core (schedstat)",
                e.sched_pct,
                f.sched_pct,
                p.sched_pct,
                goal=GOAL_CPU_PCT,
            )
        )
        table.append(
            row(
                f"CPU {ph.name}: user, % of a core (stat)",
                e.user_pct,
                f.user_pct,
                p.user_pct,
                proto=proto_user,
                proto_text=f"{PROTO_USER_CPU_PCT[0]}–{PROTO_USER_CPU_PCT[1]}",
                floor_ratio=tick_ratio(e, f, user=True),
                procfs_ratio=tick_ratio(e, p, user=True),
            )
        )

    def steady(who: str, part: str = "VmRSS") -> float:
        return statistics.median(x for ph in phases for x in ph.steady_rss(who, part))

    table.append(
        row(
            "RSS steady, MiB (median VmRSS)",
            steady("ebpf"),
            steady("floor"),
            steady("procfs"),
            fmt=".1f",
            proto=PROTO_RSS_MIB,
            goal=GOAL_RSS_MIB,
        )
    )
    table.append(
        row(
            "RSS max, MiB (VmRSS)",
            max(x for ph in phases for x in ph.steady_rss("ebpf")),
            max(x for ph in phases for x in ph.steady_rss("floor")),
            max(x for ph in phases for x in ph.steady_rss("procfs")),
            fmt=".1f",
            goal=GOAL_RSS_MIB,
        )
    )
    for part, what in (("RssAnon", "anonymous"), ("RssFile", "file-backed")):
        table.append(
            row(
                f"  of which {what} ({part})",
                steady("ebpf", part),
                steady("floor", part),
                steady("procfs", part),
                fmt=".1f",
            )
        )
    table.append(
        row(
            "start → first CSV row, s (median)",
            statistics.median(first_row["ebpf"]),
            statistics.median(floor_starts),
            statistics.median(first_row["procfs"]),
            fmt=".2f",
            proto=PROTO_FIRST_ROW_S,
            goal=GOAL_FIRST_ROW_S,
        )
    )
    print_table(HEADER, table)
    print()

    def runs(xs: Sequence[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    print("Ratios are ksense ÷ the column before.")
    print(
        f"First row: ksense {runs(first_row['ebpf'])} s, procfs {runs(first_row['procfs'])} s, floor = wall time of "
        f"`python -c '{FLOOR_IMPORT}'` {runs(floor_starts)} s."
    )
    print(
        f"stat counts {CLK_TCK} ticks/s: ±{100 / CLK_TCK / seconds:.2f} % of a core per phase, and its user/sys split "
        "is sampled at ticks; schedstat is exact (ns) for the threads alive through the phase."
    )


# --- run ------------------------------------------------------------------------------------------
def measure(seconds: float, startups: int) -> tuple[list[Phase], dict[str, list[float]], list[float]]:
    with tempfile.TemporaryDirectory(prefix="ksense-bench-") as tmp:
        work = Path(tmp)
        procs: list[subprocess.Popen] = []
        exporters: list[Exporter] = []

        def start_up(source: str) -> tuple[Exporter, list[float]]:
            """Start the exporter `startups` times, timing each first row; the last one keeps running."""
            times = []
            for i in range(startups):
                exp = Exporter(source, work / f"{source}-{i}")
                exporters.append(exp)
                exp.start()
                times.append(exp.wait_first_row())
                if i < startups - 1:
                    exp.stop()
            return exp, times

        with running(procs, exporters):
            # Floor of the start-up time, measured before anything else runs.
            floor_starts = []
            for _ in range(3):
                t0 = time.monotonic()
                subprocess.run([PYTHON, "-c", FLOOR_IMPORT], cwd=ROOT, check=True, timeout=30)
                floor_starts.append(time.monotonic() - t0)

            # The procfs exporter and the floor process first, so the eBPF exporter starts alone.
            procfs, procfs_starts = start_up("procfs")
            sleeper = spawn([PYTHON, "-c", FLOOR_SLEEPER], work / "floor.log")
            procs.append(sleeper)
            time.sleep(1.0)
            ebpf, ebpf_starts = start_up("ebpf")
            if "source=ebpf" not in ebpf.log.read_text(errors="replace"):
                raise HarnessError(f"the exporter did not select the ebpf source:\n{tail(ebpf.log)}")
            time.sleep(1.0)  # past start-up

            assert ebpf.proc is not None and procfs.proc is not None
            pids = {"ebpf": ebpf.proc.pid, "procfs": procfs.proc.pid, "floor": sleeper.pid}

            def alive() -> None:
                ebpf.check_alive()
                procfs.check_alive()
                if sleeper.poll() is not None:
                    raise HarnessError(f"the floor process exited:\n{tail(work / 'floor.log')}")

            rows0 = csv_rows(ebpf.csv_path)
            idle = measure_phase("idle", pids, seconds, alive)
            rows1 = csv_rows(ebpf.csv_path)
            idle.csv_rows = rows1 - rows0

            load_cmd = ["stress-ng", "--cpu", "2", "--sock", "1", "--timeout", f"{int(seconds) + 10}s", "--quiet"]
            stress = spawn(load_cmd, work / "stress.log")
            procs.append(stress)
            time.sleep(1.0)  # let the workers start
            if stress.poll() is not None:
                raise HarnessError(f"stress-ng exited early:\n{tail(work / 'stress.log')}")
            load = measure_phase("load", pids, seconds, alive)
            load.csv_rows = csv_rows(ebpf.csv_path) - rows1
    return [idle, load], {"ebpf": ebpf_starts, "procfs": procfs_starts}, floor_starts


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.exporter_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 s phases instead of 20 s")
    ap.add_argument("--phase", type=float, help="seconds per phase (overrides --quick)")
    args = ap.parse_args(argv)
    seconds = args.phase or (8.0 if args.quick else 20.0)
    if os.geteuid() != 0:
        print("bench.exporter_cost: needs root (the eBPF source)", file=sys.stderr)
        return 2
    phases, first_row, floor_starts = measure(seconds, startups=2 if args.quick else 3)
    report(phases, first_row, floor_starts, seconds)
    return 0


if __name__ == "__main__":
    run_main("bench.exporter_cost", main)

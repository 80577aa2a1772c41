"""`python -m lab record`: one recording of this machine under a seeded stress schedule.

Runs, for `--seconds`, the real eBPF collector (collector_only.py, its normal CSV and warm-up),
the reference tenant (Redis + the open-loop client, lab.tenant) and the stress phases of
lab.core.schedule, and writes into the output directory:

    kernel_metrics.csv   the exporter's rows, one per second
    client_latency.csv   the tenant's latency per second (lab.tenant)
    phases.csv           start,end,stressor,intensity,command (local wall times, as Time)
    meta.json            machine, versions, seed, rate, schedule bounds, command line, outcome
    lab.log              the children's stderr

Everything it starts runs in its own process group and is stopped on exit, on Ctrl-C and on
SIGTERM; an interrupted recording keeps what it wrote and says `"complete": false` in its meta.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from common.core.csvrow import format_time
from exporter import preflight
from exporter.config import ExporterConfig
from lab.core import schedule as sched
from lab.procs import Child, missing_tools, stop_all
from lab.quality import DEFAULT_HORIZON_S, DEFAULT_SLO_FACTOR
from lab.stress import TOOLS, Stress
from lab.tenant import DEFAULT_RATE, Tenant

REPO = Path(__file__).resolve().parent.parent
FILES = ("kernel_metrics.csv", "client_latency.csv", "phases.csv", "meta.json")
PHASE_COLUMNS = ("start", "end", "stressor", "intensity", "command")
#: The exporter's own warm-up default: a recording calibrates like a node does.
DEFAULT_WARMUP_S = ExporterConfig.warmup_s


class RecordError(Exception):
    """A problem the user must fix (missing tool, not root, output in the way); exit 2."""


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived: stop everything, keep what was written."""


@dataclass(frozen=True)
class RecordParams:
    out: Path
    seconds: float | None
    seed: int
    warmup_s: float = DEFAULT_WARMUP_S
    rate: float = DEFAULT_RATE
    min_phase_s: float = 30.0
    max_phase_s: float = 90.0
    force: bool = False
    schedule: str | None = None
    """An explicit schedule (lab.core.schedule.parse_schedule) instead of the seeded one."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"


def _git_commit() -> str:
    return _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])


def preconditions(params: RecordParams) -> None:
    """Every reason the recording cannot run, in one RecordError."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (eBPF, memory cgroup)")
    problems += [f"missing tool: {m}" for m in missing_tools((*TOOLS, "redis-server"))]
    problems += [f"eBPF unavailable: {p.what} (fix: {p.fix})" for p in preflight.check()]
    in_the_way = [name for name in FILES if (params.out / name).exists()]
    if in_the_way and not params.force:
        problems.append(f"{params.out} already holds a recording ({', '.join(in_the_way)}): "
                        "choose another --out or pass --force to replace it")
    if problems:
        raise RecordError("; ".join(problems))


def _wait_first_row(csv_path: Path, exporter: Child, log: Path, deadline_s: float = 90.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not exporter.alive():
            raise RecordError(f"the collector exited with status {exporter.proc.returncode}: "
                              f"{_tail(log)}")
        try:
            with open(csv_path, "rb") as f:
                if f.read().count(b"\n") >= 2:
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    raise RecordError(f"the collector wrote no row within {deadline_s:g} s: {_tail(log)}")


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _sleep_until(deadline: float, watch: list[tuple[str, Child]]) -> None:
    """Sleep to `deadline` (monotonic), checking every second that the watched children live."""
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        for name, child in watch:
            if not child.alive():
                raise RecordError(f"{name} exited with status {child.proc.returncode} during the recording")


def _raise_stopped(signum, frame):
    raise _Stopped(signal.Signals(signum).name)


def record(params: RecordParams, argv: list[str], progress=print) -> dict:
    """Make one recording; returns its meta (also written to meta.json)."""
    if params.schedule:
        phases = sched.parse_schedule(params.schedule, params.warmup_s)
    else:
        phases = sched.make_schedule(params.seed, params.seconds, params.warmup_s, params.min_phase_s,
                                     params.max_phase_s)
    preconditions(params)
    out = params.out
    out.mkdir(parents=True, exist_ok=True)
    for name in (*FILES, "lab.log"):
        (out / name).unlink(missing_ok=True)
    log = out / "lab.log"
    cpus = os.cpu_count() or 1
    meta: dict = {
        "kernel": platform.release(), "machine": platform.machine(), "cpus": cpus,
        "versions": {
            "ksense": _git_commit(), "python": platform.python_version(),
            "redis-server": _version(["redis-server", "--version"]),
            "stress-ng": _version(["stress-ng", "--version"]), "iperf3": _version(["iperf3", "--version"]),
            "rt-tests": _version(["dpkg-query", "-W", "-f=${Version}", "rt-tests"]),
            "bcc": _version(["dpkg-query", "-W", "-f=${Version}", "python3-bpfcc"]),
        },
        "seed": params.seed, "seconds": phases[-1].end, "warmup_s": params.warmup_s,
        "tenant": {"server": "redis-server", "request": "PING", "rate_per_s": params.rate, "connections": 1,
                   "open_loop": True},
        "schedule": {"min_phase_s": params.min_phase_s, "max_phase_s": params.max_phase_s,
                     "phases": len(phases), "explicit": params.schedule},
        "slo": {"rule": "p99 > factor x median p99 of the calm (warmup, quiet) phases within the horizon",
                "factor": DEFAULT_SLO_FACTOR, "horizon_s": DEFAULT_HORIZON_S},
        "command": argv, "started": None, "ended": None, "complete": False,
    }
    tmp = Path(tempfile.mkdtemp(prefix="ksense-lab-", dir="/var/tmp"))
    old = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGTERM, signal.SIGINT)}
    children: list[Child] = []
    tenant: Tenant | None = None
    stress: Stress | None = None
    try:
        with open(out / "phases.csv", "w", encoding="utf-8") as pf:
            pf.write(",".join(PHASE_COLUMNS) + "\n")
            exporter = Child([sys.executable, str(REPO / "collector_only.py"), "--source", "ebpf",
                              "--csv", str(out / "kernel_metrics.csv"), "--state-dir", str(tmp / "state"),
                              "--warmup", str(params.warmup_s), "--node", "lab"], log,
                             env={**os.environ, "KSENSE_LOG_FORMAT": "text"})
            children.append(exporter)
            _wait_first_row(out / "kernel_metrics.csv", exporter, log)
            tenant = Tenant(_free_port(), params.rate, out / "client_latency.csv", log, tmp)
            children += [tenant.client, tenant.server]
            watch = [("the collector", exporter), ("redis-server", tenant.server), ("the tenant client", tenant.client)]
            t0 = time.monotonic()
            meta["started"] = format_time(datetime.now())
            for i, phase in enumerate(phases, 1):
                _sleep_until(t0 + phase.start, watch)
                began = datetime.now()
                try:
                    stress = Stress(phase.parts, phase.intensity, cpus=cpus, tmp=tmp, port=_free_port(), log=log)
                except OSError as exc:
                    raise RecordError(f"cannot start phase {i} ({phase.stressor}): {exc}") from None
                command = stress.argv
                progress(f"lab record: [{i}/{len(phases)}] {began:%H:%M:%S} {phase.stressor:<20} "
                         f"intensity {phase.intensity:.2f} for {phase.end - phase.start:.0f} s"
                         + (f"  ({command})" if command else ""))
                _sleep_until(t0 + phase.end, watch)
                dead = stress.dead()
                stress.stop()
                stress = None
                if dead:
                    raise RecordError(f"stressor exited early in phase {i} ({phase.stressor}): "
                                      f"{'; '.join(dead)}: {_tail(log)}")
                row = [format_time(began), format_time(datetime.now()), phase.stressor, f"{phase.intensity:.2f}",
                       '"' + command.replace('"', "'") + '"']
                pf.write(",".join(row) + "\n")
                pf.flush()
            meta["complete"] = True
    except _Stopped as exc:
        progress(f"lab record: {exc}: stopping, keeping what was recorded")
        meta["interrupted"] = str(exc)
    finally:
        if stress is not None:
            stress.stop()
        if tenant is not None:
            tenant.stop()
        stop_all(children)
        for s, handler in old.items():
            signal.signal(s, handler)
        shutil.rmtree(tmp, ignore_errors=True)
        meta["ended"] = format_time(datetime.now())
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta

"""Compile, attach and read the kernel side (sched.bpf.c); the only module that imports bcc.

Each tracepoint is attached on its own so that one failure (an event missing on some kernel)
leaves the others counting and shows up as `attached[tracepoint] = False`. The counter and
timestamp maps are BPF_F_MMAPABLE arrays: user space maps them once and reads them as numpy
arrays, so a read costs memory copies, not one bpf() syscall per key.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.core import histogram
from exporter.core.fdinfo import parse_fdinfo
from exporter.core.taskstate import DEFAULT_TASK_REPORT_MAX, parse_task_report_max
from exporter.sources import SourceUnavailable

SOURCE = Path(__file__).with_name("sched.bpf.c")
TRACEFS = Path("/sys/kernel/tracing")
SCHED_SWITCH_FORMAT = TRACEFS / "events/sched/sched_switch/format"
BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")

#: tracepoint -> (C function, program label). Order = attach order.
PROGRAMS: dict[str, tuple[str, str]] = {
    "sched:sched_wakeup": ("on_sched_wakeup", "sched_wakeup"),
    "sched:sched_wakeup_new": ("on_sched_wakeup_new", "sched_wakeup_new"),
    "sched:sched_switch": ("on_sched_switch", "sched_switch"),
    "sched:sched_process_exit": ("on_sched_process_exit", "sched_process_exit"),
    "irq:softirq_entry": ("on_softirq_entry", "softirq_entry"),
    "irq:softirq_exit": ("on_softirq_exit", "softirq_exit"),
}

# Rows of the `hists` map (enum hist_id in the C source) and the u64 fields of each row
# (struct hist): three counters, then NKEYS buckets.
HIST_RUNQ, HIST_DSTATE, HIST_SOFTIRQ = 0, 1, 2
NHIST = 3
SUM_NS, DROPPED, UPDATE_FAILURES = 0, 1, 2
BUCKETS = 3
ROW = BUCKETS + histogram.NKEYS


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def task_report_max() -> int:
    """TASK_REPORT_MAX of the running kernel (default when the format is unreadable)."""
    text = _read_text(SCHED_SWITCH_FORMAT)
    return DEFAULT_TASK_REPORT_MAX if text is None else parse_task_report_max(text)


def bpf_stats_enabled() -> bool:
    """Whether the kernel accounts run time per BPF program (kernel.bpf_stats_enabled)."""
    return (_read_text(BPF_STATS_SYSCTL) or "0").strip() != "0"


class _MappedArray:
    """A read-only numpy view of a BPF_F_MMAPABLE array map (u64 values)."""

    def __init__(self, map_fd: int, entries: int):
        self._mm = mmap.mmap(map_fd, entries * 8, mmap.MAP_SHARED, mmap.PROT_READ)
        self.array: np.ndarray | None = np.frombuffer(self._mm, dtype=np.uint64, count=entries)

    def close(self) -> None:
        # numpy holds an export of the mmap buffer: drop ours first. A view someone else still
        # holds keeps the mapping (and the map) alive until it is garbage collected.
        self.array = None
        with contextlib.suppress(BufferError):
            self._mm.close()


@dataclass(frozen=True)
class Counters:
    """One consistent-enough copy of the kernel counters (cumulative since attach).

    `hists` has shape (3, ROW): rows HIST_RUNQ/HIST_DSTATE/HIST_SOFTIRQ, columns SUM_NS,
    DROPPED, UPDATE_FAILURES, then the NKEYS bucket counts from column BUCKETS. The kernel keeps
    counting while the copy is taken, so a row's sum may include a sample whose bucket the copy
    missed; the next interval's delta makes up for it.
    """

    hists: np.ndarray
    runq_entries: int
    dstate_entries: int


class Probe:
    """The loaded, attached programs and their mapped counters. Close it to detach."""

    def __init__(
        self,
        bpf,
        slots: int,
        attached: dict[str, bool],
        errors: dict[str, str],
        prog_fds: dict[str, int],
    ):
        self._bpf = bpf
        self.slots = slots
        self.attached: Mapping[str, bool] = attached
        #: tracepoint -> why it did not attach, for the start-up log line.
        self.errors: Mapping[str, str] = errors
        self._prog_fds = prog_fds
        self._hists = _MappedArray(bpf.get_table("hists").map_fd, NHIST * ROW)
        self._runq = _MappedArray(bpf.get_table("runq_ts").map_fd, slots)
        self._dstate = _MappedArray(bpf.get_table("dstate_ts").map_fd, slots)

    def read(self) -> Counters:
        """Copy the counters and count the live timestamp slots (memory reads only)."""
        if self._bpf is None:
            raise RuntimeError("probe is closed")
        return Counters(
            hists=self._hists.array.reshape(NHIST, ROW).copy(),
            runq_entries=int(np.count_nonzero(self._runq.array)),
            dstate_entries=int(np.count_nonzero(self._dstate.array)),
        )

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """program label -> (run_time_ns, run_cnt) of each attached program; empty while
        kernel.bpf_stats_enabled=0 (the kernel does not account then)."""
        if self._bpf is None or not bpf_stats_enabled():
            return {}
        stats = {}
        for label, fd in self._prog_fds.items():
            parsed = parse_fdinfo(_read_text(Path(f"/proc/self/fdinfo/{fd}")) or "")
            if parsed is not None:
                stats[label] = parsed
        return stats

    def close(self) -> None:
        """Unmap, detach and free the programs and maps; idempotent."""
        if self._bpf is None:
            return
        for mapped in (self._hists, self._runq, self._dstate):
            mapped.close()
        self._bpf.cleanup()
        self._bpf = None


def _bcc():
    """bcc's BPF class, imported here only (no other module may import bcc)."""
    try:
        with warnings.catch_warnings():
            # bcc 0.26 (Debian 12) passes str where bytes are expected; harmless.
            warnings.simplefilter("ignore", DeprecationWarning)
            from bcc import BPF
    except ImportError as exc:
        raise SourceUnavailable(f"bcc is not importable ({exc}); install Debian's python3-bpfcc") from exc
    return BPF


def load(
    *,
    slots: int = 65536,
    report_max: int | None = None,
    attach_as: Mapping[str, str] | None = None,
) -> Probe:
    """Compile sched.bpf.c and attach every tracepoint of PROGRAMS.

    `slots` is the size of each timestamp table (a power of two); `report_max` overrides the
    TASK_REPORT_MAX read from tracefs; `attach_as` maps a tracepoint to the name actually
    attached (tests use it to make one attach fail). Raises SourceUnavailable with the reason
    when bcc is missing, the program does not compile or load, or nothing attaches.
    """
    if slots <= 0 or slots & (slots - 1):
        raise ValueError(f"slots must be a power of two, got {slots}")
    BPF = _bcc()
    if os.geteuid() != 0:
        raise SourceUnavailable("loading eBPF programs needs root")
    cflags = [
        f"-DTS_SLOTS={slots}",
        f"-DTASK_REPORT_MAX={report_max if report_max is not None else task_report_max():#x}",
        f"-DHIST_NKEYS={histogram.NKEYS}",
    ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            bpf = BPF(src_file=str(SOURCE).encode(), cflags=cflags)
    except Exception as exc:  # bcc raises bare Exception for compile and load errors
        raise SourceUnavailable(f"compiling {SOURCE.name} failed: {exc}") from exc
    attached: dict[str, bool] = {}
    errors: dict[str, str] = {}
    prog_fds: dict[str, int] = {}
    try:
        for tracepoint, (function, label) in PROGRAMS.items():
            target = (attach_as or {}).get(tracepoint, tracepoint)
            try:
                fn = bpf.load_func(function.encode(), BPF.TRACEPOINT)
                bpf.attach_tracepoint(tp=target.encode(), fn_name=fn.name)
            except Exception as exc:  # one missing event must not take the others down
                attached[tracepoint] = False
                errors[tracepoint] = str(exc)
                continue
            attached[tracepoint] = True
            prog_fds[label] = fn.fd
        if not any(attached.values()):
            raise SourceUnavailable("no tracepoint could be attached (is tracefs mounted?)")
        try:
            return Probe(bpf, slots, attached, errors, prog_fds)
        except OSError as exc:  # kernels before 5.5 cannot mmap array maps
            raise SourceUnavailable(f"mapping the BPF counters failed: {exc}") from exc
    except BaseException:
        bpf.cleanup()
        raise


class EmptyProgram:
    """One empty program attached to the given tracepoints: the cost floor the real programs
    are compared with (bench/). Its run time is the dispatch into BPF and nothing else."""

    SOURCE = "int on_event(void *ctx) { return 0; }"

    def __init__(self, tracepoints: tuple[str, ...] = ("sched:sched_switch",)):
        BPF = _bcc()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self._bpf = BPF(text=self.SOURCE.encode())
        fn = self._bpf.load_func(b"on_event", BPF.TRACEPOINT)
        for tracepoint in tracepoints:
            self._bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=fn.name)
        self._fd = fn.fd

    def stats(self) -> tuple[int, int] | None:
        """(run_time_ns, run_cnt) summed over its tracepoints."""
        return parse_fdinfo(_read_text(Path(f"/proc/self/fdinfo/{self._fd}")) or "")

    def close(self) -> None:
        self._bpf.cleanup()

"""Compile, attach and read the kernel side (sched.bpf.c); the only module that imports bcc.

bcc compiles with LLVM and clang, which it maps into the process (~80 MiB of libraries) and
leaves ~30 MiB of compile heap behind. So the exporter never imports bcc: `load` runs this
module as a short-lived child process (`python -m exporter.bpf.loader`) that compiles the
program, attaches each tracepoint on its own and passes the file descriptors the exporter
needs back over a UNIX socket (SCM_RIGHTS): the memory-mappable maps, each program (for its
run statistics in /proc/self/fdinfo) and each attachment (the perf event that keeps a program
attached while any process holds it). The child then leaves with os._exit, skipping bcc's
cleanup (an atexit hook), which disables each perf event before closing it. For a tracepoint
that disable does not stop the program (the kernel runs it as long as the event exists; a
test proves the counters keep moving), but it would for attach types bcc removes by name,
and the parent must own its programs outright. Once the child is gone the programs keep
running on the parent's descriptors, until `Probe.close` closes them.

Each tracepoint is attached on its own so that one failure (an event missing on some kernel)
leaves the others counting and shows up as `attached[tracepoint] = False`. The counter and
timestamp maps are BPF_F_MMAPABLE arrays: user space maps them once and reads them as numpy
arrays, so a read costs memory copies, not one bpf() syscall per key.

numpy (and exporter.core.histogram, which imports it) is imported where the parent uses it,
not at the top: the child runs this module too, and numpy would be half its start-up time,
which the first CSV row waits for.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from exporter.core.fdinfo import parse_fdinfo
from exporter.core.taskstate import DEFAULT_TASK_REPORT_MAX, parse_task_report_max
from exporter.sources import SourceUnavailable

if TYPE_CHECKING:
    import numpy as np

SOURCE = Path(__file__).with_name("sched.bpf.c")
TRACEFS = Path("/sys/kernel/tracing")
SCHED_SWITCH_FORMAT = TRACEFS / "events/sched/sched_switch/format"
BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")

#: How long `load` waits for the compile child (0.3 s on an idle 2-CPU VM) before killing it.
CHILD_TIMEOUT_S = 30.0
# The child is started as `python -m <this module>` from the directory holding the `exporter`
# package, so it imports the same code as its parent wherever that is installed.
_CHILD_MODULE = "exporter.bpf.loader"
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent
_ANSWER_MAX_BYTES = 1 << 16
_MAX_FDS = 64  # 3 maps + 2 per tracepoint, with room to spare
_DIAGNOSTIC_LINES = 5  # compiler error lines quoted in the SourceUnavailable message

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

#: The maps user space reads (all u64 arrays).
MAPS = ("hists", "runq_ts", "dstate_ts")
#: The per-pod maps, present when `load` is given a PodMaps (struct pod_row in the C source).
POD_MAPS = ("pod_keys", "pod_stats", "task_pod")
POD_RUNQ_SUM_NS, POD_RUNQ_COUNT, POD_DSTATE_SUM_NS, POD_DSTATE_COUNT = 0, 1, 2, 3
POD_BUCKETS = 4
POD_NBUCKETS = 24
POD_ROW = POD_BUCKETS + POD_NBUCKETS


@dataclass(frozen=True)
class PodMaps:
    """Sizes of the per-pod maps (sched.bpf.c, per-pod accounting): `pods` rows of counters,
    `cgroup_slots` entries of the cgroup -> pod table (a power of two) probed at most `probes`
    times per lookup."""

    pods: int
    cgroup_slots: int
    probes: int = 4

    def __post_init__(self):
        if not 1 <= self.pods <= 0xFFFE:
            raise ValueError(f"pods must be 1..65534, got {self.pods}")
        if self.cgroup_slots <= 0 or self.cgroup_slots & (self.cgroup_slots - 1):
            raise ValueError(f"cgroup_slots must be a power of two, got {self.cgroup_slots}")
        if not 1 <= self.probes <= 16:
            raise ValueError(f"probes must be 1..16, got {self.probes}")


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
    """A numpy view of a BPF_F_MMAPABLE array map (u64 values), read-only unless `writable`."""

    def __init__(self, map_fd: int, entries: int, *, writable: bool = False):
        import numpy as np

        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self._mm = mmap.mmap(map_fd, entries * 8, mmap.MAP_SHARED, prot)
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

    `hists` has shape (3, BUCKETS + histogram.NKEYS): rows HIST_RUNQ/HIST_DSTATE/HIST_SOFTIRQ, columns SUM_NS,
    DROPPED, UPDATE_FAILURES, then the NKEYS bucket counts from column BUCKETS. The kernel keeps
    counting while the copy is taken, so a row's sum may include a sample whose bucket the copy
    missed; the next interval's delta makes up for it.
    """

    hists: np.ndarray
    runq_entries: int
    dstate_entries: int


def _row() -> int:
    """u64 fields per `hists` row (struct hist): the three counters, then the buckets."""
    from exporter.core import histogram

    return BUCKETS + histogram.NKEYS


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Probe:
    """The attached programs and their mapped counters, held by file descriptors this process
    owns (received from the compile child). Close it to detach."""

    def __init__(
        self,
        *,
        slots: int,
        attached: dict[str, bool],
        errors: dict[str, str],
        map_fds: Mapping[str, int],
        prog_fds: Mapping[str, int],
        link_fds: Mapping[str, int],
        pods: PodMaps | None = None,
    ):
        self.slots = slots
        self.pods = pods
        self.attached: Mapping[str, bool] = attached
        #: tracepoint -> why it did not attach, for the start-up log line.
        self.errors: Mapping[str, str] = errors
        self._prog_fds = dict(prog_fds)
        self._link_fds = dict(link_fds)
        self._map_fds = dict(map_fds)
        self._mapped: list[_MappedArray] = []
        self._closed = False
        self._row = _row()
        try:
            self._hists = self._map("hists", NHIST * self._row)
            self._runq = self._map("runq_ts", slots)
            self._dstate = self._map("dstate_ts", slots)
            if pods is not None:
                self._pod_keys = self._map("pod_keys", pods.cgroup_slots, writable=True)
                self._pod_stats = self._map("pod_stats", pods.pods * POD_ROW, writable=True)
                self._task_pod = self._map("task_pod", slots)
        except BaseException:
            self.close()
            raise

    def _map(self, name: str, entries: int, *, writable: bool = False) -> _MappedArray:
        mapped = _MappedArray(self._map_fds[name], entries, writable=writable)
        self._mapped.append(mapped)
        return mapped

    def read(self) -> Counters:
        """Copy the counters and count the live timestamp slots (memory reads only)."""
        import numpy as np

        if self._closed:
            raise RuntimeError("probe is closed")
        return Counters(
            hists=self._hists.array.reshape(NHIST, self._row).copy(),
            runq_entries=int(np.count_nonzero(self._runq.array)),
            dstate_entries=int(np.count_nonzero(self._dstate.array)),
        )

    def pod_keys(self) -> np.ndarray:
        """The cgroup -> pod table, writable: user space owns it (exporter/pods/table.py)."""
        if self._closed or self.pods is None:
            raise RuntimeError("probe is closed or has no per-pod maps")
        return self._pod_keys.array

    def read_pods(self) -> np.ndarray:
        """A copy of the per-pod counters, shape (pods, POD_ROW) (memory reads only)."""
        if self._closed or self.pods is None:
            raise RuntimeError("probe is closed or has no per-pod maps")
        return self._pod_stats.array.reshape(self.pods.pods, POD_ROW).copy()

    def clear_pod_row(self, slot: int) -> None:
        """Zero one pod's counters (the pod is gone and its cgroups are out of `pod_keys`, so
        the kernel no longer adds to the row; its slot may be reused)."""
        if self._closed or self.pods is None:
            raise RuntimeError("probe is closed or has no per-pod maps")
        self._pod_stats.array[slot * POD_ROW : (slot + 1) * POD_ROW] = 0

    def task_pod_entries(self) -> int:
        """Live entries of the per-task pod table."""
        import numpy as np

        return 0 if self.pods is None else int(np.count_nonzero(self._task_pod.array))

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """program label -> (run_time_ns, run_cnt) of each attached program; empty while
        kernel.bpf_stats_enabled=0 (the kernel does not account then)."""
        if self._closed or not bpf_stats_enabled():
            return {}
        stats = {}
        for label, fd in self._prog_fds.items():
            parsed = parse_fdinfo(_read_text(Path(f"/proc/self/fdinfo/{fd}")) or "")
            if parsed is not None:
                stats[label] = parsed
        return stats

    def close(self) -> None:
        """Unmap the counters and close every descriptor; idempotent. Closing the attachments
        detaches the programs (this process holds the only references), and the kernel frees
        programs and maps once nothing refers to them."""
        if self._closed:
            return
        self._closed = True
        for mapped in self._mapped:
            mapped.close()
        _close_all([*self._link_fds.values(), *self._prog_fds.values(), *self._map_fds.values()])


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
    timeout_s: float = CHILD_TIMEOUT_S,
    pods: PodMaps | None = None,
) -> Probe:
    """Compile sched.bpf.c and attach every tracepoint of PROGRAMS, in a child process.

    `slots` is the size of each timestamp table (a power of two); `report_max` overrides the
    TASK_REPORT_MAX read from tracefs; `attach_as` maps a tracepoint to the name actually
    attached (tests use it to make one attach fail); `timeout_s` bounds the wait for the child,
    which is killed when it runs out; `pods` compiles the per-pod accounting in (None: left
    out of the program entirely). Raises SourceUnavailable with the reason when bcc is
    missing, the program does not compile or load, or nothing attaches.
    """
    from exporter.core import histogram

    if slots <= 0 or slots & (slots - 1):
        raise ValueError(f"slots must be a power of two, got {slots}")
    request = {
        "source": str(SOURCE.resolve()),
        "cflags": [
            f"-DTS_SLOTS={slots}",
            f"-DTASK_REPORT_MAX={report_max if report_max is not None else task_report_max():#x}",
            f"-DHIST_NKEYS={histogram.NKEYS}",
        ],
        "programs": [
            [tracepoint, function, label, (attach_as or {}).get(tracepoint, tracepoint)]
            for tracepoint, (function, label) in PROGRAMS.items()
        ],
        "maps": list(MAPS),
    }
    if pods is not None:
        request["cflags"] += [
            f"-DPOD_SLOTS={pods.pods}", f"-DPOD_CG_SLOTS={pods.cgroup_slots}", f"-DPOD_CG_PROBES={pods.probes}",
        ]
        request["maps"] += list(POD_MAPS)
    answer, fds = _run_child(request, timeout_s)
    try:
        return _probe(answer, fds, slots, pods)
    except BaseException:
        _close_all(fds)
        raise


def _probe(answer: dict[str, Any], fds: list[int], slots: int, pods: PodMaps | None = None) -> Probe:
    """The Probe described by the child's answer, owning the received `fds`."""
    want_bytes = {"hists": NHIST * _row() * 8, "runq_ts": slots * 8, "dstate_ts": slots * 8}
    if pods is not None:
        want_bytes.update(
            pod_keys=pods.cgroup_slots * 8, pod_stats=pods.pods * POD_ROW * 8, task_pod=slots * 8
        )
    for name, want in want_bytes.items():
        got = answer["maps"][name]["bytes"]
        if got != want:  # sched.bpf.c and this module disagree on the layout
            raise SourceUnavailable(f"BPF map {name} has {got} bytes, expected {want}")
    try:
        return Probe(
            slots=slots,
            attached=answer["attached"],
            errors=answer["errors"],
            map_fds={name: fds[spec["fd"]] for name, spec in answer["maps"].items()},
            prog_fds={label: fds[i] for label, i in answer["programs"].items()},
            link_fds={tracepoint: fds[i] for tracepoint, i in answer["links"].items()},
            pods=pods,
        )
    except OSError as exc:  # kernels before 5.5 cannot mmap array maps
        raise SourceUnavailable(f"mapping the BPF counters failed: {exc}") from exc


# --- the parent's side of the child ----------------------------------------------------------
def _spawn_child(sock_fd: int, request: dict[str, Any], output: IO[bytes]) -> subprocess.Popen:
    """Start the compile child with `sock_fd` as its end of the socket pair."""
    return subprocess.Popen(
        [sys.executable, "-m", _CHILD_MODULE, str(sock_fd), json.dumps(request)],
        cwd=_PACKAGE_PARENT,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        pass_fds=(sock_fd,),
    )


def _run_child(request: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], list[int]]:
    """Run the compile child; its answer and the descriptors it sent (owned by the caller).

    The child's stdout and stderr (clang's diagnostics, bcc's verifier logs) go to a temporary
    file rather than a pipe, so a chatty child can never block on a full pipe while the parent
    waits on the socket. They are quoted in the error, or passed on to stderr on success.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, tempfile.TemporaryFile() as output:
        try:
            proc = _spawn_child(theirs.fileno(), request, output)
        finally:
            theirs.close()  # ours then sees EOF when the child exits without answering
        try:
            data, fds, flags = _receive(ours, timeout_s)
        except BaseException:
            proc.kill()
            raise
        finally:
            _reap(proc)
        try:
            output.seek(0)
            text = output.read().decode(errors="replace")
            return _answer(data, flags, proc.returncode, text), fds
        except BaseException:
            _close_all(fds)
            raise


def _answer(data: bytes, flags: int, returncode: int, text: str) -> dict[str, Any]:
    """The child's answer, or SourceUnavailable with its error and, where they explain it,
    the lines of its output that do (compiler errors; the output of a child that died)."""
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise SourceUnavailable("the BPF loader's answer was truncated")
    if not data:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        raise SourceUnavailable(f"the BPF loader {how} without an answer{_tail(text)}")
    answer = json.loads(data)
    if answer.get("detail") == "compiler":
        raise SourceUnavailable(answer["error"] + _diagnostics(text))
    # Anything else the child printed (verifier logs, warnings, the traceback of a bug) goes to
    # stderr as bcc would have printed it in-process.
    sys.stderr.write(text)
    if "error" in answer:
        raise SourceUnavailable(answer["error"])
    return answer


def _receive(sock: socket.socket, timeout_s: float) -> tuple[bytes, list[int], int]:
    """One message and its descriptors, received close-on-exec (the exporter's own children
    must not inherit the programs). socket.recv_fds of Python 3.11 drops its flags argument,
    hence recvmsg."""
    sock.settimeout(timeout_s)
    fds = array.array("i")
    try:
        data, ancdata, flags, _ = sock.recvmsg(
            _ANSWER_MAX_BYTES, socket.CMSG_SPACE(_MAX_FDS * fds.itemsize), socket.MSG_CMSG_CLOEXEC
        )
    except TimeoutError:
        raise SourceUnavailable(f"the BPF loader did not answer within {timeout_s:g} s; killed it") from None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds), flags


def _reap(proc: subprocess.Popen) -> None:
    """Wait for the child, which exits right after answering; kill it if it does not."""
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _diagnostics(text: str) -> str:
    """The compiler's error lines from the child's output, for the exception message."""
    errors = [line.strip() for line in text.splitlines() if "error:" in line]
    return ": " + "; ".join(errors[:_DIAGNOSTIC_LINES]) if errors else _tail(text)


def _tail(text: str, lines: int = _DIAGNOSTIC_LINES) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return ": " + " | ".join(kept) if kept else ""


# --- the child -----------------------------------------------------------------------------------
def _compile_and_attach(request: dict[str, Any]) -> tuple[dict[str, Any], list[int], Any]:
    """Compile and attach as the request says: (answer, fds to send, the BPF object).

    The answer names each descriptor by its index in the fds list. Expected failures are
    answers with an "error" (and "detail": "compiler" when clang's output explains it).
    """
    try:
        BPF = _bcc()
    except SourceUnavailable as exc:
        return {"error": str(exc)}, [], None
    if os.geteuid() != 0:
        return {"error": "loading eBPF programs needs root"}, [], None
    source = request["source"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            bpf = BPF(src_file=source.encode(), cflags=request["cflags"])
    except Exception as exc:  # bcc raises bare Exception for compile and load errors
        return {"error": f"compiling {Path(source).name} failed: {exc}", "detail": "compiler"}, [], None
    fds: list[int] = []

    def send(fd: int) -> int:
        fds.append(fd)
        return len(fds) - 1

    attached: dict[str, bool] = {}
    errors: dict[str, str] = {}
    programs: dict[str, int] = {}
    links: dict[str, int] = {}
    for tracepoint, function, label, target in request["programs"]:
        try:
            fn = bpf.load_func(function.encode(), BPF.TRACEPOINT)
            bpf.attach_tracepoint(tp=target.encode(), fn_name=fn.name)
        except Exception as exc:  # one missing event must not take the others down
            attached[tracepoint] = False
            errors[tracepoint] = str(exc)
            continue
        attached[tracepoint] = True
        programs[label] = send(fn.fd)
        links[tracepoint] = send(bpf.tracepoint_fds[target.encode()])
    if not any(attached.values()):
        first = next(iter(errors.items()), ("", ""))
        return {"error": f"no tracepoint could be attached (is tracefs mounted?); {first[0]}: {first[1]}"}, [], bpf
    maps = {}
    for name in request["maps"]:
        table = bpf.get_table(name)
        maps[name] = {"fd": send(table.map_fd), "bytes": table.max_entries * ctypes.sizeof(table.Leaf)}
    answer = {"attached": attached, "errors": errors, "programs": programs, "links": links, "maps": maps}
    return answer, fds, bpf


def _child_main(argv: list[str]) -> NoReturn:
    """`python -m exporter.bpf.loader SOCK_FD REQUEST_JSON`: answer once on SOCK_FD and exit."""
    sock = socket.socket(fileno=int(argv[0]))
    try:
        answer, fds, _bpf = _compile_and_attach(json.loads(argv[1]))
    except Exception as exc:  # a bug: the traceback goes to stderr, which the parent passes on
        traceback.print_exc()
        answer, fds = {"error": f"the BPF loader failed: {exc!r}"}, []
    status = 0
    try:
        socket.send_fds(sock, [json.dumps(answer).encode()], fds)
    except OSError as exc:  # the parent is gone (timed out, interrupted)
        print(f"the BPF loader could not answer: {exc}", file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter shutdown: neither bcc's atexit cleanup (it disables every perf event it
    # attached) nor any destructor of `_bpf`, still referenced here, may touch what the parent
    # now holds (module docstring).
    os._exit(status)


class EmptyProgram:
    """One empty program attached to the given tracepoints: the cost floor the real programs
    are compared with. It exists for bench/ only (the exporter never loads it). Its run time is
    the dispatch into BPF and nothing else. It is loaded in-process: bench scripts do not care
    about their own RSS."""

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


if __name__ == "__main__":
    _child_main(sys.argv[1:])

"""The compile child of exporter/bpf/loader.py: bcc and LLVM live only in a short-lived child
process, which hands the attached programs and their maps over as file descriptors.

The real-kernel tests check what that is for: a process that loaded the programs has none of
bcc's libraries mapped, its counters keep moving after the child is gone, close() detaches, and
a compile error still reads like one. The others drive the parent's side with stand-in children
(silent exit, hang, error answer) and need neither root nor bcc.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from exporter.bpf import loader
from exporter.core.fdinfo import parse_fdinfo
from exporter.sources import SourceUnavailable
from tests.support import REPO

BCC_LIBRARIES = ("libbcc", "libLLVM", "libclang")
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def _bcc_libraries_mapped(pid: int | str) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({lib for lib in BCC_LIBRARIES if lib in maps})


def _bpf_descriptors() -> list[str]:
    """What this process's BPF-related descriptors point at (maps, programs, perf events)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the directory's own descriptor, closed by now
            continue
        if target.startswith(("anon_inode:bpf", "anon_inode:[perf_event]")):
            targets.append(target)
    return sorted(targets)


def _runs(fd: int) -> int:
    parsed = parse_fdinfo(Path(f"/proc/self/fdinfo/{fd}").read_text())
    assert parsed is not None, "no run_cnt in fdinfo: not a program fd, or bpf_stats off"
    return parsed[1]


def _switches(seconds: float) -> None:
    """Make context switches for `seconds` (each short sleep is one switch out and in)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.002)


# --- the real kernel ---------------------------------------------------------------------------
LOADING_PROCESS = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from exporter.bpf import loader

    probe = loader.load()
    try:
        os.waitpid(-1, os.WNOHANG)
        children = True
    except ChildProcessError:  # the compile child has exited and been reaped
        children = False
    first = probe.read()
    counts = []
    for _ in range(3):
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            time.sleep(0.002)
        hists = probe.read().hists - first.hists
        counts.append(int(hists[loader.HIST_RUNQ, loader.BUCKETS :].sum()))
    print(json.dumps({
        "children": children,
        "maps": Path("/proc/self/maps").read_text(),
        "attached": dict(probe.attached),
        "runq_counts": counts,
        "runq_sum_ns": int(hists[loader.HIST_RUNQ, loader.SUM_NS]),
    }))
    probe.close()
    """
)


def test_a_loading_process_maps_no_bcc_and_keeps_counting_after_the_child_exits(need_ebpf):
    out = subprocess.run(
        [sys.executable, "-c", LOADING_PROCESS], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["children"] is False
    assert all(report["attached"].values()), report["attached"]
    assert not [lib for lib in BCC_LIBRARIES if lib in report["maps"]], "bcc's libraries are mapped"
    counts = report["runq_counts"]
    assert 0 < counts[0] < counts[1] < counts[2], counts  # still counting, interval after interval
    assert report["runq_sum_ns"] > 0


def test_close_detaches_the_programs(need_ebpf):
    before = _bpf_descriptors()
    old_stats = BPF_STATS.read_text()
    probe = loader.load()
    # A second reference to the sched_switch program keeps it (and its run counter) alive
    # after close, detached: its run count must then stand still while the CPUs keep switching.
    switch = os.dup(probe._prog_fds["sched_switch"])
    try:
        BPF_STATS.write_text("1\n")
        # Received close-on-exec: the exporter's own children must not inherit the programs.
        assert not any(os.get_inheritable(fd) for fd in probe._prog_fds.values())
        assert not any(os.get_inheritable(fd) for fd in probe._link_fds.values())
        runs = _runs(switch)
        _switches(0.2)
        attached_runs = _runs(switch) - runs
        probe.close()
        probe.close()  # idempotent
        runs = _runs(switch)
        _switches(0.3)
        detached_runs = _runs(switch) - runs
    finally:
        BPF_STATS.write_text(old_stats)
        os.close(switch)
        probe.close()
    assert attached_runs > 10, attached_runs
    assert detached_runs == 0, detached_runs
    assert _bpf_descriptors() == before
    assert probe.program_stats() == {}
    with pytest.raises(RuntimeError, match="closed"):
        probe.read()


def test_a_compile_error_reads_like_one(need_ebpf, monkeypatch, tmp_path, capfd):
    bad = tmp_path / "bad.bpf.c"
    bad.write_text("int on_sched_switch(void *ctx) { return no_such_symbol; }\n")
    monkeypatch.setattr(loader, "SOURCE", bad)
    with pytest.raises(SourceUnavailable) as raised:
        loader.load()
    message = str(raised.value)
    assert message.startswith("compiling bad.bpf.c failed: "), message
    assert "error: use of undeclared identifier 'no_such_symbol'" in message
    assert "Traceback" not in message + capfd.readouterr().err


# --- the parent's side, with stand-in children ----------------------------------------------
def _stand_in(monkeypatch, code: str) -> list[subprocess.Popen]:
    """Replace the compile child by `python -c code` (its socket's fd in sys.argv[1])."""
    started: list[subprocess.Popen] = []

    def spawn(sock_fd, request, output):
        assert request["source"] == str(loader.SOURCE.resolve())
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(sock_fd)], stdout=output, stderr=output, pass_fds=(sock_fd,)
        )
        started.append(proc)
        return proc

    monkeypatch.setattr(loader, "_spawn_child", spawn)
    return started


def test_a_child_that_dies_without_answering_is_reported_with_its_output(monkeypatch):
    _stand_in(monkeypatch, "import sys; print('LLVM ERROR: out of memory', file=sys.stderr); sys.exit(3)")
    with pytest.raises(SourceUnavailable, match=r"exited with status 3 without an answer: LLVM ERROR: out of memory"):
        loader.load()


def test_a_child_that_hangs_is_killed_at_the_timeout(monkeypatch):
    started = _stand_in(monkeypatch, "import time; time.sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match=r"did not answer within 0\.3 s; killed it"):
        loader.load(timeout_s=0.3)
    assert time.monotonic() - t0 < 5
    assert started[0].returncode == -9  # killed and reaped, not left behind


def test_an_error_answer_becomes_source_unavailable_and_its_descriptors_are_closed(monkeypatch):
    code = textwrap.dedent(
        """
        import json, os, socket, sys
        sock = socket.socket(fileno=int(sys.argv[1]))
        r, w = os.pipe()
        answer = {"error": "loading eBPF programs needs root"}
        socket.send_fds(sock, [json.dumps(answer).encode()], [r, w])
        """
    )
    _stand_in(monkeypatch, code)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(SourceUnavailable) as raised:
        loader.load()
    assert str(raised.value) == "loading eBPF programs needs root"
    assert set(os.listdir("/proc/self/fd")) <= before


def test_a_layout_mismatch_is_refused(monkeypatch):
    """The child reports each map's size; a map of another size than the parent would map
    (sched.bpf.c and loader.py out of step) is refused, not half-read."""
    code = textwrap.dedent(
        """
        import json, os, socket, sys
        sock = socket.socket(fileno=int(sys.argv[1]))
        r, w = os.pipe()
        maps = {name: {"fd": 0, "bytes": 8} for name in ("hists", "runq_ts", "dstate_ts")}
        answer = {"attached": {}, "errors": {}, "programs": {}, "links": {}, "maps": maps}
        socket.send_fds(sock, [json.dumps(answer).encode()], [r])
        """
    )
    _stand_in(monkeypatch, code)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(SourceUnavailable, match=r"BPF map hists has 8 bytes, expected \d+"):
        loader.load()
    assert set(os.listdir("/proc/self/fd")) <= before


def test_nothing_attached_is_reported_with_the_first_reason(need_ebpf):
    with pytest.raises(SourceUnavailable) as raised:
        loader.load(attach_as={tracepoint: "irq:no_such_event" for tracepoint in loader.PROGRAMS})
    message = str(raised.value)
    assert message.startswith("no tracepoint could be attached (is tracefs mounted?); sched:sched_wakeup: ")
    assert "no_such_event" in message


def test_a_bug_in_the_child_shows_its_traceback_on_stderr(need_ebpf, monkeypatch, capfd):
    """Only an unexpected failure (here a request without a source) prints a traceback."""
    real_spawn = loader._spawn_child
    monkeypatch.setattr(loader, "_spawn_child", lambda fd, request, output: real_spawn(fd, {}, output))
    with pytest.raises(SourceUnavailable, match=r"the BPF loader failed: KeyError\('source'\)"):
        loader.load()
    assert "Traceback" in capfd.readouterr().err


def test_every_store_into_a_shared_timestamp_slot_is_a_compare_and_swap():
    """docs/design.md#kernel-signals rule 5: two CPUs inserting different pids into one slot must not both succeed
    unseen. A plain `*slot = x` after reading the slot lets one CPU's store erase the other's
    sample uncounted; a compare-and-swap sees the slot change under it, and the loss is counted.
    (The race is a few nanoseconds wide: a kernel run cannot be made to hit it on demand, so the
    rule is pinned on the source.)"""
    source = (REPO / "exporter" / "bpf" / "sched.bpf.c").read_text()
    plain_stores = re.findall(r"^\s*\*\s*\w*slot\s*=(?!=).*$", source, flags=re.MULTILINE)
    assert plain_stores == []

"""Cost of per-pod attribution, against the same programs without it, in the same run.

Builds a kubepods-like cgroup v2 tree of POD_COUNT pods (one container scope each) and runs the
pinned pipe ping-pong (`perf bench sched pipe`, two wakeups and two switches per operation)
inside one pod's scope, so every event takes the per-pod path's hit case (the costliest). Each
round measures, back to back: the programs built without per-pod accounting (KSENSE_POD_METRICS=
off) and with it, the table filled by the real tracker. Prints the median ratio on ÷ off
(goal ≤ 1.03) and, with kernel.bpf_stats_enabled=1 (restored after), ns/run of every program
with per-pod accounting on (goal: busiest ≤ 300 ns). Then starts the real exporter on the tree
and reports its steady RSS with POD_COUNT pods (goal ≤ 60 MiB).
Run (root, bcc): .venv/bin/python -m bench.pod_cost
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from bench._util import bpf_stats_enabled
from exporter.bpf import loader
from exporter.pods.tracker import PodTracker
from exporter.sources.ebpf import PodOptions

ROUNDS = 5
LOOPS = 200_000
POD_COUNT = 200
GOAL_RATIO, GOAL_NS, GOAL_RSS_MIB = 1.03, 300.0, 60.0
_USECS = re.compile(r"([0-9.]+)\s+usecs/op")
REPO = Path(__file__).resolve().parent.parent


def _tree():
    from tests.exporter.podtree import PodTree  # python -m bench runs from the repository root

    return PodTree()


def pipe_usecs(scope: Path) -> float:
    procs = scope / "cgroup.procs"

    def enter() -> None:
        procs.write_text("0")

    out = subprocess.run(["taskset", "-c", "1", "perf", "bench", "sched", "pipe", "-l", str(LOOPS)],
                         preexec_fn=enter, capture_output=True, text=True, timeout=120, check=True).stdout
    return float(_USECS.search(out).group(1))


def _run(maps: loader.PodMaps | None, root: Path, scope: Path) -> tuple[float, object, dict]:
    """Load the programs (with per-pod accounting when `maps`), fill the table from `root`, run
    the ping-pong in `scope`: (µs/op, the tracker's report, program -> (Δrun ns, Δruns))."""
    probe = loader.load(pods=maps)
    try:
        tracker = PodTracker(probe, root, node="bench", top_k=20) if maps is not None else None
        if tracker is not None:
            tracker.tick(0.0, datetime.now())
        before = probe.program_stats()
        usecs = pipe_usecs(scope)
        after = probe.program_stats()
        report = tracker.tick(1.0, datetime.now()) if tracker is not None else None
    finally:
        probe.close()
    stats = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after if k in before}
    return usecs, report, stats


def main() -> int:
    tree = _tree()
    try:
        scopes = [tree.add_pod()[2] for _ in range(POD_COUNT)]
        scope = scopes[POD_COUNT // 2]
        opts = PodOptions(node="bench", max_pods=256, top_k=20)
        maps = loader.PodMaps(pods=opts.max_pods, cgroup_slots=opts.cgroup_slots)
        ratios = []
        for i in range(ROUNDS):
            off = _run(None, tree.root, scope)[0]
            on, report, _ = _run(maps, tree.root, scope)
            ratios.append(on / off)
            print(f"round {i + 1}: off {off:.3f} µs/op, on {on:.3f} µs/op, ratio {on / off:.3f} "
                  f"(pods tracked {report.tracked}, cgroup entries {report.cgroup_entries})", flush=True)
        median = statistics.median(ratios)
        print(f"per-pod on ÷ off, median of {ROUNDS}: {median:.3f} (goal ≤ {GOAL_RATIO}: "
              f"{'OK' if median <= GOAL_RATIO else 'MISSED'})")
        # Run-time accounting costs each run two clock reads: measured apart from the ratio.
        with bpf_stats_enabled():
            _, _, stats = _run(maps, tree.root, scope)
        for label, (ns, runs) in sorted(stats.items()):
            print(f"  {label:<20} {runs:>9} runs {ns / max(runs, 1):6.0f} ns/run (per-pod on)")
        label, (ns, runs) = max(stats.items(), key=lambda kv: kv[1][0])
        print(f"busiest program (most run time) {label}: {ns / runs:.0f} ns/run (goal ≤ {GOAL_NS:.0f}: "
              f"{'OK' if ns / runs <= GOAL_NS else 'MISSED'})")
        rss = exporter_rss(tree.root)
        print(f"exporter RSS with {POD_COUNT} pod cgroups: {rss:.1f} MiB (goal ≤ {GOAL_RSS_MIB:.0f}: "
              f"{'OK' if rss <= GOAL_RSS_MIB else 'MISSED'})")
    finally:
        tree.close()
    return 0


def exporter_rss(root: Path) -> float:
    """Steady VmRSS (MiB) of the real exporter tracking every pod of `root`, after 10 ticks."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        env = {"PATH": "/usr/bin:/bin", "KSENSE_SOURCE": "ebpf", "KSENSE_CGROUP_ROOT": str(root),
               "KSENSE_METRICS_CSV": f"{tmp}/out/kernel_metrics.csv", "KSENSE_STATE_DIR": f"{tmp}/state"}
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "--port", "0", "--host", "127.0.0.1"],
                                cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        try:
            port = None
            end = time.monotonic() + 30
            while port is None and time.monotonic() < end:
                m = re.search(r"metrics at http://[\d.]+:(\d+)/", proc.stderr.readline())
                port = int(m.group(1)) if m else None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                if re.search(rf"^ksense_pods_tracked{{[^}}]*}} {POD_COUNT}\.0$", text, re.M):
                    break
                time.sleep(0.5)
            time.sleep(10)  # ten ticks at the tracked count: the steady state
            status = Path(f"/proc/{proc.pid}/status").read_text()
            return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())

"""Slowdown of a context-switch-bound workload with the exporter's programs attached.

`perf bench sched pipe` ping-pongs two tasks through a pipe on one CPU (taskset -c 1): every
operation is two wakeups and two context switches, so it shows the whole per-event cost of
the tracepoint programs. Each round runs it without BPF, with an empty program on the same
tracepoints (the floor: what any classic-tracepoint program costs here, before it does
anything) and with the exporter's programs, back to back so drift hits all three; it prints
µs/op per run and the median over rounds of ratio = µs/op with ÷ µs/op without, for the floor
and for the exporter. Goal ≤ 1.08×.
Run: .venv/bin/python -m bench.pipe_slowdown
"""

from __future__ import annotations

import re
import statistics

from bench._util import run_timed
from exporter.bpf import loader

ROUNDS = 5
LOOPS = 500_000  # ≈ 2.2 s per run at ≈ 4.4 µs/op on this VM
CMD = ["taskset", "-c", "1", "perf", "bench", "sched", "pipe", "-l", str(LOOPS)]
GOAL = 1.08
_USECS_PER_OP = re.compile(r"([0-9.]+)\s+usecs/op")


def usecs_per_op() -> float:
    _, out = run_timed(CMD, timeout=60)
    match = _USECS_PER_OP.search(out)
    if match is None:
        raise RuntimeError(f"no usecs/op in perf output: {out!r}")
    return float(match.group(1))


def main() -> None:
    floor_ratios, ratios = [], []
    for i in range(ROUNDS):
        without = usecs_per_op()
        empty = loader.EmptyProgram(tuple(loader.PROGRAMS))
        try:
            floor = usecs_per_op()
        finally:
            empty.close()
        probe = loader.load()
        try:
            with_bpf = usecs_per_op()
        finally:
            probe.close()
        floor_ratios.append(floor / without)
        ratios.append(with_bpf / without)
        print(
            f"round {i + 1}: without {without:.3f}, empty programs {floor:.3f}, exporter {with_bpf:.3f} "
            f"µs/op; ratios {floor_ratios[-1]:.3f} / {ratios[-1]:.3f}"
        )
    floor_median, median = statistics.median(floor_ratios), statistics.median(ratios)
    print(
        f"median slowdown over {ROUNDS} rounds: empty programs {floor_median:.3f}×, exporter {median:.3f}× "
        f"(goal ≤ {GOAL}×: {'OK' if median <= GOAL else 'MISSED'}); "
        f"exporter ÷ empty {median / floor_median:.3f}"
    )


if __name__ == "__main__":
    main()

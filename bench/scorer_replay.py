"""How long `python -m scorer.replay` takes over the real recording (4,569 rows, docs/design.md#reference-vectors).

Wall time of the whole command (interpreter start, imports, CSV parse, one evaluation per row,
CSV write), median of N runs, output to a temporary file. Compared, in the same run, with:
- a bare interpreter start (`python -c pass`, median of N): the least any Python tool takes;
- the prototype's reference: 170 µs per node evaluation, i.e. 4,569 × 170 µs ≈ 0.78 s for the
  evaluations alone (its start-up and CSV handling not even counted).
Goal ≤ 1 s.

Exits 0 when the goal is missed (the verdict says MISS), non-zero only when the harness fails
(for example when the recording is absent).
Run: .venv/bin/python -m bench.scorer_replay [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench._util import HarnessError, print_table, run_timed
from bench.exporter_cost import ratio, verdict

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "data" / "reference" / "kernel_metrics_real.csv.gz"
ROWS = 4569
PROTO_S_PER_EVALUATION = 170e-6
GOAL_S = 1.0


def median_wall(cmd: list[str], runs: int) -> float:
    return statistics.median(run_timed(cmd)[0] for _ in range(runs))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 7
    if not RECORDING.exists():
        raise HarnessError(f"needs the reference recording {RECORDING}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "decisions.csv"
        cmd = [sys.executable, "-m", "scorer.replay", str(RECORDING), "--output", str(out)]
        _, summary = run_timed(cmd)  # warm-up: page cache, .pyc files
        replay_s = median_wall(cmd, runs)
        rows = sum(1 for _ in out.open()) - 1
    if rows != ROWS:
        raise HarnessError(f"replay wrote {rows} rows, expected {ROWS}")
    bare_s = median_wall([sys.executable, "-c", "pass"], runs)
    proto_s = ROWS * PROTO_S_PER_EVALUATION

    print(f"replay of {RECORDING.name}: {rows} rows, median of {runs} runs")
    print(summary.strip())
    print_table(
        ["figure", "ksense s", "bare start s", "×bare", "prototype s", "×proto", "goal", "result"],
        [["python -m scorer.replay", f"{replay_s:.3f}", f"{bare_s:.3f}", ratio(replay_s, bare_s), f"{proto_s:.3f}",
          ratio(replay_s, proto_s), f"≤ {GOAL_S:g} s", verdict(replay_s, GOAL_S)]],
    )
    print(f"per row, start-up included: {replay_s / rows * 1e6:.0f} µs (prototype: "
          f"{PROTO_S_PER_EVALUATION * 1e6:.0f} µs per evaluation alone)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

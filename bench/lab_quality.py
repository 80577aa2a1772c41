"""The lab's two offline goals on the committed recordings: `lab quality` on one 20-minute
recording (goal ≤ 10 s) and `lab tune` on the training set (goal ≤ 10 min on 2 cores).

Baselines measured in the same run: `scorer.replay` of the same recording (the controller
alone, what quality adds its judging and pictures to) and a bare interpreter start.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench._util import HarnessError, print_table, run_main, run_timed
from bench.exporter_cost import ratio, verdict

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "lab"
QUALITY_GOAL_S = 10.0
TUNE_GOAL_S = 600.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run each and 100 tuning candidates")
    args = parser.parse_args(argv)
    try:
        split = json.loads((DATA / "split.json").read_text())
    except (OSError, ValueError) as exc:
        raise HarnessError(f"needs the lab recordings and {DATA / 'split.json'}: {exc}") from None
    rec = DATA / split["test"][0]
    runs = 1 if args.quick else 3
    candidates = 100 if args.quick else 600
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        quality = [py, "-m", "lab", "quality", str(rec), "--out", f"{tmp}/q"]
        run_timed(quality)  # warm-up: page cache, .pyc files
        quality_s = statistics.median(run_timed(quality)[0] for _ in range(runs))
        kernel = next(rec.glob("kernel_metrics.csv*"))
        replay_s = statistics.median(run_timed([py, "-m", "scorer.replay", str(kernel), "-o", f"{tmp}/d.csv"])[0]
                                     for _ in range(runs))
        bare_s = statistics.median(run_timed([py, "-c", "pass"])[0] for _ in range(runs))
        train = [str(DATA / n) for n in split["train"]]
        tune_s, _ = run_timed([py, "-m", "lab", "tune", "--train", *train, "--out", f"{tmp}/rules.json",
                               "--candidates", str(candidates)], timeout=3 * TUNE_GOAL_S)
    print(f"lab quality of {rec.name} (median of {runs}); lab tune on {len(train)} recordings, {candidates} candidates")
    print_table(
        ["figure", "seconds", "scorer.replay s", "×replay", "bare start s", "×bare", "goal", "result"],
        [["lab quality (1 recording, with PNGs)", f"{quality_s:.2f}", f"{replay_s:.2f}", ratio(quality_s, replay_s),
          f"{bare_s:.3f}", ratio(quality_s, bare_s), f"≤ {QUALITY_GOAL_S:g} s", verdict(quality_s, QUALITY_GOAL_S)],
         ["lab tune (training set)", f"{tune_s:.1f}", f"{replay_s:.2f}", ratio(tune_s, replay_s), f"{bare_s:.3f}",
          ratio(tune_s, bare_s), f"≤ {TUNE_GOAL_S:g} s", verdict(tune_s, TUNE_GOAL_S)]],
    )
    return 0


if __name__ == "__main__":
    run_main("lab_quality", main)

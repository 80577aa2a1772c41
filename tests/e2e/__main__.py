"""`python -m tests.e2e` (what `make e2e` runs): the end-to-end scenario on this machine.

Needs root (eBPF), bcc, /usr/bin/prometheus, stress-ng and the reference recording
data/reference/kernel_metrics_real.csv.gz (`scripts/setup.sh` installs the first four). Writes
everything to `out/e2e/<timestamp>/` (or `--out DIR`): timeline.csv / timeline.png, events,
binds, admission reviews, figures.json, summary.md, and every component's log and CSVs.
Exit status 0 when every step passed, 1 when one failed, 2 when a real part is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from tests.conftest import REAL_KERNEL_CSV, bcc_available
from tests.scorer import promserver
from tests.support import REPO


def missing_parts() -> list[str]:
    problems = []
    if not bcc_available():
        problems.append("eBPF: run as root with Debian's python3-bpfcc linked into the venv and tracefs mounted "
                        "(sudo scripts/setup.sh)")
    if promserver.prometheus_binary() is None:
        problems.append("prometheus: apt-get install prometheus")
    if shutil.which("stress-ng") is None:
        problems.append("stress-ng: apt-get install stress-ng")
    if not REAL_KERNEL_CSV.exists():
        problems.append(f"the reference recording {REAL_KERNEL_CSV}")
    if importlib.util.find_spec("trustme") is None:
        problems.append("trustme (requirements/dev.txt)")
    return problems


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="output folder (default out/e2e/<timestamp>)")
    args = parser.parse_args(argv)
    problems = missing_parts()
    if problems:
        print("e2e: cannot run, missing:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    out = args.out or REPO / "out" / "e2e" / time.strftime("%Y%m%d-%H%M%S")
    print(f"e2e: output in {out} (about three minutes)", flush=True)
    from tests.e2e import scenario  # after the checks: imports the whole stack

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # SIGTERM (a CI runner cancelling the job) unwinds like Ctrl-C, so every part is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = scenario.run(out)
    except AssertionError as exc:
        print(scenario.summary_text_for(out), file=sys.stderr)
        print(f"e2e: FAILED: {exc}\ne2e: logs and timeline in {out}", file=sys.stderr)
        return 1
    print(scenario.summary_text(report))
    print(f"e2e: passed; timeline {out / 'timeline.csv'}" + (f", {out / 'timeline.png'}"
                                                              if (out / 'timeline.png').exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m lab record | quality | tune`: the decision-quality lab's command line.

Exit status: 0 done; 2 bad input or a missing part (one line saying what and how to fix it);
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    from lab.record import DEFAULT_WARMUP_S
    from lab.tenant import DEFAULT_RATE

    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n")[0].split(": ", 1)[1])
    sub = p.add_subparsers(dest="command", required=True, metavar="{record,quality,tune}")

    r = sub.add_parser("record", help="record this machine under a seeded stress schedule (root)",
                       description="Record kernel_metrics.csv (real eBPF collector), the reference tenant's "
                       "latency (Redis, open-loop client) and a seeded stress schedule into DIR. Needs root, bcc, "
                       "stress-ng, hackbench, iperf3 and redis-server (scripts/setup.sh installs them). The machine "
                       "should have nothing else running: other load pollutes the tenant's latency.")
    r.add_argument("--out", type=Path, required=True, help="directory to write the recording into")
    r.add_argument("--seconds", type=_positive(float), required=True, help="length of the recording, warm-up included")
    r.add_argument("--seed", type=int, required=True, help="seed of the stress schedule")
    r.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S,
                   help=f"baseline warm-up seconds, tenant only (default {DEFAULT_WARMUP_S:g}, the exporter's)")
    r.add_argument("--rate", type=_positive(float), default=DEFAULT_RATE,
                   help=f"tenant requests per second (default {DEFAULT_RATE})")
    r.add_argument("--min-phase", type=_positive(float), default=30.0, help="shortest stress phase, s (default 30)")
    r.add_argument("--max-phase", type=_positive(float), default=90.0, help="longest stress phase, s (default 90)")
    r.add_argument("--force", action="store_true", help="replace a recording already in --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "record":
        from lab.record import RecordError, RecordParams, record

        params = RecordParams(out=args.out, seconds=args.seconds, seed=args.seed, warmup_s=args.warmup,
                              rate=args.rate, min_phase_s=args.min_phase, max_phase_s=args.max_phase,
                              force=args.force)
        try:
            meta = record(params, ["python", "-m", "lab", *argv], progress=lambda s: print(s, file=sys.stderr))
        except (RecordError, ValueError) as exc:
            print(f"lab record: {exc}", file=sys.stderr)
            return 2
        if not meta["complete"]:
            return 130
        print(f"lab record: done: {args.out} ({meta['started']} to {meta['ended']})", file=sys.stderr)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())

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
    from lab.quality import DEFAULT_HORIZON_S, DEFAULT_SLO_FACTOR
    from lab.record import DEFAULT_WARMUP_S, REPO
    from lab.tenant import DEFAULT_RATE

    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n")[0].split(": ", 1)[1])
    sub = p.add_subparsers(dest="command", required=True, metavar="{record,quality,tune}")

    r = sub.add_parser("record", help="record this machine under a seeded stress schedule (root)",
                       description="Record kernel_metrics.csv (real eBPF collector), the reference tenant's "
                       "latency (Redis, open-loop client) and a seeded stress schedule into DIR. Needs root, bcc, "
                       "stress-ng, hackbench, iperf3 and redis-server (scripts/setup.sh installs them). The machine "
                       "should have nothing else running: other load pollutes the tenant's latency.")
    r.add_argument("--out", type=Path, required=True, help="directory to write the recording into")
    r.add_argument("--seconds", type=_positive(float),
                   help="length of the recording, warm-up included (required unless --schedule)")
    r.add_argument("--seed", type=int, required=True, help="seed of the stress schedule")
    r.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S,
                   help=f"baseline warm-up seconds, tenant only (default {DEFAULT_WARMUP_S:g}, the exporter's)")
    r.add_argument("--rate", type=_positive(float), default=DEFAULT_RATE,
                   help=f"tenant requests per second (default {DEFAULT_RATE})")
    r.add_argument("--min-phase", type=_positive(float), default=30.0, help="shortest stress phase, s (default 30)")
    r.add_argument("--max-phase", type=_positive(float), default=90.0, help="longest stress phase, s (default 90)")
    r.add_argument("--force", action="store_true", help="replace a recording already in --out")
    r.add_argument("--schedule", metavar="SPEC",
                   help="explicit phases after the warm-up instead of the seeded ones: STRESSOR:INTENSITY:SECONDS,... "
                        "(stressors: quiet, cpu, cpu-partial, hackbench, memory, io, netrx, mix:A+B; --seconds is "
                        "then ignored)")

    def judged(sp: argparse.ArgumentParser) -> None:
        slo = sp.add_mutually_exclusive_group()
        slo.add_argument("--slo-ms", type=_positive(float),
                         help="fixed SLO on the tenant's p99, ms (default: --slo-factor x the calm median p99)")
        slo.add_argument("--slo-factor", type=_positive(float), default=DEFAULT_SLO_FACTOR,
                         help="SLO = K x the median p99 of each recording's calm phases "
                              f"(default {DEFAULT_SLO_FACTOR:g})")
        sp.add_argument("--smooth-s", type=int, default=1,
                        help="judge the rolling median of the per-second p99 over this many seconds (odd; default 1: "
                             "every second on its own; 5 = only sustained rises count)")
        sp.add_argument("--horizon-s", type=int, default=DEFAULT_HORIZON_S,
                        help=f"pain(t) = p99 above the SLO within [t, t+H] (default {DEFAULT_HORIZON_S})")

    q = sub.add_parser("quality", help="score policies' decisions against the tenant's pain",
                       description="Replay recordings through the scorer's controller and decision state machine "
                       "and compare its denies (and single-threshold and constant policies') with the tenant's pain. "
                       "Writes quality.json and PNGs to --out and a Markdown table to stdout.")
    q.add_argument("recordings", nargs="+", type=Path, metavar="DIR", help="recording directories (lab record)")
    q.add_argument("--rules", action="append", metavar="FILE",
                   help="rule file to evaluate (repeatable; default the bundled rules). A 'decision' section in it "
                        "sets the thresholds")
    q.add_argument("--thresholds", type=Path, metavar="FILE",
                   help="single-threshold policies from FILE (the .tune.json lab tune writes); default: the in-sample "
                        "best of each sweep, flagged as such")
    q.add_argument("--out", type=Path, default=Path("lab-quality"), help="output directory (default ./lab-quality)")
    q.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    judged(q)

    t = sub.add_parser("tune", help="learn rules and thresholds from recordings (Wang–Mendel + search)",
                       description="Learn a rule base (Wang–Mendel) and its membership scales and decision thresholds "
                       "(seeded search, time-split cross-validation inside the training set) from --train recordings; "
                       "report train and held-out (--test) figures. Writes the rule file (scorer-loadable, with a "
                       "'decision' section) and FILE.tune.json beside it.")
    t.add_argument("--train", nargs="+", type=Path, required=True, metavar="DIR", help="training recordings")
    t.add_argument("--test", nargs="*", type=Path, default=[], metavar="DIR",
                   help="held-out recordings (never used for learning; must not overlap --train)")
    t.add_argument("--out", type=Path, required=True, help="rule file to write (e.g. rules.json)")
    t.add_argument("--seed", type=int, default=1, help="search seed (default 1)")
    t.add_argument("--candidates", type=_positive(int), default=600, help="candidates evaluated (default 600)")
    t.add_argument("--folds", type=_positive(int), default=3, help="time-split folds per recording (default 3)")
    judged(t)

    rep = sub.add_parser("report", help="regenerate lab/REPORT.md from the committed recordings",
                         description="Tune on the committed training recordings, evaluate the bundled and the tuned "
                         "rules and the baselines on the held-out ones, and write the report.")
    rep.add_argument("--data", type=Path, default=REPO / "data" / "lab", help="recordings with split.json")
    rep.add_argument("--out", type=Path, default=REPO / "lab" / "REPORT.md", help="report to write")
    rep.add_argument("--rules-out", type=Path, default=REPO / "lab" / "rules_tuned.json", help="tuned rule file")
    rep.add_argument("--seed", type=int, default=1, help="search seed (default 1)")
    rep.add_argument("--candidates", type=_positive(int), default=600, help="candidates evaluated (default 600)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "record":
        if args.seconds is None and args.schedule is None:
            parser.error("record: give --seconds (seeded schedule) or --schedule")
        from lab.record import RecordError, RecordParams, record

        params = RecordParams(out=args.out, seconds=args.seconds, seed=args.seed, warmup_s=args.warmup,
                              rate=args.rate, min_phase_s=args.min_phase, max_phase_s=args.max_phase,
                              force=args.force, schedule=args.schedule)
        try:
            meta = record(params, ["python", "-m", "lab", *argv], progress=lambda s: print(s, file=sys.stderr))
        except (RecordError, ValueError) as exc:
            print(f"lab record: {exc}", file=sys.stderr)
            return 2
        if not meta["complete"]:
            return 130
        print(f"lab record: done: {args.out} ({meta['started']} to {meta['ended']})", file=sys.stderr)
        return 0
    from lab import commands
    from lab.recording import RecordingError
    from scorer.core.rules import RulesError

    try:
        return getattr(commands, f"{args.command}_cmd")(args)
    except (RecordingError, RulesError, commands.UsageError) as exc:
        print(f"lab {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

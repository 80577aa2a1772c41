"""`python -m scorer.replay`: the scorer's controller and decisions over a kernel_metrics.csv (docs/tools.md).

Answers "what would the scorer have decided on this node, and why" offline, from a recording
(the exporter's CSV, or data/reference/kernel_metrics_real.csv.gz), and lets an operator try other
thresholds or an override rule file before deploying them. One evaluation per row, through
the same `scorer.core.evaluate` as the live tick, with the inference batched over the whole
file, so a day of data takes seconds. Writes docs/metrics.md#replay-output rows and prints a summary.

Exit status: 0 done; 2 when the input, the configuration or the output is unusable (one
line naming the file and, for a malformed recording, the line).
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from common.core.csvrow import RowError, check_header, format_number, format_time, parse_row
from common.core.model import Derived, RawInterval
from common.csvfile import open_text
from common.envconf import EnvReader
from common.names import DECISION_ALLOW, DECISION_DENY, INPUTS, REPLAY_COLUMNS, RQ_P99, SOURCE_REPLAY
from scorer.config import DecisionSettings, read_decision
from scorer.core.decision import DecisionParams, params_for
from scorer.core.evaluate import evaluate_series
from scorer.core.model import Inputs, NodeInputs, NodeReport
from scorer.core.rules import RuleBase, RulesError
from scorer.rulefile import load_rules
from scorer.sources import require

DEFAULT_INPUT = "/tmp/ksense/kernel_metrics.csv"

class ReplayError(Exception):
    """A problem the user must fix; main prints it as one line and exits 2."""


def read_rows(path: Path) -> list[tuple[RawInterval, Derived]]:
    """The parsed data rows of a kernel_metrics.csv (or .csv.gz).

    Raises RowError naming the line of a malformed row, OSError when the file is unreadable.
    """
    rows: list[tuple[RawInterval, Derived]] = []
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise RowError(1, None, "empty file, expected the kernel_metrics.csv header")
            check_header(header, reader.line_num)
            rows.extend(parse_row(fields, reader.line_num) for fields in reader)
        except csv.Error as exc:
            raise RowError(reader.line_num, None, f"malformed CSV: {exc}") from None
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
            raise RowError(reader.line_num + 1, None, f"not UTF-8 text or gzip: {exc}") from None
    return rows


def row_inputs(raw: RawInterval, derived: Derived, node: str) -> Inputs:
    """The scorer's Inputs (source "replay", one node) of one recorded row: its recorded
    Friction, Direction, Energy, CPUUtil, PSI and SchedLat_P99_ms (the optional rq_p99_ms
    input, used by a rule base that declares it); a CALIBRATING row is a calibrating node
    (its friction and energy are missing by design)."""
    values = {"friction": derived.friction, "energy": derived.energy, "cpu": raw.cpu_util, "psi": raw.psi}
    inputs = NodeInputs(
        node=node, friction=derived.friction, direction=derived.direction, energy=derived.energy,
        cpu_pct=raw.cpu_util, psi_pct=raw.psi,
        missing=tuple(name for name in INPUTS if math.isnan(values[name])),
        calibrating=not derived.frozen, rq_p99_ms=raw.sched_p99_ms,
    )
    return Inputs(time=raw.time, source=SOURCE_REPLAY, nodes={node: inputs})


def provided(series: Sequence[Inputs]) -> frozenset[str]:
    """The optional inputs a recording holds: the run-queue p99 when any row has it (a procfs
    recording leaves SchedLat_P99_ms empty)."""
    has_rq = any(math.isfinite(node.rq_p99_ms) for inputs in series for node in inputs.nodes.values())
    return frozenset({RQ_P99}) if has_rq else frozenset()


def read_recording(path: Path, node: str) -> list[Inputs]:
    """One Inputs per data row of a kernel_metrics.csv (or .csv.gz): `row_inputs` of `read_rows`."""
    return [row_inputs(raw, derived, node) for raw, derived in read_rows(path)]


def output_row(report: NodeReport) -> list[str]:
    """One replay output row (docs/metrics.md#replay-output): the recorded inputs in the kernel_metrics.csv
    formats, then the verdict."""
    node = report.inputs
    return [
        format_time(report.time),
        "CALIBRATING" if node.calibrating else "FROZEN",
        format_number(node.friction, 6),
        format_number(node.direction, 1),
        format_number(node.energy, 6),
        format_number(node.cpu_pct, 6),
        format_number(node.psi_pct, 6),
        format_number(node.friction_signed, 6),
        f"{report.score:.3f}",
        report.level,
        report.decision,
        str(report.bad_count),
        str(report.good_count),
        report.medium_band or "",
        report.reason or "",
    ]


def replay(rb: RuleBase, params: DecisionParams, series: Sequence[Inputs]) -> Iterator[NodeReport]:
    """The report of the recording's node at each row, the state carried from row to row."""
    for _, results in evaluate_series(rb, params, {}, series):
        yield from results.reports.values()


def _env_params(environ: Mapping[str, str], problems: list[str]) -> DecisionSettings:
    """Defaults from the scorer's FUZZY_* variables, read by the scorer's own reader (same bounds,
    same messages), so a replay reproduces a configured scorer (None: not configured, the rule
    file's or the built-in value applies)."""
    reader = EnvReader(environ)
    out = read_decision(reader)
    problems.extend(reader.problems)
    return out


def _parser(defaults: Mapping[str, object], environ: Mapping[str, str]) -> argparse.ArgumentParser:
    d = DecisionParams()
    p = argparse.ArgumentParser(
        prog="python -m scorer.replay",
        description="Run the scorer's fuzzy controller and decision state machine over a kernel_metrics.csv "
                    "(or .csv.gz; one evaluation per row) and write the decisions (docs/metrics.md). Flags override "
                    "the environment variables named in each help; both override a rule file's 'decision' "
                    "thresholds, which override the built-in defaults.",
    )
    p.add_argument("input", nargs="?", type=Path, default=Path(environ.get("KSENSE_METRICS_CSV") or DEFAULT_INPUT),
                   help=f"recording to replay (env KSENSE_METRICS_CSV, default {DEFAULT_INPUT})")
    p.add_argument("--output", "-o", type=Path, required=True, help="decisions CSV to write (replaced if present)")
    p.add_argument("--node", help="node name used in the evaluation "
                                   "(default: the input file's name before its first dot)")
    p.add_argument("--rules", default=environ.get("FUZZY_RULES_FILE") or None,
                   help="rule-base JSON (env FUZZY_RULES_FILE, default the bundled rules)")
    p.add_argument("--allow-on-missing", action=argparse.BooleanOptionalAction, default=defaults["allow_on_missing"],
                   help="count missing friction/energy as 0 instead of denying (env FUZZY_ALLOW_ON_MISSING)")
    p.add_argument("--good-threshold", type=int, default=defaults["good_threshold"],
                   help=f"G: good ticks before allowing again (env FUZZY_GOOD_THRESHOLD, default {d.good_threshold})")
    p.add_argument("--medium-low-upper", type=float, default=defaults["medium_low_upper"],
                   help="lo: medium scores below it count as good (env FUZZY_MEDIUM_LOW_UPPER, "
                        f"default {d.medium_low_upper:g})")
    p.add_argument("--medium-mid-upper", type=float, default=defaults["medium_mid_upper"],
                   help="mid: medium scores from it on count as bad (env FUZZY_MEDIUM_MID_UPPER, "
                        f"default {d.medium_mid_upper:g})")
    p.add_argument("--medium-bad-threshold", type=int, default=defaults["medium_bad_threshold"],
                   help="B: medium-high ticks before denying (env FUZZY_MEDIUM_BAD_THRESHOLD, "
                        f"default {d.medium_bad_threshold})")
    return p


def _write(path: Path, reports: Iterator[NodeReport]) -> dict[str, int]:
    """Write the decisions CSV whole or not at all (a temporary file renamed over `path`);
    returns the decision counts and the number of flips."""
    counts: collections.Counter[str] = collections.Counter()
    last = DECISION_ALLOW  # every node starts allowed (docs/design.md#decisions)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(REPLAY_COLUMNS)
            for report in reports:
                writer.writerow(output_row(report))
                counts[report.decision] += 1
                counts[f"level_{report.level}"] += 1
                if report.decision != last:
                    counts[f"to_{report.decision}"] += 1
                last = report.decision
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return counts


def run(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    started = time.perf_counter()
    problems: list[str] = []
    defaults = _env_params(environ, problems)
    args = _parser(defaults, environ).parse_args(argv)
    rb = params = None
    try:
        rb = load_rules(args.rules)
    except RulesError as exc:
        problems.append(str(exc))
    if rb is not None:
        try:
            params = params_for(rb.decision, {
                "good_threshold": args.good_threshold, "medium_low_upper": args.medium_low_upper,
                "medium_mid_upper": args.medium_mid_upper, "medium_bad_threshold": args.medium_bad_threshold,
                "allow_on_missing": args.allow_on_missing,
            })
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ReplayError("invalid configuration: " + "; ".join(problems))
    node = args.node or args.input.name.split(".")[0]
    try:
        series = read_recording(args.input, node)
    except RowError as exc:
        raise ReplayError(f"{args.input}: {exc}") from None
    except OSError as exc:
        raise ReplayError(f"{args.input}: cannot read: {exc.strerror or exc}") from None
    try:
        require(rb.inputs, f"recording {args.input}", provided(series))
    except RulesError as exc:
        raise ReplayError(f"invalid configuration: {exc}") from None
    try:
        counts = _write(args.output, replay(rb, params, series))
    except OSError as exc:
        raise ReplayError(f"{args.output}: cannot write: {exc.strerror or exc}") from None
    elapsed = time.perf_counter() - started
    allow, deny = counts[DECISION_ALLOW], counts[DECISION_DENY]
    print(f"replay: {len(series)} rows of {args.input} (node {node}) -> {args.output} in {elapsed:.2f} s")
    print(f"decisions: allow {allow}, deny {deny}; flips {counts['to_allow'] + counts['to_deny']} "
          f"(to deny {counts['to_deny']}, to allow {counts['to_allow']})")
    print(f"levels: low {counts['level_low']}, medium {counts['level_medium']}, high {counts['level_high']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

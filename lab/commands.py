"""The `quality`, `tune` and `report` commands: recordings in, figures, rule files and reports out.

Glue between the command line (lab.__main__), the readers (lab.recording), the policies and
figures (lab.policies, lab.quality, lab.core) and the outputs (JSON, Markdown, PNG).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from lab import quality, recording, tune
from lab.quality import Labelled, Slo
from scorer.core.decision import DecisionParams, params_for
from scorer.core.rules import RuleBase
from scorer.rulefile import DEFAULT_NAME, load_rules

BUNDLED = "ksense (bundled rules)"
TUNED = "ksense (tuned)"


class UsageError(Exception):
    """Arguments that contradict each other or files that cannot be used."""


def _ruleset(path: str | Path | None) -> tuple[RuleBase, DecisionParams]:
    rb = load_rules(path)
    try:
        return rb, params_for(rb.decision, {})
    except ValueError as exc:
        raise UsageError(f"{path}: decision: {exc}") from None


def _load(dirs: Sequence[Path], slo: Slo, horizon_s: int) -> list[Labelled]:
    return [Labelled.of(recording.load(d), slo, horizon_s) for d in dirs]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n",
                   encoding="utf-8")
    tmp.replace(path)


def _clean(value):
    """NaN -> None, recursively, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def quality_cmd(args) -> int:
    started = time.perf_counter()
    slo = Slo(ms=args.slo_ms, factor=args.slo_factor, smooth_s=args.smooth_s)
    data = _load(args.recordings, slo, args.horizon_s)
    rules = {}
    for path in args.rules or [None]:
        rules[BUNDLED if path is None else f"ksense ({Path(path).name})"] = _ruleset(path)
    sweeps = quality.sweeps(data)
    if args.thresholds:
        try:
            chosen = json.loads(args.thresholds.read_text(encoding="utf-8"))["thresholds"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{args.thresholds}: no 'thresholds' object ({exc})") from None
        suffix = " (trained)"
    else:
        from lab.core.metrics import best_threshold

        chosen = {s: best_threshold(sw)["threshold"] for s, sw in sweeps.items()}
        suffix = " (in-sample best)"
    result = quality.evaluate(data, quality.deciders(rules, chosen, suffix), args.horizon_s)
    result.update(slo_ms=args.slo_ms if args.slo_ms else {d.rec.name: d.slo_ms for d in data},
                  slo_factor=None if args.slo_ms else args.slo_factor, horizon_s=args.horizon_s,
                  smooth_s=args.smooth_s,
                  thresholds={s: {"threshold": t, "chosen": suffix.strip(" ()")} for s, t in chosen.items()},
                  sweeps=sweeps)
    args.out.mkdir(parents=True, exist_ok=True)
    _write_json(args.out / "quality.json", _clean(result))
    print(quality.policy_table(result))
    print()
    print(quality.phase_table(result, list(rules)))
    if not args.no_plots:
        from lab import plots

        for d in data:
            plots.timeline(d, {n: rb_p for n, rb_p in rules.items()}, args.out / f"timeline-{d.rec.name}.png")
        plots.precision_recall(result, args.out / "precision-recall.png")
    print(f"\nlab quality: {len(data)} recording(s), {sum(r['evaluated'] for r in result['recordings'])} evaluated "
          f"seconds in {time.perf_counter() - started:.1f} s; wrote {args.out / 'quality.json'}")
    return 0


def _check_disjoint(train: Sequence[Path], test: Sequence[Path]) -> None:
    def identity(d: Path) -> tuple:
        try:
            meta = json.loads(recording._find(d, recording.META).read_text(encoding="utf-8"))
        except (recording.RecordingError, OSError, ValueError):
            meta = {}
        return meta.get("seed"), meta.get("started")

    resolved = {d.resolve() for d in train}
    ids = {identity(d) for d in train} - {(None, None)}
    for d in test:
        if d.resolve() in resolved:
            raise UsageError(f"{d}: in both --train and --test: a held-out recording must never be learnt from")
        if identity(d) in ids:
            raise UsageError(f"{d}: the same recording (seed and start time) as one in --train")


def bundled_document() -> dict:
    return json.loads(resources.files("scorer").joinpath(DEFAULT_NAME).read_text(encoding="utf-8"))


def run_tune(train_dirs: Sequence[Path], test_dirs: Sequence[Path], out: Path, *, slo: Slo, horizon_s: int,
             seed: int, candidates: int, folds: int = 3) -> dict:
    """Tune, write the rule file and its .tune.json, print the tables; returns the summary."""
    _check_disjoint(train_dirs, test_dirs)
    train = _load(train_dirs, slo, horizon_s)
    test = _load(test_dirs, slo, horizon_s)
    res = tune.search(bundled_document(), train, horizon_s=horizon_s, seed=seed, candidates=candidates, folds=folds,
                      progress=lambda s: print(s, flush=True))
    _write_json(out, res.document)
    rules = {BUNDLED: _ruleset(None), TUNED: _ruleset(out)}  # loaded back: what the scorer will load
    thresholds = tune.train_thresholds(train)
    deciders = quality.deciders(rules, thresholds, " (trained)")
    summary = {
        "rules": str(out), "seed": seed, "candidates": candidates, "folds": folds, "search_s": round(res.seconds, 1),
        "chosen": tune.candidate_dict(res.candidate), "cv": res.cv.as_dict(), "thresholds": thresholds,
        "train": quality.evaluate(train, deciders, horizon_s),
        "test": quality.evaluate(test, deciders, horizon_s) if test else None,
        "horizon_s": horizon_s, "slo_factor": None if slo.ms else slo.factor, "slo_ms": slo.ms,
        "smooth_s": slo.smooth_s,
    }
    _write_json(out.with_name(out.stem + ".tune.json"), _clean(summary))
    print(f"\nTraining recordings ({len(train)}; in-sample, not a result):\n")
    print(quality.policy_table(summary["train"]))
    if test:
        print(f"\nHeld-out recordings ({len(test)}):\n")
        print(quality.policy_table(summary["test"]))
        print()
        print(quality.phase_table(summary["test"], [BUNDLED, TUNED]))
    print(f"\nlab tune: searched {candidates} candidates in {res.seconds:.0f} s; wrote {out} and "
          f"{out.with_name(out.stem + '.tune.json')}")
    return summary


def tune_cmd(args) -> int:
    run_tune(args.train, args.test, args.out, slo=Slo(ms=args.slo_ms, factor=args.slo_factor, smooth_s=args.smooth_s),
             horizon_s=args.horizon_s, seed=args.seed, candidates=args.candidates, folds=args.folds)
    return 0


def report_cmd(args) -> int:
    from lab import report

    return report.write(args)

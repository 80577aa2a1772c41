"""`python -m lab report`: lab/REPORT.md from the committed recordings, in one command.

Reads `split.json` in the data directory (`{"train": [names], "test": [names]}`), tunes on the
training recordings (lab.commands.run_tune, which writes the tuned rule file), then writes the
report: the data, the held-out table of every policy with the goals checked, the per-stressor
table for the bundled and the tuned rules, what the tuner chose, and the timeline and
precision–recall pictures of the held-out recordings. Only held-out figures are results; the
training figures are shown as in-sample.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from common.names import RQ_P99
from lab import plots, quality, tune
from lab.commands import BUNDLED, TUNED, UsageError, _load, _ruleset, run_tune
from lab.core import metrics
from lab.quality import Slo
from scorer.core.rules import ANTECEDENTS, RuleBase

GOALS = {"f1": 0.80, "precision": tune.PRECISION_GOAL, "margin": 0.05, "onset_to_deny_s": tune.ONSET_GOAL_S,
         "flips_per_hour": tune.FLIPS_BUDGET_PER_H}


def rule_changes(bundled: RuleBase, tuned: RuleBase) -> tuple[int, int]:
    """(rules of `tuned` whose output differs from the bundled rule of the same four-input
    cell, rules of `tuned`)."""
    four = len(ANTECEDENTS)
    bundled_out = {tuple(k): o for k, o in zip(bundled.rule_sets.tolist(), bundled.rule_output.tolist(), strict=True)}
    changed = sum(bundled_out[tuple(k[:four])] != o
                  for k, o in zip(tuned.rule_sets.tolist(), tuned.rule_output.tolist(), strict=True))
    return int(changed), len(tuned.rule_output)

def _split(data: Path) -> tuple[list[Path], list[Path]]:
    try:
        split = json.loads((data / "split.json").read_text(encoding="utf-8"))
        train, test = [data / n for n in split["train"]], [data / n for n in split["test"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{data / 'split.json'}: expected {{\"train\": [...], \"test\": [...]}} ({exc})") from None
    if not train or not test:
        raise UsageError(f"{data / 'split.json'}: needs at least one training and one held-out recording")
    return train, test


SUSTAINED = "ksense (tuned, sustained pain)"
#: The sustained-pain definition: the rolling median of the p99 over this many seconds.
SUSTAINED_S = 5


def harmless_allow_share(held_out, rules, name: str = TUNED) -> float:
    """Share of allowed seconds among evaluated stress-phase seconds without pain (a stressor
    that does not hurt the tenant should not cost the node its admissions)."""
    from lab import policies

    allowed = total = 0
    for d in held_out:
        deny, _ = policies.ksense(d.rec, *rules[name])
        harmless = d.evaluated & ~d.pain & ~d.rec.calm
        allowed += int((~deny & harmless).sum())
        total += int(harmless.sum())
    return allowed / total if total else math.nan


def _goals(test: dict, harmless: float, name: str = TUNED) -> list[str]:
    tuned = test["policies"][name]
    thresholds = {n: q for n, q in test["policies"].items() if "(trained)" in n}
    best_name = max(thresholds, key=lambda n: thresholds[n]["f1"])
    best = thresholds[best_name]["f1"]

    def ok(flag: bool) -> str:
        return "**met**" if flag else "**missed**"

    rows = [
        f"| goal | target | {name}, held out | |",
        "|---|---|---|---|",
        f"| F1 | ≥ {GOALS['f1']:.2f} | {quality.fmt(tuned['f1'])} | {ok(tuned['f1'] >= GOALS['f1'])} |",
        f"| precision | ≥ {GOALS['precision']:.2f} | {quality.fmt(tuned['precision'])} | "
        f"{ok((tuned['precision'] or 0) >= GOALS['precision'])} |",
        f"| F1 margin over the best single threshold ({best_name}, F1 {quality.fmt(best)}) | "
        f"≥ +{GOALS['margin']:.2f} | "
        f"{tuned['f1'] - best:+.2f} | {ok(tuned['f1'] >= best + GOALS['margin'])} |",
        f"| median pain onset → deny | ≤ {GOALS['onset_to_deny_s']:g} s | "
        f"{quality.fmt(tuned['onset_to_deny_s'], 1)} s | "
        f"{ok(not math.isnan(tuned['onset_to_deny_s']) and tuned['onset_to_deny_s'] <= GOALS['onset_to_deny_s'])} |",
        f"| flips per hour | ≤ {GOALS['flips_per_hour']:g} | {quality.fmt(tuned['flips_per_hour'], 0)} | "
        f"{ok(tuned['flips_per_hour'] <= GOALS['flips_per_hour'])} |",
    ]
    rows.append(f"| allowed share of stress seconds without pain | high | {quality.fmt(harmless)} | (reported) |")
    return rows


#: Other pain definitions (K, H) the held-out figures are shown under, rules unchanged.
SENSITIVITY = ((1.5, 10, 1), (3.0, 10, 1), (2.0, 5, 1), (2.0, 0, 1), (2.0, 10, 5), (2.0, 5, 5))


def sensitivity(test_dirs, rules, thresholds: dict[str, float]) -> list[str]:
    """The held-out F1 (precision / recall) of the bundled and tuned rules and the trained
    thresholds under other SLO factors and horizons: does the ranking hold?"""
    names = [*rules, *(f"{s} ≥ {t:.4g} (trained)" for s, t in thresholds.items())]
    lines = ["| K × calm p99, horizon, p99 median over | pain share | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for k, h, smooth in ((quality.DEFAULT_SLO_FACTOR, quality.DEFAULT_HORIZON_S, 1), *SENSITIVITY):
        data = _load(test_dirs, Slo(factor=k, smooth_s=smooth), h)
        res = quality.evaluate(data, quality.deciders(rules, thresholds, " (trained)"), h)
        share = sum(float(d.pain[d.evaluated].sum()) for d in data) / sum(int(d.evaluated.sum()) for d in data)
        cells = [f"{quality.fmt(res['policies'][n]['f1'])} ({quality.fmt(res['policies'][n]['precision'])} / "
                 f"{quality.fmt(res['policies'][n]['recall'])})" for n in names]
        lines.append(f"| {k:g} ×, {h} s, {smooth} s | {share:.2f} | " + " | ".join(cells) + " |")
    return lines


def calm_pain_lines(train, horizon_s: int) -> list[str]:
    """Why quiet seconds of the training recordings count as pain (quality.calm_pain_sources),
    as a table and a sentence."""
    c = quality.calm_pain_sources(train, horizon_s)
    if not c["pain"]:
        return [f"No quiet second of the training recordings is in pain ({c['calm']} evaluated)."]

    def share(k: str) -> str:
        return f"{c[k]} ({c[k] / c['calm']:.2f})"

    return [
        f"Each quiet second in pain is attributed to the first hurt second of its {horizon_s}-s window: one in the "
        "following stress phase (the look-ahead reaching into the next stress), a quiet one within 30 s of the "
        "quiet phase's start (an after-effect of the stress before: writeback, reclaim), or a later quiet one (a "
        "blip with no stress running). Seconds (share of the evaluated quiet seconds):", "",
        "| quiet seconds | in pain | hurt themselves | pain from: next phase | after-effect | quiet blip | "
        "quiet hurt runs (1 s long) |",
        "|---|---|---|---|---|---|---|",
        f"| {c['calm']} | {share('pain')} | {share('hurt itself')} | {share('next phase')} | "
        f"{share('after-effect')} | {share('calm blip')} | {c['calm hurt runs']} ({c['one-second runs']}) |",
        "",
        f"The window multiplies: {c['hurt itself']} quiet seconds that hurt make {c['pain']} in pain. The "
        "look-ahead into the next stress phase is "
        + ("the largest source" if c["next phase"] >= max(c["after-effect"], c["calm blip"]) else
           "not the largest source") + "; the pain definition is unchanged (the `hurt share` column of the "
        "per-phase tables shows pain without the look-ahead).",
    ]


def write(args) -> int:
    started = time.monotonic()
    train_dirs, test_dirs = _split(args.data)
    slo = Slo()
    horizon = quality.DEFAULT_HORIZON_S
    summary = run_tune(train_dirs, test_dirs, args.rules_out, slo=slo, horizon_s=horizon, seed=args.seed,
                       candidates=args.candidates)
    test = summary["test"]
    sustained_out = args.rules_out.with_name(args.rules_out.stem + "_sustained.json")
    sustained_slo = Slo(smooth_s=SUSTAINED_S)
    summary2 = run_tune(train_dirs, test_dirs, sustained_out, slo=sustained_slo, horizon_s=horizon, seed=args.seed,
                        candidates=args.candidates)
    images = args.out.parent / "report"
    rules = {BUNDLED: _ruleset(None), TUNED: _ruleset(args.rules_out), SUSTAINED: _ruleset(sustained_out)}
    held_out = _load(test_dirs, slo, horizon)
    for d in held_out:
        plots.timeline(d, rules, images / f"timeline-{d.rec.name}.png")
    held_out_sustained = _load(test_dirs, sustained_slo, horizon)
    test2 = {**summary2["test"], "policies": {(SUSTAINED if n == TUNED else n): q
                                               for n, q in summary2["test"]["policies"].items()}}
    test2["phases"] = {f: {**p, "deny_share": {(SUSTAINED if n == TUNED else n): v
                                               for n, v in p["deny_share"].items()}}
                       for f, p in summary2["test"]["phases"].items()}
    test_for_plot = dict(test, sweeps=quality.sweeps(held_out))
    plots.precision_recall(test_for_plot, images / "precision-recall.png")
    all_data = _load([*train_dirs, *test_dirs], slo, horizon)
    chosen = summary["chosen"]
    cv_even = metrics.at_prior(metrics.Quality(**summary["cv"]), tune.BALANCED_PRIOR)
    root = args.out.resolve().parent.parent

    def rel(p: Path) -> str:
        try:
            return str(Path(p).resolve().relative_to(root))
        except ValueError:
            return str(p)

    lines = [
        "# Decision quality: does a deny mean the tenant hurts?",
        "",
        "Generated by `python -m lab report` (`make lab-report`) from the recordings in "
        f"`{rel(args.data)}`; do not edit by hand. Method and vocabulary: `docs/lab.md`.",
        "",
        f"Pain = the reference tenant's p99 above its SLO (2 × the median p99 of the recording's calm phases) "
        f"within the next {horizon} s. Only seconds with a frozen baseline count. Only the **held-out** figures "
        "are results: the tuner never saw those recordings, and the single-threshold baselines use thresholds "
        "chosen on the training recordings.",
        "",
        "## Recordings",
        "",
        "| recording | role | seed | minutes | stress phases | calm p99 ms | SLO ms | evaluated s | pain share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in all_data:
        role = "held out" if d.rec.path in test_dirs else "training"
        phases = len({(i, p) for i, p in enumerate(d.rec.phase) if p and (i == 0 or d.rec.phase[i - 1] != p)})
        lines.append(f"| {d.rec.name} | {role} | {d.rec.meta.get('seed', '–')} | {len(d.rec.time_s) / 60:.1f} | "
                     f"{phases - 1} | {d.rec.calm_p99_ms():.2f} | {d.slo_ms:.2f} | {int(d.evaluated.sum())} | "
                     f"{quality.fmt(float(d.pain[d.evaluated].mean()))} |")
    goals = _goals(test, harmless_allow_share(held_out, rules))
    lines += ["", "## Held-out results", "", quality.policy_table(test), "", *goals,
              "", "## Which trouble is caught (held out)", "",
              "Pain share and deny share per stressor (CPU hogs by count, partial CPU load by its busy share, any "
              "mix of two stressors as `mix`; the warm-up is calibrating and "
              "not evaluated):", "", quality.phase_table(test, [BUNDLED, TUNED]), "",
              "## Sustained pain (held out)", "",
              f"The same, with pain judged on the rolling median of the tenant's p99 over {SUSTAINED_S} s (a "
              "one-second blip no longer counts; a rise that lasts does), and the rules tuned on that definition "
              f"(`{rel(sustained_out)}`):", "",
              quality.policy_table(test2), "",
              *_goals(test2, harmless_allow_share(held_out_sustained, rules, SUSTAINED), SUSTAINED), "",
              quality.phase_table(test2, [BUNDLED, SUSTAINED]), "",
              "## The pain definition (held out)", "",
              "F1 (precision / recall) under other SLO factors K, horizons H and p99 smoothing, the rules and "
              "thresholds unchanged (first row: the default definition):", "",
              *sensitivity(test_dirs, rules, summary["thresholds"]), "",
              "## Where calm-phase pain comes from (training recordings)", "",
              *calm_pain_lines(_load(train_dirs, slo, horizon), horizon), "",
              "## The same over the training recordings (in-sample, not a result)", "",
              quality.policy_table(summary["train"]), "",
              quality.phase_table(summary["train"], [BUNDLED, TUNED]), "",
              "## What the tuner chose", "",
              f"Search: {summary['candidates']} candidates, seed {summary['seed']}, {summary['folds']}-fold time-split "
              f"cross-validation inside the training set ({summary['search_s']:.0f} s), objective: F1 and "
              f"precision at an even pain share (`docs/lab.md`). Cross-validated: at an even share F1 "
              f"{quality.fmt(cv_even[1])}, precision {quality.fmt(cv_even[0])}; at the training set's share "
              f"({quality.fmt(summary['cv']['pain_share'])}) F1 {quality.fmt(summary['cv']['f1'])}, precision "
              f"{quality.fmt(summary['cv']['precision'])}; recall {quality.fmt(summary['cv']['recall'])}, "
              f"{quality.fmt(summary['cv']['flips_per_hour'], 0)} flips/h.", "",
              "| knob | bundled | tuned |", "|---|---|---|"]
    bundled_params = rules[BUNDLED][1]
    for var, s in chosen["scales"].items():
        lines.append(f"| membership scale of {var} | 1 | {s:.3f} |")
    for key in ("good_threshold", "medium_bad_threshold", "medium_low_upper", "medium_mid_upper"):
        lines.append(f"| {key} | {getattr(bundled_params, key):g} | {chosen[key]:g} |")
    lines.append(f"| pain-share cuts (under / short / mod / long) | – | "
                 f"{' / '.join(f'{c:.2f}' for c in chosen['cuts'])} |")
    rq = chosen.get("rq")
    lines.append(f"| {RQ_P99} input: sets low / med / high at a, b, c ms | – | "
                 + (f"{rq[0]:g} / {rq[1]:g} / {rq[2]:g} |" if rq else "not used |"))
    tuned_rb = rules[TUNED][0]
    changed, count = rule_changes(rules[BUNDLED][0], tuned_rb)
    lines += ["", f"{changed} of {count} rule outputs differ from the bundled table"
              + (f" (each {RQ_P99} row compared with the bundled rule of its other four sets)" if tuned_rb.inputs
                 else "") + ". The tuned rule file is "
              f"`{rel(args.rules_out)}`; load it with `FUZZY_RULES_FILE` (its `decision` section sets G, B, lo "
              "and mid unless FUZZY_* variables override them).", "",
              "## Pictures (held out)", ""]
    for d in held_out:
        lines.append(f"![timeline of {d.rec.name}](report/timeline-{d.rec.name}.png)")
    lines += ["", "![precision and recall of every policy](report/precision-recall.png)", "",
              f"Report generated in {time.monotonic() - started:.0f} s.", ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"lab report: wrote {args.out} and {images}/")
    return 0

"""One evaluation of all nodes: inputs + previous states -> new states + Results (docs/design.md#decisions).

The live evaluator tick, the replay tool and the restart state rebuild all call this, so a
restarted replica, a second replica and an offline replay reach the same decisions from the
same inputs. A tick works on columns over the nodes in name order: the inputs are gathered
into arrays (only a node with a missing input takes the scalar `_plan` path, for its reason),
every scorable node is scored in one vectorised inference call, every state machine advances
at once (decision.advance), and one pass over plain lists writes the reports.
`evaluate_series` does the same for a sequence of ticks with the inference batched across
ticks (a score depends only on its inputs; only decisions need the ticks in order).
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from operator import attrgetter
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from common import names as n
from common.names import DECISION_ALLOW, DECISION_DENY, INPUTS
from scorer.core import decision, inference
from scorer.core.decision import DecisionParams, NodeState, States
from scorer.core.inputs import REASON_NO_BASELINE
from scorer.core.model import Inputs, NodeInputs, NodeReport, PodRef, Results
from scorer.core.rules import RuleBase

#: Inputs without which a node is denied (unless allow_on_missing): docs/design.md#decisions.
CRITICAL = ("friction", "energy")
#: Score reported for a node denied for missing inputs (its level is thus "high").
MISSING_SCORE = 100.0

# Node-ticks scored per inference call in evaluate_series: one call for a recording or a
# rebuild window of a small cluster, bounded batches (and memory) for a big one.
_BATCH_ROWS = 65536


_Evaluated = tuple[States, Results]


class _Plan(NamedTuple):
    """What one node's inputs allow: `blocked` lists the missing critical inputs that deny it
    outright; otherwise `values` are the inference inputs (friction_signed, energy, cpu, psi,
    then the rule base's optional inputs) with missing ones counted as 0."""

    node: NodeInputs
    missing: tuple[str, ...]
    blocked: tuple[str, ...]
    values: tuple[float, ...] | None


def _raw(node: NodeInputs, optional: tuple[str, ...]) -> tuple[float, ...]:
    """The inference inputs of a node as read: the four, then `optional` (RuleBase.inputs)."""
    four = (node.friction_signed, node.energy, node.cpu_pct, node.psi_pct)
    return (*four, node.rq_p99_ms) if optional else four


def _plan(node: NodeInputs, params: DecisionParams, optional: tuple[str, ...] = ()) -> _Plan:
    """Missing inputs of a node, in names.INPUTS order then `optional`'s, and what to do about them.

    An input is missing when the source says so, when its value is not finite, and, for
    friction and energy, while the node's baseline is calibrating (docs/design.md#decisions).
    An optional input (run-queue p99) counts as 0 when missing, like CPU and PSI.
    """
    raw = _raw(node, optional)
    # The common case, tested first because a big cluster runs this for every node every tick.
    if not (node.missing or node.calibrating) and all(map(math.isfinite, raw)):
        return _Plan(node, (), (), raw)
    names = (*INPUTS, *optional)
    missing = tuple(
        name for name, value in zip(names, raw, strict=True)
        if not math.isfinite(value) or name in node.missing or (node.calibrating and name in CRITICAL)
    )
    blocked = () if params.allow_on_missing else tuple(name for name in missing if name in CRITICAL)
    if blocked:
        return _Plan(node, missing, blocked, None)
    values = tuple(0.0 if name in missing else value for name, value in zip(names, raw, strict=True))
    return _Plan(node, missing, (), values)


def _missing_reason(plan: _Plan) -> str:
    """`baseline unavailable (procfs source has no p99)` / `calibrating (warm-up 123 s left)` /
    `calibrating` / `missing metrics: friction, energy`,
    followed by why when the source said (`(prometheus down)` when every input shares the cause,
    else per input: `friction (stale 75s), energy (absent)`)."""
    if plan.node.baseline_unavailable:
        return REASON_NO_BASELINE
    if plan.node.calibrating:
        left = plan.node.warmup_remaining_s
        return f"calibrating (warm-up {math.ceil(left)} s left)" if math.isfinite(left) and left > 0 else "calibrating"
    whys = [plan.node.why.get(name) for name in plan.blocked]
    if not any(whys):
        return "missing metrics: " + ", ".join(plan.blocked)
    if len(set(whys)) == 1:
        return f"missing metrics: {', '.join(plan.blocked)} ({whys[0]})"
    return "missing metrics: " + ", ".join(
        f"{name} ({why})" if why else name for name, why in zip(plan.blocked, whys, strict=True)
    )


def _deny_reason(score: float, band: str | None, bad: int, good: int, params: DecisionParams) -> str:
    """Why a scored node is denied: too high now, bad for long enough, or not yet good for long enough."""
    if score >= n.LEVEL_HIGH:
        return f"score {score:.1f} ≥ {n.LEVEL_HIGH:g}"
    if band == decision.MEDIUM_HIGH:
        # Capped at B: past it the count adds nothing to "why" (bad_count still has it).
        return f"medium-high {min(bad, params.medium_bad_threshold)}/{params.medium_bad_threshold}"
    if band == decision.MEDIUM_MID:
        return "medium-mid: holding deny"
    return f"recovering: good {good}/{params.good_threshold}"


#: What each role's rate measures, as a deny's reason shows it (names.POD_ROLES).
_RATE_SHOWN = MappingProxyType({
    n.POD_ROLE_VICTIM: "wait", n.POD_ROLE_AGGRESSOR: "cpu", n.POD_ROLE_IO_AGGRESSOR: "D-state",
})


def pods_reason(node: NodeInputs) -> str:
    """Who suffers and who causes it on a node, for a scored deny's reason:
    `; victim shop/checkout (wait 0.412 s/s), aggressor batch/nightly (cpu 0.981 s/s), io aggressor
    backup/restic (D-state 0.733 s/s)`, each part only when the source named that pod, "" when it
    named none.

    Two aggressors, each named by its own measure, rather than one by a blend: CPU time says who
    takes the CPU the victims wait for; D-state time says whose tasks sit in uninterruptible
    sleep, mostly on IO, the likely source of an IO-pressured node's load. The same pod may be
    both. Neither is proof of guilt: each is the pod with the most of that, which is what the
    reason says."""
    parts = [f"{n.role_shown(role)} {pod.shown} ({_RATE_SHOWN[role]} {pod.rate:.3g} s/s)"
             for role, pod in node.top_pods]
    return "; " + ", ".join(parts) if parts else ""


class _Batch(NamedTuple):
    """Consecutive ticks planned and scored together, as columns over all their nodes (each
    tick's nodes in name order, `ticks[k]` = its Inputs and its slice of the columns).

    `scores` is each node's score, MISSING_SCORE where not `scored`; `levels` and `bands`
    follow from it. `plans[k]` holds the scalar _Plan of every node of tick k with a missing
    input (the few), by index within the tick, for its reason and `missing`."""

    ticks: list[tuple[Inputs, slice]]
    nodes: list[NodeInputs]
    scored: np.ndarray
    scores: np.ndarray
    levels: list[str]
    bands: list[str | None]
    plans: list[dict[int, _Plan]]


_RAW = attrgetter("friction", "direction", "energy", "cpu_pct", "psi_pct", "rq_p99_ms")


def _batch(rb: RuleBase, params: DecisionParams, series: Sequence[Inputs]) -> _Batch:
    """`_plan` for every node of every tick (the common node, every input present, in numpy),
    then one inference call for all the scorable ones."""
    nodes: list[NodeInputs] = []
    ticks = []
    for inputs in series:
        start = len(nodes)
        nodes.extend(inputs.nodes[name] for name in sorted(inputs.nodes))
        ticks.append((inputs, slice(start, len(nodes))))
    raw = np.array([_RAW(node) for node in nodes], dtype=np.float64).reshape(len(nodes), 6)
    friction, direction, energy, cpu, psi, rq = raw.T
    # NodeInputs.friction_signed, for every node at once (inf × 0 is NaN, a missing input, quietly).
    with np.errstate(invalid="ignore"):
        signed = np.where(np.isnan(direction), friction, friction * direction)
    optional = rb.inputs
    values = np.stack([signed, energy, cpu, psi, rq] if optional else [signed, energy, cpu, psi], axis=1)
    scored = np.isfinite(values).all(axis=1)
    odd = {i for i, node in enumerate(nodes) if node.missing or node.calibrating}
    odd.update(np.flatnonzero(~scored).tolist())
    plans: list[dict[int, _Plan]] = [{} for _ in ticks]
    starts = [sl.start for _, sl in ticks]
    for i in sorted(odd):
        plan = _plan(nodes[i], params, optional)
        k = bisect_right(starts, i) - 1
        plans[k][i - starts[k]] = plan
        scored[i] = plan.values is not None
        values[i] = math.nan if plan.values is None else plan.values
    scores = np.full(len(nodes), MISSING_SCORE)
    if scored.any():
        scores[scored] = inference.score(rb, *values[scored].T)
    return _Batch(ticks, nodes, scored, scores, inference.levels(scores), decision.medium_bands(scores, params), plans)


def _decide(params: DecisionParams, states: Mapping[str, NodeState], batch: _Batch,
            k: int) -> tuple[States, Results]:
    """Advance every node of tick k of `batch` with its score (or the missing rule) and report it."""
    inputs, sl = batch.ticks[k]
    nodes, plans = batch.nodes[sl], batch.plans[k]
    scores = batch.scores[sl]
    after = decision.advance(States.of(states, [node.node for node in nodes]), scores, batch.scored[sl], params)
    missing: list[tuple[str, ...]] = [()] * len(nodes)
    for i, plan in plans.items():
        missing[i] = plan.missing
    now = inputs.time
    reports: dict[str, NodeReport] = {}
    # One pass over plain lists: this loop runs once per node per tick and is most of a big
    # cluster's tick. Reports are positional, in NodeReport's field order (node, time, decision,
    # score, level, medium_band, reason, inputs, missing, bad_count, good_count).
    for i, (node, score, level, band, allowed, bad, good, gone) in enumerate(zip(
            nodes, scores.tolist(), batch.levels[sl], batch.bands[sl], after.allow.tolist(), after.bad.tolist(),
            after.good.tolist(), missing, strict=True)):
        if allowed:
            reports[node.node] = NodeReport(node.node, now, DECISION_ALLOW, score, level, band, None, node, gone,
                                            bad, good)
        else:
            node_plan = plans.get(i)
            reason = (_missing_reason(node_plan) if node_plan is not None and node_plan.values is None
                      else _deny_reason(score, band, bad, good, params) + pods_reason(node))
            reports[node.node] = NodeReport(node.node, now, DECISION_DENY, score, level, band, reason, node, gone,
                                            bad, good)
    return after, Results(time=now, source=inputs.source, reports=MappingProxyType(reports))


def evaluate(rb: RuleBase, params: DecisionParams, states: Mapping[str, NodeState],
             inputs: Inputs) -> tuple[States, Results]:
    """One tick for every node in `inputs.nodes`; returns the new states and the Results.

    Per node (a node without a previous state starts from NodeState(); the returned States
    read as a Mapping node -> NodeState):
    - friction or energy missing (or calibrating) and not allow_on_missing: score 100, level
      high, decision.missing (deny), reason `missing metrics: friction, energy` (names.INPUTS
      order) or `calibrating` (+ ` (warm-up N s left)` when known);
    - otherwise missing inputs count as 0 (CPU and PSI always; friction and energy with
      allow_on_missing), all such nodes are scored in one inference.score call, and
      decision.step decides. A denied node's reason is `score 73.3 ≥ 70`, `medium-high 2/2`,
      `medium-mid: holding deny` or `recovering: good 1/2`, followed by the node's top victim,
      aggressor and IO aggressor pods when the source named them (`pods_reason`); an allowed node has none.
    Reports carry the raw inputs and every missing input (names.INPUTS order). Nodes absent
    from `inputs.nodes` are dropped from both results. `states` is not modified.
    """
    return _decide(params, states, _batch(rb, params, [inputs]), 0)


def scored_denies(rb: RuleBase, params: DecisionParams, results: Results) -> list[str]:
    """The nodes `results` denies on their score, not for missing inputs: those whose reason
    names their top pods (`pods_reason`)."""
    optional = tuple(rb.inputs)
    return [node for node, report in results.reports.items()
            if report.decision == DECISION_DENY and _plan(report.inputs, params, optional).values is not None]


def with_pods(results: Results, denied: Iterable[str], pods: Mapping[str, Mapping[str, PodRef]]) -> Results:
    """`results` with the top pods `pods` (role -> node -> pod, names.POD_ROLES) named in the
    reports of `denied` (its `scored_denies`), as `evaluate` names those a source gave with the
    inputs: for a source that names pods only for the nodes a tick denied
    (scorer.sources.NamesPods). Nothing else changes: the scores, decisions and states are the
    tick's own."""
    victim, aggressor, io = (pods.get(role, {}) for role in n.POD_ROLES)
    reports = dict(results.reports)
    for node in denied:
        if node in victim or node in aggressor or node in io:
            report = reports[node]
            named = dataclasses.replace(report.inputs, victim=victim.get(node), aggressor=aggressor.get(node),
                                        io_aggressor=io.get(node))
            reports[node] = report._replace(inputs=named, reason=(report.reason or "") + pods_reason(named))
    return dataclasses.replace(results, reports=MappingProxyType(reports))


def evaluate_series(rb: RuleBase, params: DecisionParams, states: Mapping[str, NodeState],
                    series: Iterable[Inputs]) -> Iterator[_Evaluated]:
    """`evaluate` over consecutive ticks, each tick's states feeding the next; yields (states,
    Results) per tick, identical to calling `evaluate` in a loop. Planning and inference run
    once per batch of ticks (up to 65,536 node-ticks); only the state machines advance tick by
    tick. That is what makes a replay or a restart rebuild cheap per input row.
    """
    pending: list[Inputs] = []
    rows = 0
    for inputs in series:
        pending.append(inputs)
        rows += len(inputs.nodes)
        if rows >= _BATCH_ROWS:
            states = yield from _run_batch(rb, params, states, pending)
            pending, rows = [], 0
    if pending:
        yield from _run_batch(rb, params, states, pending)


def _run_batch(rb: RuleBase, params: DecisionParams, states: Mapping[str, NodeState],
               series: list[Inputs]) -> Generator[_Evaluated, None, Mapping[str, NodeState]]:
    """Plan and score `series` in one batch, then decide tick by tick; returns the last states."""
    batch = _batch(rb, params, series)
    for k in range(len(series)):
        states, results = _decide(params, states, batch, k)
        yield states, results
    return states


def explain_node(rb: RuleBase, params: DecisionParams, node: NodeInputs) -> dict[str, Any] | None:
    """inference.explain for one node with the inputs `evaluate` scored it with (missing ones
    as 0, rq_p99_ms when rb uses it), or None when the node was not scored (denied for missing
    friction/energy)."""
    plan = _plan(node, params, rb.inputs)
    return None if plan.values is None else inference.explain(rb, *plan.values)

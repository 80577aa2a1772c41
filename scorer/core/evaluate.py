"""One evaluation of all nodes: inputs + previous states -> new states + Results (SPEC §3.3).

The live evaluator tick, the replay tool and the restart state rebuild all call this, so a
restarted replica, a second replica and an offline replay reach the same decisions from the
same inputs. Per node it applies the missing-input rules, scores every scorable node in one
vectorised inference call, then advances each node's state machine and writes its report.
`evaluate_series` does the same for a sequence of ticks with the inference batched across
ticks (a score depends only on its inputs; only decisions need the ticks in order).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from exporter.names import DECISION_ALLOW, INPUTS
from scorer.core import decision, inference
from scorer.core.decision import DecisionParams, NodeState
from scorer.core.inputs import REASON_NO_BASELINE
from scorer.core.model import Inputs, NodeInputs, NodeReport, Results
from scorer.core.rules import RuleBase

#: Inputs without which a node is denied (unless allow_on_missing): SPEC §3.3.
CRITICAL = ("friction", "energy")
#: Score and level reported for a node denied for missing inputs.
MISSING_SCORE = 100.0
MISSING_LEVEL = "high"

_INITIAL = NodeState()

# Node-ticks scored per inference call in evaluate_series: one call for a recording or a
# rebuild window of a small cluster, bounded batches (and memory) for a big one.
_BATCH_ROWS = 65536


_Tick = tuple[dict[str, NodeState], Results]


class _Plan(NamedTuple):
    """What one node's inputs allow: `blocked` lists the missing critical inputs that deny it
    outright; otherwise `values` are the inference inputs (friction_signed, energy, cpu, psi)
    with missing ones counted as 0."""

    node: NodeInputs
    missing: tuple[str, ...]
    blocked: tuple[str, ...]
    values: tuple[float, float, float, float] | None


def _plan(node: NodeInputs, params: DecisionParams) -> _Plan:
    """Missing inputs of a node, in names.INPUTS order, and what to do about them.

    An input is missing when the source says so, when its value is not finite, and, for
    friction and energy, while the node's baseline is calibrating (SPEC §3.3).
    """
    raw = (node.friction_signed, node.energy, node.cpu_pct, node.psi_pct)
    # The common case, tested first because a big cluster runs this for every node every tick.
    if not (node.missing or node.calibrating) and all(map(math.isfinite, raw)):
        return _Plan(node, (), (), raw)
    missing = tuple(
        name for name, value in zip(INPUTS, raw, strict=True)
        if not math.isfinite(value) or name in node.missing or (node.calibrating and name in CRITICAL)
    )
    blocked = () if params.allow_on_missing else tuple(name for name in missing if name in CRITICAL)
    if blocked:
        return _Plan(node, missing, blocked, None)
    values = tuple(0.0 if name in missing else value for name, value in zip(INPUTS, raw, strict=True))
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


def _deny_reason(score: float, band: str | None, state: NodeState, params: DecisionParams) -> str:
    """Why a scored node is denied: too high now, bad for long enough, or not yet good for long enough."""
    if score >= inference.LEVEL_HIGH:
        return f"score {score:.1f} ≥ {inference.LEVEL_HIGH:g}"
    if band == decision.MEDIUM_HIGH:
        # Capped at B: past it the count adds nothing to "why" (bad_count still has it).
        return f"medium-high {min(state.bad, params.medium_bad_threshold)}/{params.medium_bad_threshold}"
    if band == decision.MEDIUM_MID:
        return "medium-mid: holding deny"
    return f"recovering: good {state.good}/{params.good_threshold}"


def _plans(inputs: Inputs, params: DecisionParams) -> list[_Plan]:
    return [_plan(inputs.nodes[name], params) for name in sorted(inputs.nodes)]


def _score_plans(rb: RuleBase, plans: Iterable[_Plan]) -> np.ndarray:
    """Scores of the plans that have values, in order, in one inference call."""
    values = [p.values for p in plans if p.values is not None]
    if not values:
        return np.empty(0)
    columns = np.array(values, dtype=np.float64).T
    return inference.score(rb, *columns)


def _decide(params: DecisionParams, states: Mapping[str, NodeState], inputs: Inputs, plans: list[_Plan],
            scores: np.ndarray) -> tuple[dict[str, NodeState], Results]:
    """Advance each planned node's state with its score (or the missing rule) and report it."""
    new_states: dict[str, NodeState] = {}
    reports: dict[str, NodeReport] = {}
    scored = iter(scores.tolist())
    now = inputs.time
    # Local names: this loop runs once per node per tick and is most of a big cluster's tick.
    previous_of, step, level_of, band_of = states.get, decision.step, inference.level, decision.medium_band
    for plan in plans:
        node = plan.node
        name = node.node
        previous = previous_of(name, _INITIAL)
        if plan.values is None:
            state, verdict = decision.missing(previous)
            score, level, band, reason = MISSING_SCORE, MISSING_LEVEL, None, _missing_reason(plan)
        else:
            score = next(scored)
            state, verdict = step(previous, score, params)
            level, band = level_of(score), band_of(score, params)
            reason = None if verdict == DECISION_ALLOW else _deny_reason(score, band, state, params)
        new_states[name] = state
        # Positional, in NodeReport's field order (node, time, decision, score, level,
        # medium_band, reason, inputs, missing, bad_count, good_count): a quarter faster.
        reports[name] = NodeReport(
            name, now, verdict, score, level, band, reason, node, plan.missing, state.bad, state.good
        )
    return new_states, Results(time=now, source=inputs.source, reports=MappingProxyType(reports))


def evaluate(rb: RuleBase, params: DecisionParams, states: Mapping[str, NodeState],
             inputs: Inputs) -> tuple[dict[str, NodeState], Results]:
    """One tick for every node in `inputs.nodes`; returns the new states and the Results.

    Per node (a node without a previous state starts from NodeState()):
    - friction or energy missing (or calibrating) and not allow_on_missing: score 100, level
      high, decision.missing (deny), reason `missing metrics: friction, energy` (names.INPUTS
      order) or `calibrating` (+ ` (warm-up N s left)` when known);
    - otherwise missing inputs count as 0 (CPU and PSI always; friction and energy with
      allow_on_missing), all such nodes are scored in one inference.score call, and
      decision.step decides. A denied node's reason is `score 73.3 ≥ 70`, `medium-high 2/2`,
      `medium-mid: holding deny` or `recovering: good 1/2`; an allowed node has none.
    Reports carry the raw inputs and every missing input (names.INPUTS order). Nodes absent
    from `inputs.nodes` are dropped from both results. `states` is not modified.
    """
    plans = _plans(inputs, params)
    return _decide(params, states, inputs, plans, _score_plans(rb, plans))


def evaluate_series(rb: RuleBase, params: DecisionParams, states: Mapping[str, NodeState],
                    series: Iterable[Inputs]) -> Iterator[_Tick]:
    """`evaluate` over consecutive ticks, each tick's states feeding the next; yields (states,
    Results) per tick, identical to calling `evaluate` in a loop. The inference runs once per
    batch of ticks (up to 65,536 node-ticks), which is what makes a replay or a restart
    rebuild cost about one tick's Python work per input row instead of one numpy call each.
    """
    batch: list[tuple[Inputs, list[_Plan]]] = []
    rows = 0
    for inputs in series:
        plans = _plans(inputs, params)
        batch.append((inputs, plans))
        rows += len(plans)
        if rows >= _BATCH_ROWS:
            states = yield from _run_batch(rb, params, states, batch)
            batch, rows = [], 0
    yield from _run_batch(rb, params, states, batch)


def _run_batch(rb: RuleBase, params: DecisionParams, states: Mapping[str, NodeState],
               batch: list[tuple[Inputs, list[_Plan]]]) -> Generator[_Tick, None, Mapping[str, NodeState]]:
    """Score a batch of ticks in one call, then decide tick by tick; returns the last states."""
    scores = _score_plans(rb, (plan for _, plans in batch for plan in plans))
    offset = 0
    for inputs, plans in batch:
        count = sum(1 for plan in plans if plan.values is not None)
        states, results = _decide(params, states, inputs, plans, scores[offset:offset + count])
        offset += count
        yield states, results
    return states


def explain_node(rb: RuleBase, params: DecisionParams, node: NodeInputs) -> dict[str, Any] | None:
    """inference.explain for one node with the inputs `evaluate` scored it with (missing ones
    as 0), or None when the node was not scored (denied for missing friction/energy)."""
    plan = _plan(node, params)
    return None if plan.values is None else inference.explain(rb, *plan.values)

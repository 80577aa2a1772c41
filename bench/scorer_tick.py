"""What one scorer evaluation tick costs for a big cluster: `evaluate()` over 5,000 nodes.

The inputs are already fetched (the fetch is the source's cost, not the controller's): 5,000
synthetic nodes from a fixed seed, shaped like a fleet — mostly quiet, some loaded, 2 % with a
missing input and 1 % calibrating. Figures:
1. evaluate(): fuzzy inference for all nodes + state machine + reports, median of N runs (the
   state carried from run to run, as in the live tick). Goal ≤ 20 ms.
2. inference.score() alone, median of N runs (the vectorised part).
3. the baseline, measured in the same run: a plain scalar per-node controller (pure Python,
   written below from the same RuleBase: one node at a time, 72 rules, 101 centroid points,
   the way a first prototype scores) plus decision.step per node, timed on a subset and scaled
   to 5,000 nodes (for figure 2: the scalar scoring alone). Goal: evaluate() ≥ 100× faster.
   What bounds that ratio is not the inference but the per-node Python work left: gathering
   each node's inputs and building its report (~1 µs a node).

Exits 0 when a goal is missed (the verdict says MISS), non-zero only when the harness fails.
Run: .venv/bin/python -m bench.scorer_tick [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np

from bench._util import print_table
from bench.exporter_cost import ratio, verdict
from scorer.core import inference
from scorer.core.decision import DecisionParams, NodeState, step
from scorer.core.evaluate import evaluate
from scorer.core.model import Inputs, NodeInputs
from scorer.core.rules import ANTECEDENTS, RuleBase
from scorer.rulefile import load_rules

NODES = 5000
GOAL_TICK_MS = 20.0
GOAL_SPEEDUP = 100.0


def fleet(n: int, seed: int = 5000) -> Inputs:
    """n nodes' inputs: quiet nodes near the baseline, a loaded tail, a few missing/calibrating."""
    rng = np.random.default_rng(seed)
    friction = np.abs(rng.normal(0, 15, n)) + np.where(rng.random(n) < 0.15, rng.uniform(20, 120, n), 0)
    direction = np.where(rng.random(n) < 0.9, 1.0, -1.0)
    energy = rng.gamma(2.0, 6.0, n)
    cpu = rng.uniform(2, 95, n)
    psi = rng.gamma(1.5, 6.0, n)
    roll = rng.random(n)
    nodes = {}
    for i in range(n):
        name = f"node-{i:05d}"
        if roll[i] < 0.01:
            nodes[name] = NodeInputs(node=name, cpu_pct=cpu[i], psi_pct=psi[i], missing=("friction", "energy"),
                                     calibrating=True, warmup_remaining_s=300.0)
        elif roll[i] < 0.03:
            nodes[name] = NodeInputs(node=name, friction=friction[i], direction=direction[i], cpu_pct=cpu[i],
                                     psi_pct=psi[i], missing=("energy",))
        else:
            nodes[name] = NodeInputs(node=name, friction=friction[i], direction=direction[i], energy=energy[i],
                                     cpu_pct=cpu[i], psi_pct=psi[i])
    return Inputs(time=datetime(2026, 11, 28, 16, 0, 0), source="bench", nodes=nodes)


# --- the scalar baseline -------------------------------------------------------------------------

def _mu(kind: str, p: Sequence[float], x: float) -> float:
    if kind == "gauss":
        return math.exp(-((x - p[0]) ** 2) / (2 * p[1] * p[1]))
    if kind == "tri":
        a, b, c = p
        if x <= a or x >= c:
            return 0.0
        return (x - a) / (b - a) if x <= b else (c - x) / (c - b)
    a, b, c, d = p
    if x < a or x > d:
        return 0.0
    if b <= x <= c:
        return 1.0
    return (x - a) / (b - a) if x < b else (d - x) / (d - c)


def scalar_score(rb: RuleBase, values: dict[str, float]) -> float:
    """One node, pure Python: clamp, 72 rule strengths, per-output max, centroid over 0..100."""
    mus = {}
    for v in ANTECEDENTS:
        lo, hi = rb.ranges[v]
        x = min(max(values[v], lo), hi)
        mus[v] = [_mu(s.kind, s.params, x) for s in rb.sets(v).values()]
    outputs = list(rb.output.values())
    strength = [0.0] * len(outputs)
    for rule, out in zip(rb.rule_sets.tolist(), rb.rule_output.tolist(), strict=True):
        w = min(mus[v][i] for v, i in zip(ANTECEDENTS, rule, strict=True))
        strength[out] = max(strength[out], w)
    num = den = 0.0
    for x in range(int(rb.ranges["output"][0]), int(rb.ranges["output"][1]) + 1):
        mu = max(min(s, _mu(o.kind, o.params, x)) for s, o in zip(strength, outputs, strict=True))
        num += x * mu
        den += mu
    return num / den if den else 0.0


def scalar_tick(rb: RuleBase, params: DecisionParams, states: dict[str, NodeState], inputs: Inputs) -> None:
    for name in sorted(inputs.nodes):
        node = inputs.nodes[name]
        values = {"friction": node.friction_signed, "energy": node.energy, "cpu": node.cpu_pct, "psi": node.psi_pct}
        if math.isnan(values["friction"]) or math.isnan(values["energy"]):
            states[name] = NodeState(states.get(name, NodeState()).bad, 0, "deny")
            continue
        values = {k: 0.0 if math.isnan(v) else v for k, v in values.items()}
        states[name], _ = step(states.get(name, NodeState()), scalar_score(rb, values), params)


# --- harness -------------------------------------------------------------------------------------

def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: first-call allocations and caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and a smaller scalar subset")
    args = parser.parse_args(argv)
    runs, subset = (15, 200) if args.quick else (51, 500)

    rb, params = load_rules(), DecisionParams()
    inputs = fleet(NODES)
    states: dict[str, NodeState] = {}

    def tick() -> None:
        nonlocal states
        states, _ = evaluate(rb, params, states, inputs)

    tick_ms = median_ms(tick, runs)
    scored = [n for n in inputs.nodes.values() if not n.missing]
    columns = [np.array([n.friction_signed for n in scored]), np.array([n.energy for n in scored]),
               np.array([n.cpu_pct for n in scored]), np.array([n.psi_pct for n in scored])]
    score_ms = median_ms(lambda: inference.score(rb, *columns), runs)

    names = sorted(inputs.nodes)[:subset]
    part = Inputs(time=inputs.time, source=inputs.source, nodes={k: inputs.nodes[k] for k in names})
    scalar_states: dict[str, NodeState] = {}
    scalar_ms = median_ms(lambda: scalar_tick(rb, params, scalar_states, part), 3) * NODES / subset
    values = [dict(zip(("friction", "energy", "cpu", "psi"), row, strict=True)) for row in zip(*columns, strict=True)]
    scalar_score_ms = median_ms(lambda: [scalar_score(rb, v) for v in values[:subset]], 3) * len(scored) / subset

    print(f"scorer tick: {NODES} nodes, {len(scored)} scored, median of {runs} runs; "
          f"scalar baseline on {subset} nodes x{NODES // subset}")
    print_table(
        ["figure", "ksense ms", "scalar ms", "speed-up", "goal", "result"],
        [
            ["evaluate() 5,000 nodes", f"{tick_ms:.2f}", f"{scalar_ms:.0f}", ratio(scalar_ms, tick_ms),
             f"≤ {GOAL_TICK_MS:g} ms, ≥ {GOAL_SPEEDUP:g}×",
             "PASS" if verdict(tick_ms, GOAL_TICK_MS) == "PASS" and scalar_ms / tick_ms >= GOAL_SPEEDUP else "MISS"],
            ["inference.score() only", f"{score_ms:.2f}", f"{scalar_score_ms:.0f}", ratio(scalar_score_ms, score_ms),
             "-", "-"],
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

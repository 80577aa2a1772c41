"""Friction & Energy: the exporter's derived signals and its baseline (docs/design.md#baseline).

Friction (distance to the node's own baseline), its direction and signed form (the scorer's
input), dF/dt, Energy and its adaptive-window internals, and the baseline's state: frozen or
calibrating, accepted samples, warm-up left.
"""

from __future__ import annotations

from common import names as n
from dashboards import queries as q
from dashboards.panels import (
    COUNT,
    NONE,
    SECONDS,
    Query,
    dashboard,
    stat,
    state_timeline,
    steps,
    timeseries,
    value_map,
)

UID = "ksense-friction-energy"
TITLE = "ksense / Friction & Energy"
FILE = "ksense-friction-energy.json"

_BASELINE_STATE = value_map(("0", n.MODE_CALIBRATING, "orange"), ("1", n.MODE_FROZEN, "green"))
_DIRECTION = value_map(("-1", "below", "blue"), ("0", "equal", "text"), ("1", "above", "red"))


def build():
    friction = [
        (timeseries("Friction", "Regularised Mahalanobis distance of each interval's features (run-queue p99 "
                    "and mean, D-state and softirq mean) to the node's frozen baseline. 0 = exactly like the "
                    "baseline; empty while calibrating.", [Query(q.per_node(q.FRICTION), "{{node}}")], NONE,
                    value_min=0), 12, 8),
        (timeseries("Signed friction (scorer input)", "Friction × Direction: positive when the node is "
                    "above its calibrated mean friction, negative below (unsigned until Direction exists).",
                    [Query(q.per_node(q.FRICTION_SIGNED), "{{node}}")], NONE), 12, 8),
        (state_timeline("Direction", "+1 above the calibrated mean friction (first 60 frictions after the "
                        "freeze), −1 below, 0 equal; empty before calibration completes.",
                        [Query(q.per_node(q.DIRECTION), "{{node}}")], _DIRECTION), 12, 6),
        (timeseries("dF/dt", "Rate of change of Friction per second of recorded time.",
                    [Query(q.node_max(n.FRICTION_RATE), "{{node}}")], NONE), 12, 6),
    ]
    energy = [
        (timeseries("Energy (scorer input)", "Adaptive-window volatility of Friction: mean absolute change over "
                    "the last W frictions.", [Query(q.per_node(q.ENERGY), "{{node}}")], NONE, value_min=0), 12, 8),
        (timeseries("Energy window W", "Samples in the Energy window (5–40): short when Friction is volatile.",
                    [Query(q.node_max(n.ENERGY_WINDOW), "{{node}}")], COUNT, value_min=0), 12, 8),
        (timeseries("Energy volatility", "EWMA (α = 0.1) of |ΔFriction| that sizes the window.",
                    [Query(q.node_max(n.ENERGY_VOLATILITY), "{{node}}")], NONE, value_min=0), 12, 6),
        (timeseries("Energy k factor", "Calibrated once after the freeze: median |ΔFriction| × 22.5.",
                    [Query(q.node_max(n.ENERGY_K_FACTOR), "{{node}}")], NONE, value_min=0), 12, 6),
    ]
    baseline = [
        (stat("Baseline state", "FROZEN once warm-up is over and ≥ 20 baseline samples were accepted; "
              "CALIBRATING before (Friction and Energy are empty then).",
              [Query(q.node_max(n.BASELINE_FROZEN), "{{node}}")], NONE,
              thresholds=steps(("orange", None), ("green", 1)), mappings=_BASELINE_STATE, text_mode="value_and_name"),
         8, 6),
        (timeseries("Calibration: accepted baseline samples", "Intervals accepted into the baseline (needs ≥ 50 "
                    "scheduling events each; the freeze needs 20, the window keeps 300).",
                    [Query(q.node_max(n.BASELINE_SAMPLES), "{{node}}")], COUNT, value_min=0,
                    thresholds=steps(("orange", None), ("green", 20)), thresholds_style="line"), 8, 6),
        (timeseries("Calibration: warm-up left", "Warm-up time left before the baseline may freeze (0 once over).",
                    [Query(q.node_max(n.BASELINE_WARMUP_REMAINING), "{{node}}")], SECONDS, value_min=0), 8, 6),
    ]
    return dashboard(
        UID,
        TITLE,
        "Friction, direction, energy and the baseline they are measured against, per node.",
        [("Friction", friction), ("Energy", energy), ("Baseline", baseline)],
    )

"""Admission: the scorer's per-node scores and decisions, the webhook's reviews and the
scheduler's binds (docs/design.md: decisions, admission webhook, the fuzzy scheduler).

Scores are drawn with the decision bands of docs/design.md#decisions (low < 45 ≤ medium-low < 55 ≤ medium-mid
< 60 ≤ medium-high < 70 ≤ high); both are read from the recorded cross-replica aggregates
(max score, min decision: deny wins). Scheduler panels read the scheduler's own metrics.
"""

from __future__ import annotations

from common import names as n
from dashboards import config
from dashboards import queries as q
from dashboards.panels import (
    COUNT,
    NONE,
    PER_SECOND,
    REQ_PER_SECOND,
    SECONDS,
    Query,
    dashboard,
    stat,
    state_timeline,
    steps,
    timeseries,
    value_map,
)

UID = "ksense-admission"
TITLE = "ksense / Admission"
FILE = "ksense-admission.json"

BANDS = steps(
    ("green", None),
    ("yellow", config.BAND_MEDIUM),
    ("orange", config.BAND_MEDIUM_LOW_UPPER),
    ("dark-orange", config.BAND_MEDIUM_MID_UPPER),
    ("red", config.BAND_HIGH),
)
_DECISION = value_map(("0", n.DECISION_DENY, "red"), ("1", n.DECISION_ALLOW, "green"))


def build():
    scores = [
        (timeseries("Score per node", f"Fuzzy score 0–100 (max over scorer replicas), with the decision bands: "
                    f"< {config.BAND_MEDIUM:g} low (counts as good), {config.BAND_MEDIUM:g}–"
                    f"{config.BAND_MEDIUM_LOW_UPPER:g} medium-low (good), {config.BAND_MEDIUM_LOW_UPPER:g}–"
                    f"{config.BAND_MEDIUM_MID_UPPER:g} medium-mid (holds the last decision), "
                    f"{config.BAND_MEDIUM_MID_UPPER:g}–{config.BAND_HIGH:g} medium-high (bad), ≥ "
                    f"{config.BAND_HIGH:g} high (denied at once). 100 = inputs missing.",
                    [Query(q.per_node(q.SCORE), "{{node}}")], NONE, value_min=0, value_max=100,
                    thresholds=BANDS, thresholds_style="line+area", fill=0), 16, 9),
        (stat("Allowed nodes", "Nodes whose decision is allow (min over replicas) / nodes scored.",
              [Query(q.NODES_ALLOWED.record, "allowed"), Query(q.NODES_SCORED.record, "scored")], COUNT,
              graph=True, text_mode="value_and_name"), 8, 9),
        (state_timeline("Decision per node", "allow / deny after hysteresis, min over scorer replicas.",
                        [Query(q.per_node(q.ALLOWED), "{{node}}")], _DECISION), 16, 7),
        (timeseries("Decision flips", "Decision changes per node and direction in each interval.",
                    [Query(q.decision_flips(), "{{node}} → {{to}}")], COUNT, value_min=0), 8, 7),
        (timeseries("Missing inputs", "1 while an input of a node is missing or stale (a missing friction or "
                    "energy denies the node).", [Query(q.node_max(n.NODE_INPUT_MISSING, n.LABEL_INPUT),
                                                       "{{node}} {{input}}")], NONE, value_min=0, value_max=1,
                    interpolation="stepAfter"), 24, 6),
    ]
    reviews = [
        (timeseries("Admission reviews", "AdmissionReviews answered per second by outcome (recorded, dry_run, "
                    "duplicate, ignored, bad_request), all scorer replicas.",
                    [Query(q.rate_by(n.ADMISSION_REVIEWS.name, n.LABEL_OUTCOME), "{{outcome}}")], REQ_PER_SECOND,
                    stacked=True), 12, 7),
        (timeseries("Scorer evaluation p99", "One evaluation tick for all nodes (fetch + score + decide), p99 "
                    "per replica.", [Query(q.quantile_of(n.SCORER_EVALUATION_DURATION, 0.99, "instance"),
                                           "{{instance}}")], SECONDS), 12, 7),
    ]
    scheduler = [
        (timeseries("Scheduler binds", "Bind attempts per second by result: bound, conflict (pod already bound "
                    "or replaced), error.", [Query(q.rate_by(n.SCHEDULER_BINDS.name, n.LABEL_RESULT), "{{result}}")],
                    PER_SECOND, stacked=True), 8, 7),
        (timeseries("Unschedulable reasons", "Pod attempts that found no node, per second, by the first failing "
                    "filter (fuzzy_deny, resources, taint, selector, affinity, not_ready, no_score).",
                    [Query(q.rate_by(n.SCHEDULER_UNSCHEDULABLE.name, n.LABEL_REASON), "{{reason}}")], PER_SECOND,
                    stacked=True), 8, 7),
        (timeseries("Pending pods", "Pods waiting for the fuzzy scheduler.",
                    [Query(q.pending_pods(), "pending")], COUNT, value_min=0), 8, 7),
        (timeseries("Scheduling attempt p99", "One pod's filter + choose time (no API calls), p99.",
                    [Query(q.quantile_of(n.SCHEDULER_ATTEMPT_DURATION, 0.99), "p99")], SECONDS), 24, 6),
    ]
    return dashboard(
        UID,
        TITLE,
        "Fuzzy scores and decisions per node, admission reviews, and the fuzzy scheduler's binds.",
        [("Scores and decisions", scores), ("Admission webhook", reviews), ("Fuzzy scheduler", scheduler)],
    )

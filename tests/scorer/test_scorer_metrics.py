"""ScorerCollector: every docs/metrics.md#scorer-metrics family from a real Evaluator, promtool-clean."""

from __future__ import annotations

import math
import subprocess
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common import names as n
from common.core.model import ExportHistogram
from common.csvfile import CsvStats
from common.metrics import make_registry
from scorer.core.decision import DecisionParams
from scorer.core.model import Inputs, NodeInputs, PodRef
from scorer.evaluator import Evaluator
from scorer.metrics import ScorerCollector
from scorer.rulefile import load_rules

T0 = datetime(2027, 1, 15, 12, 0, 0, tzinfo=UTC)
GOOD = {"friction": 0.237792, "direction": 1.0, "energy": 0.0, "cpu_pct": 2.413911, "psi_pct": 0.24796}


class Script:
    name = "prometheus"

    def __init__(self, *steps: Inputs):
        self.steps = list(steps)

    def fetch(self, now):
        return self.steps.pop(0)


def nodes(*items: NodeInputs) -> MappingProxyType:
    return MappingProxyType({x.node: x for x in items})


class Admission:
    def stats(self):
        hist = ExportHistogram(buckets=((0.001, 3), (0.01, 4), (math.inf, 4)), sum_seconds=0.0042)
        return {"recorded": 3, "dry_run": 1}, hist

    def csv_stats(self):
        return CsvStats(2, {"enospc": 0, "queue_full": 1})


@pytest.fixture
def evaluator() -> Evaluator:
    missing_psi = NodeInputs(node="b", **{**GOOD, "psi_pct": math.nan}, missing=("psi",),
                             why=MappingProxyType({"psi": "absent"}))
    down = NodeInputs(node="a", missing=n.INPUTS, why=MappingProxyType(dict.fromkeys(n.INPUTS, "timeout")))
    steps = [
        Inputs(time=T0, source="prometheus", nodes=nodes(NodeInputs(node="a", **GOOD), missing_psi)),
        Inputs(time=T0, source="prometheus", nodes=nodes(down, missing_psi), errors=MappingProxyType({"timeout": 1}),
               ok=True),
    ]
    ev = Evaluator(Script(*steps), load_rules(), DecisionParams(), wall=lambda: 1_800_000_000.0)
    ev.tick(T0)
    ev.tick(T0)
    return ev


def scrape(collector: ScorerCollector) -> str:
    return generate_latest(make_registry(collector, process_metrics=False)).decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_node_families(evaluator):
    got = samples(scrape(ScorerCollector(evaluator)))
    assert got[(n.NODE_SCORE.name, (("node", "a"),))] == 100.0
    assert got[(n.NODE_SCORE.name, (("node", "b"),))] == pytest.approx(17.886, abs=1e-3)
    assert got[(n.NODE_ADMISSION_ALLOWED.name, (("node", "a"),))] == 0
    assert got[(n.NODE_ADMISSION_ALLOWED.name, (("node", "b"),))] == 1
    for inp in n.INPUTS:
        assert got[(n.NODE_INPUT_MISSING.name, (("input", inp), ("node", "a")))] == 1
        assert got[(n.NODE_INPUT_MISSING.name, (("input", inp), ("node", "b")))] == (inp == "psi")
    assert got[(n.NODE_DECISION_CHANGES.name, (("node", "a"), ("to", "deny")))] == 1
    assert got[(n.NODE_DECISION_CHANGES.name, (("node", "a"), ("to", "allow")))] == 0
    assert got[(n.NODE_DECISION_CHANGES.name, (("node", "b"), ("to", "deny")))] == 0


def test_process_families(evaluator):
    got = samples(scrape(ScorerCollector(evaluator)))
    assert got[(n.SCORER_EVALUATION_DURATION.name + "_count", ())] == 2
    assert got[(n.SCORER_EVALUATION_DURATION.name + "_bucket", (("le", "+Inf"),))] == 2
    assert got[(n.SCORER_SOURCE_ERRORS.name, (("reason", "timeout"), ("source", "prometheus")))] == 1
    assert got[(n.SCORER_LAST_SUCCESS.name, ())] == 1_800_000_000.0
    assert not any(name.startswith("ksense_admission") for name, _ in got)


def test_admission_and_certificate_families(evaluator):
    got = samples(scrape(ScorerCollector(evaluator, admission=Admission(), cert_expiry=lambda: 1_900_000_000.0)))
    for outcome in n.ADMISSION_OUTCOMES:
        expected = {"recorded": 3, "dry_run": 1}.get(outcome, 0)
        assert got[(n.ADMISSION_REVIEWS.name, (("outcome", outcome),))] == expected
    assert got[(n.ADMISSION_REVIEW_DURATION.name + "_count", ())] == 4
    assert got[(n.WEBHOOK_CERT_EXPIRY.name, ())] == 1_900_000_000.0
    assert got[(n.CSV_ROWS_WRITTEN.name, (("file", "fuzzy_score.csv"),))] == 2
    assert got[(n.CSV_WRITE_ERRORS.name, (("file", "fuzzy_score.csv"), ("reason", "queue_full")))] == 1


def test_before_the_first_evaluation_only_process_families():
    ev = Evaluator(Script(), load_rules(), DecisionParams())
    got = samples(scrape(ScorerCollector(ev, cert_expiry=lambda: None)))
    assert {name for name, _ in got} == {
        n.SCORER_EVALUATION_DURATION.name + suffix for suffix in ("_bucket", "_count", "_sum")
    }


def test_nothing_registered_at_import_and_duplicates_refused(evaluator):
    registry = CollectorRegistry()
    registry.register(ScorerCollector(evaluator))
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(ScorerCollector(evaluator))


def test_promtool_check_metrics_is_clean(evaluator, promtool):
    text = scrape(ScorerCollector(evaluator, admission=Admission(), cert_expiry=lambda: 1_900_000_000.0))
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


def test_stale_results_withhold_every_node_series():
    """Results older than max_age_s (a tick that keeps raising) must not keep exporting old allows."""
    wall = {"t": T0.timestamp()}
    ev = Evaluator(Script(Inputs(time=T0, source="prometheus", nodes=nodes(NodeInputs(node="a", **GOOD)))),
                   load_rules(), DecisionParams(), wall=lambda: wall["t"], max_age_s=60.0)
    ev.tick(T0)
    assert (n.NODE_ADMISSION_ALLOWED.name, (("node", "a"),)) in samples(scrape(ScorerCollector(ev)))
    wall["t"] += 61.0
    got = {name for name, _ in samples(scrape(ScorerCollector(ev)))}
    assert not any(name.startswith("ksense_node_") for name in got)
    assert n.SCORER_LAST_SUCCESS.name in got


def test_top_pods_of_denied_nodes_only_and_gone_once_allowed(promtool):
    """ksense_node_top_pod: one series per known role of a denied node (bounded: ≤ len(POD_ROLES)
    per node), none for an allowed node with the same pods, none once the denied node is allowed."""
    victim, aggressor = PodRef("shop", "cart", "u-1", 0.4), PodRef("", "", "u-2", 0.9)
    hot = {"friction": 3.0, "direction": -1.0, "energy": 0.5, "cpu_pct": 100.0, "psi_pct": 90.0}
    pods = {"victim": victim, "aggressor": aggressor}
    steps = [Inputs(time=T0, source="prometheus", nodes=nodes(NodeInputs(node="hot", **hot, **pods),
                                                               NodeInputs(node="calm", **GOOD, **pods)))]
    # Then hot calms down for long enough to be allowed again (good_threshold ticks).
    steps += [Inputs(time=T0, source="prometheus", nodes=nodes(NodeInputs(node="hot", **GOOD, **pods)))] * 5
    ev = Evaluator(Script(*steps), load_rules(), DecisionParams(), wall=lambda: T0.timestamp())
    ev.tick(T0)
    text = scrape(ScorerCollector(ev))
    top = {labels: value for (name, labels), value in samples(text).items() if name == n.NODE_TOP_POD.name}
    assert top == {
        (("node", "hot"), ("pod_name", "cart"), ("pod_namespace", "shop"), ("pod_uid", "u-1"), ("role", "victim")): 0.4,
        (("node", "hot"), ("pod_name", ""), ("pod_namespace", ""), ("pod_uid", "u-2"), ("role", "aggressor")): 0.9,
    }
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr
    while ev.latest().reports["hot"].decision == n.DECISION_DENY:
        ev.tick(T0)
    assert not any(name == n.NODE_TOP_POD.name for name, _ in samples(scrape(ScorerCollector(ev))))

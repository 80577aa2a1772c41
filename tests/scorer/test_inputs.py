"""scorer/core/inputs.py: from signal vectors and exposition samples to NodeInputs, pure."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import pytest

from common import names as n
from scorer.core import inputs as core
from scorer.core.inputs import Sample

NOW = 1_800_000_000.0
WIN = 60.0


def frozen_node(ts: float = NOW - 1, **override: float) -> dict[str, Sample]:
    values = {
        core.FRICTION: 4.0, core.DIRECTION: -1.0, core.ENERGY: 0.5, core.CPU: 0.25, core.PSI: 0.031,
        core.FROZEN: 1.0, core.WARMUP: 0.0,
    }
    values.update(override)
    return {signal: Sample(v, ts) for signal, v in values.items()}


def vectors_of(**nodes: dict[str, Sample]) -> dict[str, dict[str, Sample]]:
    out: dict[str, dict[str, Sample]] = {s: {} for s in core.SIGNALS}
    for node, signals in nodes.items():
        for signal, sample in signals.items():
            out[signal][node] = sample
    return out


def test_complete_node_units_and_signed_friction():
    got = core.build(vectors_of(a=frozen_node()), {}, now=NOW, long_win_s=WIN)["a"]
    assert got.missing == ()
    assert got.friction == 4.0 and got.direction == -1.0
    assert got.friction_signed == -4.0
    assert got.cpu_pct == pytest.approx(25.0) and got.psi_pct == pytest.approx(3.1)
    assert not got.calibrating


def test_missing_direction_leaves_friction_unsigned_and_present():
    vectors = vectors_of(a=frozen_node())
    del vectors[core.DIRECTION]["a"]
    got = core.build(vectors, {}, now=NOW, long_win_s=WIN)["a"]
    assert got.missing == ()
    assert math.isnan(got.direction) and got.friction_signed == 4.0


@pytest.mark.parametrize(
    ("age", "fresh"),
    [("just scraped", True), ("exactly long_win_s", True), ("one second too old", False), ("from the future", True)],
)
def test_staleness_boundary(age, fresh):
    ts = {"just scraped": NOW, "exactly long_win_s": NOW - WIN, "one second too old": NOW - WIN - 1,
          "from the future": NOW + 5}[age]
    got = core.build(vectors_of(a=frozen_node(ts=ts)), {}, now=NOW, long_win_s=WIN)["a"]
    if fresh:
        assert got.missing == ()
    else:
        assert got.missing == n.INPUTS
        assert got.why["friction"] == "stale 61s"


def test_stale_input_among_fresh_ones():
    vectors = vectors_of(a=frozen_node())
    vectors[core.ENERGY]["a"] = Sample(0.5, NOW - 75)
    got = core.build(vectors, {}, now=NOW, long_win_s=WIN)["a"]
    assert got.missing == ("energy",)
    assert got.why == {"energy": "stale 75s"}
    assert math.isnan(got.energy) and got.friction == 4.0


def test_partial_answers_join_on_node():
    """Node b is absent from the friction and cpu vectors: only those inputs are missing for it."""
    vectors = vectors_of(a=frozen_node(), b=frozen_node())
    del vectors[core.FRICTION]["b"], vectors[core.CPU]["b"]
    got = core.build(vectors, {}, now=NOW, long_win_s=WIN)
    assert got["a"].missing == ()
    assert got["b"].missing == ("friction", "cpu")
    assert got["b"].why == {"friction": "absent", "cpu": "absent"}


def test_failed_query_marks_that_input_missing_for_every_node_with_its_reason():
    vectors = vectors_of(a=frozen_node(), b=frozen_node())
    del vectors[core.PSI]
    got = core.build(vectors, {core.PSI: "http 422"}, now=NOW, long_win_s=WIN)
    for node in ("a", "b"):
        assert got[node].missing == ("psi",)
        assert got[node].why == {"psi": "http 422"}


def test_known_nodes_stay_with_everything_missing_when_nothing_answered():
    failed = dict.fromkeys(core.SIGNALS, "prometheus down")
    got = core.build({}, failed, now=NOW, long_win_s=WIN, known=["a", "b"])
    assert sorted(got) == ["a", "b"]
    assert got["a"].missing == n.INPUTS
    assert set(got["a"].why.values()) == {"prometheus down"}


def test_calibrating_node_misses_friction_and_energy_with_warmup_left():
    node = frozen_node(**{core.FROZEN: 0.0, core.WARMUP: 123.4})
    del node[core.FRICTION], node[core.ENERGY], node[core.DIRECTION]
    got = core.build(vectors_of(a=node), {}, now=NOW, long_win_s=WIN)["a"]
    assert got.calibrating
    assert got.warmup_remaining_s == pytest.approx(123.4)
    assert got.missing == ("friction", "energy")
    assert got.why["friction"] == "calibrating (123s warm-up left)"
    assert got.cpu_pct == pytest.approx(25.0)


def test_calibrating_on_the_procfs_source_is_baseline_unavailable():
    node = frozen_node(**{core.FROZEN: 0.0, core.WARMUP: 123.4, core.PROCFS: 1.0})
    del node[core.FRICTION], node[core.ENERGY], node[core.DIRECTION]
    got = core.build(vectors_of(a=node), {}, now=NOW, long_win_s=WIN)["a"]
    assert got.calibrating and got.baseline_unavailable
    assert got.missing == ("friction", "energy")
    assert got.why == {"friction": core.REASON_NO_BASELINE, "energy": core.REASON_NO_BASELINE}
    assert core.REASON_NO_BASELINE == "baseline unavailable (procfs source has no p99)"


def test_unknown_baseline_state_is_not_calibrating():
    node = frozen_node()
    del node[core.FROZEN], node[core.WARMUP]
    got = core.build(vectors_of(a=node), {}, now=NOW, long_win_s=WIN)["a"]
    assert not got.calibrating and got.missing == ()


def test_split_timestamped_pairs_value_and_timestamp_series():
    result = [
        {"metric": {"node": "a"}, "value": [NOW, "4.5"]},
        {"metric": {"node": "a", "ksense_ts": "1"}, "value": [NOW, str(NOW - 2)]},
        {"metric": {"node": "b"}, "value": [NOW, "1"]},  # no timestamp series: left out
        {"metric": {}, "value": [NOW, "7"]},  # lost its node label: left out
    ]
    assert core.split_timestamped(result, "ksense_ts") == {"a": Sample(4.5, NOW - 2)}


def test_duplicate_series_pair_value_and_timestamp_per_series_and_the_newest_wins():
    """Two series of one node (a Prometheus restart without staleness markers, two scrape jobs):
    a stale larger value must not borrow the other series' newer timestamp."""
    result = [
        {"metric": {"__name__": "ksense_friction", "node": "a", "instance": "new"}, "value": [NOW, "4"]},
        {"metric": {"__name__": "ksense_friction", "node": "a", "instance": "old"}, "value": [NOW, "90"]},
        {"metric": {"node": "a", "instance": "old", "ksense_ts": "1"}, "value": [NOW, str(NOW - 250)]},
        {"metric": {"node": "a", "instance": "new", "ksense_ts": "1"}, "value": [NOW, str(NOW - 1)]},
        # Same timestamp on both: the larger value wins.
        {"metric": {"node": "b", "job": "x"}, "value": [NOW, "1"]},
        {"metric": {"node": "b", "job": "y"}, "value": [NOW, "2"]},
        {"metric": {"node": "b", "job": "x", "ksense_ts": "1"}, "value": [NOW, str(NOW - 3)]},
        {"metric": {"node": "b", "job": "y", "ksense_ts": "1"}, "value": [NOW, str(NOW - 3)]},
    ]
    assert core.split_timestamped(result, "ksense_ts") == {"a": Sample(4.0, NOW - 1), "b": Sample(2.0, NOW - 3)}
    matrix = [{"metric": e["metric"], "values": [e["value"]]} for e in result]
    assert core.split_timestamped_matrix(matrix, "ksense_ts") == {
        NOW: {"a": Sample(4.0, NOW - 1), "b": Sample(2.0, NOW - 3)}
    }


def test_signed_friction_takes_friction_and_direction_each_from_its_newest_series():
    def answer(old: float, new: float) -> list[dict]:
        return [
            {"metric": {"node": "a", "instance": "new"}, "value": [NOW, str(new)]},
            {"metric": {"node": "a", "instance": "new", "ksense_ts": "1"}, "value": [NOW, str(NOW - 1)]},
            {"metric": {"node": "a", "instance": "old"}, "value": [NOW, str(old)]},
            {"metric": {"node": "a", "instance": "old", "ksense_ts": "1"}, "value": [NOW, str(NOW - 200)]},
        ]

    vectors = {core.FRICTION: core.split_timestamped(answer(80.0, 5.0), "ksense_ts"),
               core.DIRECTION: core.split_timestamped(answer(1.0, -1.0), "ksense_ts")}
    assert core.build(vectors, {}, now=NOW, long_win_s=WIN)["a"].friction_signed == -5.0


def test_split_tick_one_value_per_node_and_the_disagreeing_ones_left_out():
    """A tick query's answer (`count_values by (node)` of the fresh series): a node with one
    value, whatever its number of series, gets it, as fresh as the query (`at`); a node with
    two values is left out, to be read per series."""
    result = [
        {"metric": {"node": "a", "ksense_value": "4.5"}, "value": [NOW, "1"]},
        {"metric": {"node": "c", "ksense_value": "1e-07"}, "value": [NOW, "2"]},  # two series, one value
        {"metric": {"node": "b", "ksense_value": "90"}, "value": [NOW, "1"]},
        {"metric": {"node": "b", "ksense_value": "2"}, "value": [NOW, "1"]},
        {"metric": {"ksense_value": "7"}, "value": [NOW, "1"]},  # lost its node label: left out
    ]
    got, disagree = core.split_tick(result, NOW)
    assert got == {"a": Sample(4.5, NOW), "c": Sample(1e-07, NOW)}
    assert disagree == {"b"}
    with pytest.raises((KeyError, TypeError, ValueError)):
        core.split_tick([{"metric": {"node": "a"}, "value": [NOW, "1"]}], NOW)


def test_a_stale_node_is_missing_with_its_age_though_its_value_is_unknown():
    stale = core.split_stale([{"metric": {"node": "c"}, "value": [NOW, str(NOW - 75)]},
                              {"metric": {}, "value": [NOW, "1"]}])  # lost its node label: left out
    assert list(stale) == ["c"] and stale["c"].ts == NOW - 75
    got = core.build({core.FRICTION: stale}, {}, now=NOW, long_win_s=WIN)["c"]
    assert got.why["friction"] == "stale 75s"


def test_split_timestamped_matrix_by_step():
    result = [
        {"metric": {"node": "a"}, "values": [[100, "1"], [101, "2"]]},
        {"metric": {"node": "a", "ksense_ts": "1"}, "values": [[100, "99.5"], [101, "100.5"]]},
    ]
    assert core.split_timestamped_matrix(result, "ksense_ts") == {
        100.0: {"a": Sample(1.0, 99.5)},
        101.0: {"a": Sample(2.0, 100.5)},
    }


def s(name: str, value: float, **labels: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, value=value, labels={"node": "a", **labels})


def test_exposition_psi_is_the_worst_ratio_and_duplicates_keep_the_largest():
    samples = [
        s(n.PRESSURE.name, 0.90, resource="io", kind="full"),  # per-resource detail is not an input
        s(n.PRESSURE_WORST.name, 0.30),
        s(n.FRICTION.name, 2.0),
        s(n.FRICTION.name, 3.0),  # a duplicate series
        s(n.CPU_UTILIZATION.name, float("nan")),
        s("ksense_runqueue_latency_seconds_bucket", 5.0, le="1e-06"),
    ]
    vectors = core.vectors_from_exposition(samples, NOW)
    assert vectors[core.PSI] == {"a": Sample(0.30, NOW)}
    assert vectors[core.FRICTION] == {"a": Sample(3.0, NOW)}
    assert vectors[core.CPU] == {}
    got = core.build(vectors, {}, now=NOW, long_win_s=WIN)["a"]
    assert got.psi_pct == pytest.approx(30.0)
    assert got.missing == ("energy", "cpu")


def test_node_regex_matches_exactly_the_nodes_named():
    """The regex of a pod query (PromQL string text, JSON-escaped) matches each named node whole
    and nothing else: a `.` in a name is no wildcard, a name is no prefix of another, and a label
    value holding a quote, a backslash or a newline keeps the query parsable."""
    nodes = ["ip-10-0-1-2.ec2.internal", "w1", "w1-large", 'odd"name', "back\\slash", "new\nline"]
    text = core.node_regex(nodes)
    assert "\n" not in text and '"' not in text.replace('\\"', "")
    pattern = re.compile(json.loads(f'"{text}"'))  # the PromQL string's value; Prometheus anchors it
    assert all(pattern.fullmatch(node) for node in nodes)
    for other in ("ip-10-0-1-2xec2.internal", "w", "w1-larg", "w1-large-2", "w1|w1-large", "oddname"):
        assert not pattern.fullmatch(other), other
    assert core.pod_queries("", nodes)[n.POD_ROLE_VICTIM].count(f'node=~"{core.node_regex(sorted(nodes))}"') == 1
    assert "node=~" not in core.pod_queries("", None)[n.POD_ROLE_VICTIM]


def test_node_groups_bound_each_querys_names_and_give_up_past_the_group_limit():
    nodes = [f"node-{i:04d}.zone-a" for i in range(300)]  # 19 characters each as a regex, + 1
    groups = core.node_groups(nodes, 1000, 10)
    assert [x for g in groups for x in g] == sorted(nodes) and len(groups) == 6
    assert all(len(core.node_regex(g)) <= 1000 for g in groups)
    assert core.node_groups(nodes, 1000, 5) is None
    assert core.node_groups(["a" * 50], 10, 1) == [["a" * 50]]  # a name longer than the bound, alone

"""The Evaluator tick with a scripted source and the real controller: publishing, the monitor
CSV format, decision-change and error counters, readiness, the restart rebuild, the loop."""

from __future__ import annotations

import csv
import itertools
import re
import threading
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from common import names as n
from scorer.core.decision import DecisionParams
from scorer.core.model import Inputs, NodeInputs, PodRef
from scorer.evaluator import Evaluator, monitor_row, monitor_sink
from scorer.rulefile import load_rules
from scorer.sources import NamesPods

T0 = datetime(2027, 1, 15, 12, 0, 0, 250000, tzinfo=UTC)
LOW = {"friction": 0.237792, "direction": 1.0, "energy": 0.0, "cpu_pct": 2.413911, "psi_pct": 0.24796}  # 17.886
HIGH = {"friction": 100.0, "direction": 1.0, "energy": 60.0, "cpu_pct": 90.0, "psi_pct": 90.0}  # 87.870


def good(node: str = "a") -> NodeInputs:
    return NodeInputs(node=node, **LOW)


def high(node: str = "a") -> NodeInputs:
    return NodeInputs(node=node, **HIGH)


def down(node: str = "a") -> NodeInputs:
    return NodeInputs(node=node, missing=n.INPUTS, why=MappingProxyType(dict.fromkeys(n.INPUTS, "prometheus down")))


def inputs(*nodes: NodeInputs, ok: bool = True, errors=None, t: datetime = T0) -> Inputs:
    return Inputs(time=t, source="prometheus", nodes=MappingProxyType({x.node: x for x in nodes}),
                  errors=MappingProxyType(errors or {}), ok=ok)


class Script:
    """An InputSource that returns the given Inputs in order (the last one forever after)."""

    name = "prometheus"

    def __init__(self, *steps: Inputs):
        self.steps = list(steps)
        self.asked: list[datetime] = []

    def fetch(self, now: datetime) -> Inputs:
        self.asked.append(now)
        return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]


@pytest.fixture(scope="module")
def rb():
    return load_rules()


def make(source, rb, **kwargs) -> Evaluator:
    clock = itertools.count(0.0, 0.004)  # every tick "takes" 4 ms
    kwargs.setdefault("clock", lambda: next(clock))
    kwargs.setdefault("wall", lambda: 1_800_000_000.5)
    return Evaluator(source, rb, DecisionParams(), **kwargs)


def test_tick_publishes_results_and_readiness(rb):
    ev = make(Script(inputs(good("a"), good("b"))), rb)
    assert ev.latest() is None and not ev.ready()
    results = ev.tick(T0)
    assert ev.latest() is results
    assert ev.ready()
    assert sorted(results.reports) == ["a", "b"]
    assert results.reports["a"].score == pytest.approx(17.886, abs=1e-3)
    assert ev.stats().last_success == 1_800_000_000.5


def test_not_ready_while_the_source_cannot_answer(rb):
    ev = make(Script(inputs(ok=False, errors={"unreachable": 1})), rb)
    ev.tick(T0)
    assert not ev.ready()
    assert ev.stats().last_success is None
    assert dict(ev.stats().source_errors) == {("prometheus", "unreachable"): 1}


def test_tick_uses_the_wall_clock_when_not_given_a_time(rb):
    source = Script(inputs(good()))
    make(source, rb).tick()
    assert source.asked == [datetime.fromtimestamp(1_800_000_000.5, UTC)]


def test_decision_changes_and_errors_are_counted(rb):
    steps = [inputs(down(), ok=False, errors={"unreachable": 1}), inputs(good()), inputs(good()),
             inputs(high()), inputs(good(), errors={"http_422": 2})]
    ev = make(Script(*steps), rb)
    decisions = [ev.tick(T0).reports["a"].decision for _ in steps]
    assert decisions == ["deny", "deny", "allow", "deny", "deny"]
    stats = ev.stats()
    assert dict(stats.decision_changes) == {("a", "deny"): 2, ("a", "allow"): 1}
    assert dict(stats.source_errors) == {("prometheus", "unreachable"): 1, ("prometheus", "http_422"): 2}
    assert stats.evaluation_duration.count == len(steps)
    assert stats.evaluation_duration.sum_seconds == pytest.approx(0.004 * len(steps))


def test_first_sight_of_a_denied_node_counts_as_a_change(rb):
    ev = make(Script(inputs(high("new"))), rb)
    ev.tick(T0)
    assert dict(ev.stats().decision_changes) == {("new", "deny"): 1}


def test_monitor_csv_rows(rb, tmp_path):
    path = tmp_path / n.FUZZY_MONITOR_CSV_NAME
    sink = monitor_sink(path)
    ev = make(Script(inputs(good("b"), down("a"))), rb, monitor_csv=sink)
    ev.tick(T0)
    ev.tick(T0 + timedelta(seconds=1))
    sink.close()
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == n.FUZZY_MONITOR_COLUMNS
    assert len(rows) == 1 + 4
    a, b = rows[1], rows[2]
    local = T0.astimezone().strftime("%Y-%m-%d %H:%M:%S.250")
    assert a[0] == b[0] == local
    reason = "missing metrics: friction, energy (prometheus down)"
    assert a[1:] == ["a", "", "", "", "", "100.000", "high", "deny", reason]
    assert b[1:] == ["b", "0.237792", "0.000000", "2.413911", "0.247960", "17.886", "low", "allow", ""]


def test_monitor_row_signed_friction_and_missing_psi(rb):
    node = NodeInputs(node="c", friction=3.5, direction=-1.0, energy=1.0, cpu_pct=10.0,
                      missing=("psi",), why=MappingProxyType({"psi": "absent"}))
    report = make(Script(inputs(node)), rb).tick(T0).reports["c"]
    row = monitor_row(report)
    assert row[2:6] == ["-3.500000", "1.000000", "10.000000", ""]
    assert re.fullmatch(r"\d+\.\d{3}", row[6])


def test_rebuild_carries_state_without_publishing_or_writing(rb, tmp_path):
    path = tmp_path / "m.csv"
    sink = monitor_sink(path)
    ev = make(Script(inputs(good())), rb, monitor_csv=sink)
    history = [inputs(high()), inputs(high())]
    assert ev.rebuild(history) == 2
    assert ev.latest() is None and not path.exists()
    assert dict(ev.stats().decision_changes) == {}
    # The rebuilt state is deny with good = 0: one good tick is not enough to allow again.
    assert ev.tick(T0).reports["a"].decision == "deny"
    assert ev.tick(T0).reports["a"].decision == "allow"
    sink.close()


def test_rebuild_matches_ticking_the_same_inputs(rb):
    steps = [inputs(good(), high("b")), inputs(high(), good("b")), inputs(good(), good("b"))]
    ticked = make(Script(*steps, inputs(good(), good("b"))), rb)
    for _ in steps:
        ticked.tick(T0)
    rebuilt = make(Script(inputs(good(), good("b"))), rb)
    rebuilt.rebuild(steps)
    a, b = ticked.tick(T0), rebuilt.tick(T0)
    for node in ("a", "b"):
        ra, rb_ = a.reports[node], b.reports[node]
        assert (ra.decision, ra.bad_count, ra.good_count) == (rb_.decision, rb_.bad_count, rb_.good_count)


def test_run_ticks_until_stopped_and_survives_a_failing_tick(rb):
    stop = threading.Event()

    class Flaky:
        name = "prometheus"
        calls = 0

        def fetch(self, now):
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise RuntimeError("a bug in a source")
            if Flaky.calls >= 4:
                stop.set()
            return inputs(good(), t=now)

    ev = Evaluator(Flaky(), rb, DecisionParams(), interval_s=0.01)
    worker = threading.Thread(target=ev.run, args=(stop,))
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert Flaky.calls >= 4
    assert ev.ready() and ev.stats().evaluation_duration.count == Flaky.calls - 1


@pytest.mark.parametrize("replay_fails", [False, True])
def test_run_replays_the_history_first_on_its_own_thread_and_survives_a_failing_one(rb, replay_fails):
    """The start-up replay runs on the ticking thread (never the caller's, which serves), before
    the first tick; a replay that raises leaves fresh states and the ticks go on."""
    stop = threading.Event()
    seen: list[str] = []

    def history():
        seen.append(threading.current_thread().name)
        if replay_fails:
            raise RuntimeError("prometheus answered garbage")
        return [inputs(high()), inputs(high())]

    class Once:
        name = "prometheus"

        def fetch(self, now):
            seen.append("tick")
            stop.set()
            return inputs(good(), t=now)

    ev = Evaluator(Once(), rb, DecisionParams(), interval_s=0.01)
    worker = threading.Thread(target=ev.run, args=(stop, history), name="ticking")
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and seen == ["ticking", "tick"]
    # Rebuilt: two high ticks left a deny that one good tick does not lift; fresh: allow.
    assert ev.latest().reports["a"].decision == ("allow" if replay_fails else "deny")


def test_results_older_than_max_age_are_stale_and_not_ready(rb):
    """A tick that keeps failing leaves the last Results published; past max_age_s (FUZZY_LONG_WIN_S)
    they must stop passing for fresh."""
    wall = {"t": T0.timestamp()}  # the Results carry the time of their inputs: T0
    later = inputs(good(), t=T0 + timedelta(seconds=60.5))
    ev = make(Script(inputs(good()), later), rb, wall=lambda: wall["t"], max_age_s=60.0)
    ev.tick()
    assert ev.ready() and not ev.stale()
    wall["t"] += 60.0
    assert ev.ready() and not ev.stale()
    wall["t"] += 0.5
    assert ev.stale() and not ev.ready()
    ev.tick()
    assert ev.ready() and not ev.stale()


def test_no_results_are_not_stale(rb):
    assert not make(Script(inputs(good())), rb, max_age_s=60.0).stale()


class PodScript(Script):
    """A Script that names pods on demand (scorer.sources.NamesPods): every node asked gets one
    victim; `fail` makes each call count that many failed requests and name nobody; `during`
    runs inside the call (to look at what the evaluator published by then)."""

    def __init__(self, *steps: Inputs, fail: int = 0, during=lambda: None):
        super().__init__(*steps)
        self.pods_asked: list[list[str]] = []
        self.fail = fail
        self.during = during

    def top_pods(self, nodes, now):
        nodes = sorted(nodes)
        self.pods_asked.append(nodes)
        self.during()
        if self.fail:
            return {}, {"http_503": self.fail}
        victims = {node: PodRef("shop", f"checkout-{node}", f"u-{node}", 0.5) for node in nodes}
        return {n.POD_ROLE_VICTIM: victims}, {}


def test_pods_are_asked_for_the_nodes_denied_on_their_score_only_and_named_in_their_reasons(rb):
    source = PodScript(inputs(good("calm"), high("hot"), high("hot2"), down("gone")))
    assert isinstance(source, NamesPods) and not isinstance(Script(inputs()), NamesPods)
    ev = make(source, rb)
    results = ev.tick(T0)
    assert source.pods_asked == [["hot", "hot2"]]  # not `gone`: denied for its missing inputs
    hot, calm, gone = results.reports["hot"], results.reports["calm"], results.reports["gone"]
    assert hot.reason.endswith("; victim shop/checkout-hot (wait 0.5 s/s)")
    assert hot.inputs.victim.uid == "u-hot" and calm.inputs.victim is None and calm.reason is None
    assert gone.decision == "deny" and "victim" not in gone.reason
    # Pods change only the reason and the inputs' pods: the tick's own report otherwise.
    plain = make(Script(inputs(good("calm"), high("hot"), high("hot2"), down("gone"))), rb).tick(T0).reports
    assert hot._replace(reason=plain["hot"].reason, inputs=plain["hot"].inputs) == plain["hot"]
    assert hot.reason == plain["hot"].reason + "; victim shop/checkout-hot (wait 0.5 s/s)"
    assert results.reports["calm"] == plain["calm"] and gone == plain["gone"]


def test_decisions_are_published_before_the_pods_are_asked_for(rb):
    seen = []
    source = PodScript(inputs(high("hot")), during=lambda: seen.append(ev.latest().reports["hot"]))
    ev = make(source, rb)
    named = ev.tick(T0).reports["hot"]
    assert seen[0].decision == "deny" and "victim" not in seen[0].reason and "victim" in named.reason
    assert ev.latest().reports["hot"] is named


def test_no_pods_are_asked_without_a_deny_or_while_the_source_fails(rb):
    source = PodScript(inputs(good("a")), inputs(down("a"), ok=False, errors={"unreachable": 1}))
    ev = make(source, rb)
    ev.tick(T0)
    assert ev.tick(T0).reports["a"].decision == "deny"
    assert source.pods_asked == []


def test_failed_pod_requests_are_counted_and_the_deny_stands(rb):
    source = PodScript(inputs(high("hot"), errors={"http_422": 1}), fail=3)
    ev = make(source, rb)
    report = ev.tick(T0).reports["hot"]
    assert report.decision == "deny" and "victim" not in report.reason and report.inputs.victim is None
    assert dict(ev.stats().source_errors) == {("prometheus", "http_422"): 1, ("prometheus", "http_503"): 3}


def test_a_source_raising_while_naming_pods_costs_no_tick(rb, caplog):
    def boom():
        raise RuntimeError("pool shut down")

    ev = make(PodScript(inputs(high("hot"), good("calm")), during=boom), rb)
    results = ev.tick(T0)
    assert results.reports["hot"].decision == "deny" and ev.latest() is results and ev.ready()
    assert "event=pods_unavailable" in caplog.text

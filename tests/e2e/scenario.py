"""The end-to-end scenario: kernel → Prometheus → scorer → scheduler → bound (or Pending) pods.

`run(out)` starts the Stack (tests/e2e/stack.py), plays the steps below, asserts each, measures
the figures on the way, and always writes the timeline and a summary into `out` — also when a
step fails (the AssertionError then names the step and the output folder).

Clock: node-b and node-c replay recordings whose contention episode sits at fixed recorded
offsets (EPISODE_START_S … EPISODE_END_S after their first row, tests/fixtures/make_quiet_node.py),
so those moments are known in advance; node-a is this machine's kernel and is driven by the
scenario (stress-ng hogs). Steps:

1. The nine pods of deploy/test/fuzzy-test-pods.yaml, created while the exporters calibrate,
   are bound once the nodes are allowed: only to nodes allowed at bind time, each with a
   `Scheduled` event, no node over its allocatable (eight pods each, so they must spread).
2. Once node-a's Direction is calibrated (its first 60 frictions after the freeze, docs/design.md#baseline)
   and node-a is allowed: hogs on every CPU. node-a's run-queue p99, Friction and score rise,
   its decision turns to deny (figure: contention start → deny, goal ≤ 5 s at a 1 s scrape),
   and two new pods are bound to node-b / node-c.
3. At EPISODE_START_S node-b and node-c turn to deny through their recordings: every node is
   denied; three new pods stay Pending with a `FailedScheduling` event and `PodScheduled=False`
   whose message names the fuzzy reason.
5. (while everything is denied) The leader scheduler is SIGKILLed — a crash, no lease release:
   the other replica takes the lease (figure: fail-over time).
4. At EPISODE_END_S the replayed nodes are quiet again and the hogs stop: decisions return to
   allow after the hysteresis (figures per node), the waiting pods are bound by the new leader
   (figure: first allowed node visible to the schedulers → last waiting pod bound), and no pod
   was ever bound twice.
6. Every dashboard panel query returns data against this Prometheus, or is listed in
   EMPTY_BY_DESIGN with the reason.
7. The admission records in both replicas' fuzzy_score.csv match the pods created through the
   API: one row per create, with the uid of the review the API server sent.
"""

from __future__ import annotations

import csv
import json
import math
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from kubernetes.utils import parse_quantity

from common import names
from dashboards import build as dash_build
from dashboards import config as dash
from scorer.core.decision import DecisionParams
from tests import support
from tests.e2e import recordings
from tests.e2e.stack import NODES, REAL_NODE, REPLAY_NODES, TEST_NAMESPACE, Settings, Stack, fuzzy_test_pods
from tests.e2e.timeline import Observer, write_outputs
from tests.scorer import promserver

#: Dashboard expressions allowed to return nothing in this run, and why.
EMPTY_BY_DESIGN = {
    'sum by (instance, source, reason) (rate(ksense_scorer_source_errors_total[$__rate_interval]))':
        "no Prometheus query of the scorers fails in this run (the series appear with the first failure)",
}
#: Per-pod panels are empty by design here: the run has no pod cgroups (the replay exporters have no pods and the
#: eBPF exporter's machine runs none); tests/dashboards/test_data.py gives its exporter a pod tree and checks them.
POD_SERIES = tuple(f.name for f in (names.POD_RUNQUEUE_WAIT, names.POD_DSTATE, names.POD_DSTATE_EPISODES,
                                     names.POD_CPU, names.POD_PRESSURE))
NO_PODS = "no pod cgroups in this run (tests/dashboards/test_data.py checks these panels with a pod tree)"


def empty_by_design(expr: str) -> str | None:
    """Why a panel query may return nothing in this scenario, or None when it must return data."""
    if expr in EMPTY_BY_DESIGN:
        return EMPTY_BY_DESIGN[expr]
    return NO_PODS if any(name in expr for name in POD_SERIES) else None


RATE_INTERVAL = "30s"
FRESHNESS_GOAL_S = 5.0
P99_QUERY = ('histogram_quantile(0.99, sum by (le) (rate(ksense_runqueue_latency_seconds_bucket{{node="{node}"}}'
             '[{window}])))')


class StepFailed(AssertionError):
    pass


@dataclass
class Step:
    number: str
    title: str
    ok: bool | None = None
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Created:
    name: str
    uid: str
    step: str
    mono: float
    wall: float


@dataclass
class Report:
    out: Path
    steps: list[Step] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(s.ok for s in self.steps)


class Scenario:
    def __init__(self, stack: Stack, obs: Observer, report: Report):
        self.stack, self.obs, self.report = stack, obs, report
        self.created: list[Created] = []
        self.fig = report.figures
        self.started = time.monotonic()
        t0 = [stack.t0[n] for n in REPLAY_NODES]
        #: monotonic instants of the replayed episode (first/last of the two replays)
        self.episode_start = min(t0) + recordings.EPISODE_START_S
        self.episode_end = max(t0) + recordings.EPISODE_END_S

    # --- helpers ------------------------------------------------------------------------------------
    @contextmanager
    def step(self, number: str, title: str) -> Iterator[Step]:
        s = Step(number, title)
        self.report.steps.append(s)
        started = time.monotonic()
        self.obs.mark(f"step {number}", title)
        try:
            yield s
            s.ok = True
        except Exception as exc:
            s.ok = False
            s.detail = s.detail or f"{type(exc).__name__}: {exc}"
            raise StepFailed(f"step {number} ({title}) failed: {exc}") from exc
        finally:
            s.seconds = time.monotonic() - started

    def wait(self, predicate: Callable[[], Any], deadline_s: float, what: str, poll_s: float = 0.1) -> Any:
        return support.wait_for(predicate, max(deadline_s, 0.5), what, poll_s=poll_s)

    def store(self):
        assert self.stack.api is not None
        return self.stack.api.store

    def pod(self, name: str) -> dict:
        return self.store().pod(TEST_NAMESPACE, name) or {}

    def node_of(self, name: str) -> str:
        return (self.pod(name).get("spec") or {}).get("nodeName") or ""

    def create(self, body: dict, step: str) -> Created:
        assert self.stack.core is not None
        made = self.stack.core.create_namespaced_pod(TEST_NAMESPACE, body)
        c = Created(made.metadata.name, made.metadata.uid, step, time.monotonic(), time.time())
        self.created.append(c)
        return c

    def extra_pod(self, name: str) -> dict:
        body = json.loads(json.dumps(fuzzy_test_pods()[0]))
        body["metadata"]["name"] = name
        return body

    def events(self, name: str, reason: str) -> list[dict]:
        return [e for e in self.store().events(TEST_NAMESPACE)
                if (e.get("involvedObject") or {}).get("name") == name and e.get("reason") == reason]

    def condition(self, name: str, ctype: str = "PodScheduled") -> dict:
        conds = (self.pod(name).get("status") or {}).get("conditions") or []
        return next((c for c in conds if c.get("type") == ctype), {})

    def prom(self, query: str) -> list[dict]:
        return promserver.instant(self.stack.prom_url, query)

    def prom_value(self, query: str) -> float:
        result = self.prom(query)
        return float(result[0]["value"][1]) if result else math.nan

    def allowed_near(self, node: str, wall: float, slack_s: float = 2.0) -> bool:
        """Was `node` allowed, as the schedulers' query sees it, at some moment of
        [wall − slack, wall]? (The scheduler read the decision just before it bound.)"""
        query = f'min by (node) (ksense_node_admission_allowed{{node="{node}"}})'
        try:
            body = requests.get(f"{self.stack.prom_url}/api/v1/query_range", timeout=5, params={
                "query": query, "start": f"{wall - slack_s:.3f}", "end": f"{wall:.3f}", "step": "0.25"}).json()
        except (requests.RequestException, ValueError):
            return False
        series = body.get("data", {}).get("result", [])
        return any(float(v) == 1.0 for s in series for _, v in s.get("values", []))

    def check_allocatable(self) -> dict[str, int]:
        """No node holds more pods, cpu or memory requests than it has allocatable (parsed with the
        official client's parse_quantity, independent of the scheduler's own arithmetic)."""
        per_node: dict[str, int] = {}
        pods = self.store().pods()
        for node in self.store().nodes():
            name = node["metadata"]["name"]
            alloc = node["status"]["allocatable"]
            mine = [p for p in pods if (p.get("spec") or {}).get("nodeName") == name
                    and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
            per_node[name] = len(mine)
            for resource in ("cpu", "memory"):
                used = sum((parse_quantity(((c.get("resources") or {}).get("requests") or {}).get(resource, "0"))
                            for p in mine for c in p["spec"]["containers"]), Decimal(0))
                assert used <= parse_quantity(alloc[resource]), f"{name}: {resource} {used} > {alloc[resource]}"
            assert len(mine) <= int(alloc["pods"]), f"{name}: {len(mine)} pods > allocatable {alloc['pods']}"
        return per_node

    def check_binds(self, names: list[str]) -> None:
        binds = {b.name: b for b in self.store().binds}
        for name in names:
            b = binds[name]
            assert b.node in NODES, f"{name} bound to unknown node {b.node}"
            assert self.allowed_near(b.node, b.wall), f"{name} bound to {b.node}, which was not allowed then"
            # The scheduler posts the event after the bind call returns: under load it can land
            # a moment after the bind is visible, so wait for it briefly instead of racing it.
            self.wait(lambda name=name: self.events(name, "Scheduled"), 10, f"{name}: a Scheduled event")

    # --- the steps ----------------------------------------------------------------------------------
    def run(self) -> None:
        s = self.stack.settings
        nine = fuzzy_test_pods()
        assert len(nine) == 9, f"deploy/test/fuzzy-test-pods.yaml holds {len(nine)} pods, expected 9"
        for body in nine:
            self.create(body, "1")
        self.obs.mark("nine test pods created")

        with self.step("1", "the nine test pods are bound after warm-up, to allowed nodes only") as st:
            names = [c.name for c in self.created]
            deadline = self.stack.t0[REAL_NODE] + s.warmup_s + 60 - time.monotonic()
            self.wait(lambda: all(self.node_of(n) for n in names), deadline, "the nine test pods bound")
            self.check_binds(names)
            per_node = self.check_allocatable()
            first = min(b.mono for b in self.store().binds)
            self.fig["first_bind_after_start_s"] = round(first - min(self.stack.t0.values()), 1)
            st.detail = "pods per node: " + ", ".join(f"{n}={k}" for n, k in sorted(per_node.items()))

        with self.step("2", "CPU contention on node-a: p99, friction and score rise, deny, new pods avoid it") as st:
            self.contention(st)

        with self.step("3", "every node denied: new pods stay Pending with FailedScheduling naming the fuzzy reason"
                       ) as st:
            self.all_denied(st)

        with self.step("5", "the leader scheduler is killed: the other takes over") as st:
            self.failover(st)

        with self.step("4", "pressure removed: allow after the hysteresis, the waiting pods are bound, no double bind"
                       ) as st:
            self.recovery(st)

        with self.step("6", "every dashboard panel query returns data (or is empty by design)") as st:
            self.dashboards(st)

        with self.step("7", "fuzzy_score.csv holds one admission record per pod created") as st:
            self.admissions(st)

    def contention(self, st: Step) -> None:
        s = self.stack.settings
        node = REAL_NODE
        calibrated = self.stack.t0[node] + s.warmup_s + 60 + 30
        self.wait(lambda: self.prom(f'ksense_friction_direction{{node="{node}"}}'),
                  calibrated - time.monotonic(), "node-a's Direction (Fcal over 60 frictions after the freeze)")

        def allowed() -> bool:
            return self.obs.scorer_decision(node) == {"allow"} and bool(self.obs.latest_prom().get(node, (0, 0))[1])

        if not _until(allowed, self.episode_start - 20 - time.monotonic()):
            r = self.obs.scorer_report(1, node)
            inputs = r.get("inputs") or {}
            raise AssertionError(
                f"node-a was not allowed in time for the contention (score {r.get('score')}, "
                f"reason {r.get('reason')!r}, CPU {inputs.get('cpu_pct')} %, PSI {inputs.get('psi_pct')} %): "
                "eBPF sees the whole kernel, and other work on this machine keeps it contended. "
                "Run on a machine of its own (CI does).")
        window = "5s"
        # "Before" over the last 10 s (medians), so one noisy second does not set the bar.
        p99_before = self.prom_value(P99_QUERY.format(node=node, window="10s"))
        friction_before = self.prom_value(f'quantile_over_time(0.5, ksense_friction{{node="{node}"}}[10s])')
        score_before = self.prom_value(
            f'quantile_over_time(0.5, max by (node) (ksense_node_score{{node="{node}"}})[10s:1s])')
        # Again right before the hogs, so the deny measured below is a change they caused.
        self.wait(allowed, 10, "node-a allowed at both scorer replicas and in Prometheus", poll_s=0.02)
        self.stack.hogs.start()
        on = self.obs.mark("contention on node-a", f"stress-ng: {s.hogs_per_cpu} CPU workers pinned to each of CPUs "
                           f"{self.stack.hogs.cpus}, nice {s.hog_nice}")
        deny = self.wait(lambda: self.obs.first_change(node, "deny", on.mono), 30, "node-a denied by a scorer",
                         poll_s=0.05)
        prom_deny = self.wait(lambda: self.obs.first_prom(on.mono, lambda v: v.get(node, (0, True))[1] is False), 30,
                              "node-a denied in Prometheus (what the schedulers read)", poll_s=0.05)
        self.obs.mark("node-a denied", f"scorer-{deny.replica}: {deny.reason or ''}")
        self.fig["contention_to_deny_scorer_s"] = round(deny.mono - on.mono, 2)
        self.fig["contention_to_deny_prometheus_s"] = round(prom_deny[0] - on.mono, 2)
        self.fig["freshness_goal_s"] = FRESHNESS_GOAL_S

        def risen() -> tuple[float, float, float] | None:
            p99 = self.prom_value(P99_QUERY.format(node=node, window=window))
            report = self.obs.scorer_report(1, node)
            friction = abs((report.get("inputs") or {}).get("friction_signed") or 0.0)
            score = float(report.get("score") or 0.0)
            ok = p99 > max(3 * p99_before, 0.002) and friction > max(3 * friction_before, 10.0) and score >= 70
            return (p99, friction, score) if ok else None

        p99, friction, score = self.wait(risen, 15,
                                         "node-a's run-queue p99 ×3 (≥ 2 ms), friction ×3 (≥ 10), score ≥ 70")
        self.fig["node_a_p99_ms"] = {"before": round(p99_before * 1e3, 3), "contended": round(p99 * 1e3, 3)}
        self.fig["node_a_friction"] = {"before": round(friction_before, 2), "contended": round(friction, 2)}
        self.fig["node_a_score"] = {"before": round(score_before, 1), "contended": round(score, 1)}

        # The webhook asks either replica: both must deny before the creates whose records step 7 checks.
        self.wait(lambda: self.denied_at_both_scorers((node,)), 15, "node-a denied at both scorer replicas")
        room = int(dict(s.node_pods)[node]) - self.check_allocatable()[node]
        assert room >= 2, f"{node} has room for {room} pods only: avoiding it would prove nothing"
        new = [self.create(self.extra_pod(f"fuzzy-test-{i}"), "2").name for i in (10, 11)]
        self.wait(lambda: all(self.node_of(n) for n in new), 20, "the two new pods bound")
        placed = {n: self.node_of(n) for n in new}
        assert all(v in REPLAY_NODES for v in placed.values()), f"a new pod went to the contended node: {placed}"
        self.check_binds(new)
        self.check_allocatable()
        if time.monotonic() > self.episode_start - 1:
            raise AssertionError("too slow: step 2 ended after the replayed episode began")
        st.detail = (f"deny {self.fig['contention_to_deny_scorer_s']} s after the hogs (Prometheus "
                     f"{self.fig['contention_to_deny_prometheus_s']} s); p99 {self.fig['node_a_p99_ms']} ms; "
                     f"new pods on {placed}")

    def all_denied(self, st: Step) -> None:
        self.wait(lambda: self.obs.first_prom(self.episode_start - 1, lambda v: len(v) == 3 and not any(
            a for _, a in v.values())), self.episode_start + 20 - time.monotonic(), "every node denied in Prometheus")
        # Prometheus' view is deny-wins over the replicas; the webhook asks either one, so both must deny.
        self.wait(lambda: self.denied_at_both_scorers(NODES), 15, "every node denied at both scorer replicas")
        self.obs.mark("every node denied")
        waiting = [self.create(self.extra_pod(f"fuzzy-test-{i}"), "3").name for i in (12, 13, 14)]
        self.waiting = waiting

        def told() -> bool:
            return all(self.events(n, "FailedScheduling") and self.condition(n).get("status") == "False"
                       for n in waiting)

        self.wait(told, 20, "FailedScheduling events and PodScheduled=False on the three new pods")
        for n in waiting:
            cond = self.condition(n)
            message = cond.get("message") or ""
            assert cond.get("reason") == "Unschedulable", cond
            assert "fuzzy" in message and message.startswith("0/3 nodes are available"), message
            ev = self.events(n, "FailedScheduling")[0]
            assert ev.get("type") == "Warning" and "fuzzy" in (ev.get("message") or ""), ev
            assert not self.node_of(n), f"{n} was bound while every node was denied"
        st.detail = f"message: {self.condition(waiting[0]).get('message')}"
        self.fig["unschedulable_message"] = self.condition(waiting[0]).get("message")

    def denied_at_both_scorers(self, nodes: Iterable[str]) -> bool:
        """Whether both scorer replicas currently deny every one of `nodes`."""
        return all(self.obs.scorer_report(replica, n).get("decision") == "deny" for replica in (1, 2) for n in nodes)

    def failover(self, st: Step) -> None:
        s = self.stack.settings
        leader = self.stack.lease_holder()
        assert leader in (self.stack.scheduler_identity(1), self.stack.scheduler_identity(2)), leader
        other = next(i for i in (self.stack.scheduler_identity(1), self.stack.scheduler_identity(2)) if i != leader)
        if self.episode_end - time.monotonic() < s.lease_duration_s + 3:
            raise AssertionError("too slow: no time left for the fail-over before the episode ends")
        self.stack.procs[leader].proc.kill()  # SIGKILL: a crash, the lease is not released
        self.stack.procs[leader].proc.wait(10)
        killed = self.obs.mark("leader killed", f"SIGKILL {leader}")
        self.wait(lambda: self.stack.lease_holder() == other, s.lease_duration_s * 3 + 10, f"{other} to take the lease",
                  poll_s=0.05)
        took = self.obs.mark("new leader", other)
        self.fig["failover_s"] = round(took.mono - killed.mono, 2)
        self.fig["lease"] = {"duration_s": s.lease_duration_s, "renew_deadline_s": s.renew_deadline_s,
                             "retry_period_s": s.retry_period_s}
        port = self.stack.ports[other]
        self.wait(lambda: "ksense_scheduler_leader 1.0" in _text(f"http://127.0.0.1:{port}/metrics"), 10,
                  f"{other} reporting ksense_scheduler_leader 1")
        self.survivor = other
        assert not any(self.node_of(n) for n in self.waiting), "a waiting pod was bound while every node was denied"
        st.detail = f"{leader} killed, {other} leads after {self.fig['failover_s']} s"

    def recovery(self, st: Step) -> None:
        self.wait(lambda: time.monotonic() >= self.episode_end, self.episode_end - time.monotonic() + 5,
                  "the end of the replayed episode")
        self.stack.hogs.stop()
        off = self.obs.mark("pressure removed", "hogs stopped; node-b/node-c recordings quiet again")
        self.wait(lambda: all(self.node_of(n) for n in self.waiting), 45, "the waiting pods bound")
        self.obs.mark("waiting pods bound")
        appeared = self.obs.first_prom(off.mono - 1, lambda v: any(a for _, a in v.values()))
        assert appeared is not None
        binds = {b.name: b for b in self.store().binds}
        last = max(binds[n].mono for n in self.waiting)
        self.fig["allowed_node_to_waiting_binds_s"] = round(last - appeared[0], 2)
        # Every node back to allow at the scorers; per node from its own release.
        released = {REAL_NODE: off.mono, **{n: self.stack.t0[n] + recordings.EPISODE_END_S for n in REPLAY_NODES}}
        back = {}
        for node in NODES:
            c = self.wait(lambda node=node: self.obs.first_change(node, "allow", released[node] - 0.5), 60,
                          f"{node} allowed again")
            back[node] = round(c.mono - released[node], 2)
        self.fig["pressure_removed_to_allow_s"] = back
        p = DecisionParams()
        self.fig["hysteresis"] = {"good_ticks": p.good_threshold, "bad_ticks": p.medium_bad_threshold,
                                  "medium_low_upper": p.medium_low_upper, "medium_mid_upper": p.medium_mid_upper,
                                  "tick_s": self.stack.settings.scorer_interval_s}
        all_pods = [c.name for c in self.created]
        assert all(self.node_of(n) for n in all_pods), "a pod is still Pending"
        self.check_binds(all_pods)
        self.check_allocatable()
        # No double bind: one successful pods/binding per pod, and the node never changed.
        api = self.stack.api
        assert api is not None
        ok_binds = Counter(r.name for r in list(api.requests)
                           if r.resource in ("pods/binding", "bindings") and r.status == 201)
        assert max(ok_binds.values()) == 1 and set(ok_binds) == set(all_pods), ok_binds
        assert Counter(b.name for b in self.store().binds) == Counter(all_pods)
        port = self.stack.ports[self.survivor]
        bound = _metric(_text(f"http://127.0.0.1:{port}/metrics"), 'ksense_scheduler_binds_total{result="bound"}')
        assert bound >= len(self.waiting), f"{self.survivor} bound {bound} pods, fewer than the waiting ones"
        st.detail = (f"allowed → waiting pods bound in {self.fig['allowed_node_to_waiting_binds_s']} s; "
                     f"release → allow {back}")

    def dashboards(self, st: Step) -> None:
        items = []
        for module in dash_build.DASHBOARD_MODULES:
            data = json.loads(dash_build.dashboard_json(module.build()))
            for panel in data["panels"]:
                for t in panel.get("targets") or []:
                    items.append((f"{data['title']} / {panel['title']} / {t['refId']}", t["expr"]))
        missing: list[str] = []
        empty_ok: list[str] = []
        end = time.monotonic() + 30
        for where, expr in items:
            query = expr.replace(f"${dash.NODE_VAR}", ".+").replace("$__rate_interval", RATE_INTERVAL)
            while True:
                try:
                    body = requests.get(f"{self.stack.prom_url}/api/v1/query", params={"query": query},
                                        timeout=5).json()
                except (requests.RequestException, ValueError) as exc:
                    body = {"status": "error", "error": str(exc)}
                if body.get("status") != "success":
                    missing.append(f"{where}: does not parse: {body.get('error')}")
                    break
                if body["data"]["result"]:
                    break
                reason = empty_by_design(expr)
                if reason is not None:
                    empty_ok.append(f"{where}: {reason}")
                    break
                if time.monotonic() > end:
                    missing.append(f"{where}: no data\n  {query}")
                    break
                time.sleep(0.5)
        self.fig["dashboard_queries"] = {"total": len(items), "with_data": len(items) - len(missing) - len(empty_ok),
                                         "empty_by_design": empty_ok}
        assert not missing, "\n".join(missing)
        st.detail = f"{len(items)} panel queries; empty by design: {len(empty_ok)}"

    def admissions(self, st: Step) -> None:
        webhook = self.stack.webhook
        assert webhook is not None
        rows = []
        for path in self.stack.score_csvs():
            if path.exists():
                with open(path, newline="") as f:
                    rows += list(csv.DictReader(f))
        created = Counter(c.name for c in self.created)
        recorded = Counter(r["Name"] for r in rows if r["Namespace"] == TEST_NAMESPACE)
        assert recorded == created, f"records {dict(recorded)} != creates {dict(created)}"
        assert len(rows) == len(self.created), f"{len(rows)} rows for {len(self.created)} creates"
        calls = {c.uid: c for c in webhook.calls}
        assert all(c.status == 200 and c.allowed is True and not c.error for c in calls.values()), webhook.calls
        assert {r["Uid"] for r in rows} == set(calls), "the rows' Uid are not the reviews' uids"
        by_name = {r["Name"]: r for r in rows}
        for name in self.waiting:
            assert by_name[name]["AllowedNodes"] == "0", by_name[name]  # created while every node was denied
        for c in self.created:
            if c.step == "2":
                assert by_name[c.name]["AllowedNodes"] == "2", by_name[c.name]
                assert by_name[c.name]["BestNode"] in REPLAY_NODES, by_name[c.name]
        per_replica = [sum(1 for c in webhook.calls if c.endpoint == self.stack.scorer_url(i)) for i in (1, 2)]
        self.fig["admission_reviews"] = {"creates": len(self.created), "rows": len(rows),
                                         "per_replica": per_replica,
                                         "p99_ms": round(sorted(c.duration_s for c in webhook.calls)[
                                             max(0, math.ceil(0.99 * len(webhook.calls)) - 1)] * 1e3, 1)}
        st.detail = f"{len(rows)} rows for {len(self.created)} creates, split {per_replica} over the replicas"


def _until(predicate: Callable[[], Any], deadline_s: float, poll_s: float = 0.1) -> bool:
    """Poll `predicate` until true (True) or the deadline (False)."""
    end = time.monotonic() + max(deadline_s, 0.0)
    while not predicate():
        if time.monotonic() >= end:
            return False
        time.sleep(poll_s)
    return True


def _text(url: str) -> str:
    try:
        return requests.get(url, timeout=2).text
    except requests.RequestException:
        return ""


def _metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def summary_text(report: Report) -> str:
    lines = ["# ksense end-to-end run", "", f"output: {report.out}", ""]
    for s in report.steps:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[s.ok]
        lines.append(f"- {verdict} step {s.number} ({s.seconds:.1f} s): {s.title}")
        if s.detail:
            lines.append(f"    {s.detail}")
    if report.error:
        lines += ["", "## error", "", report.error]
    lines += ["", "## figures", "", "```json", json.dumps(report.figures, indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(lines)


def run(out: Path, settings: Settings | None = None) -> Report:
    """Play the scenario; outputs always land in `out`. Raises StepFailed (an AssertionError)
    naming the failed step; returns the Report when every step passed."""
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    started = time.monotonic()
    try:
        with Stack(out, settings) as stack:
            report.figures["stack_start_s"] = round(time.monotonic() - started, 1)
            obs = Observer(stack).start()
            try:
                Scenario(stack, obs, report).run()
            except BaseException as exc:
                report.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                raise
            finally:
                obs.stop()
                report.figures["scenario_s"] = round(time.monotonic() - started, 1)
                write_outputs(obs, out)
                (out / "stack.json").write_text(json.dumps(stack.describe(), indent=2))
    except BaseException as exc:
        if report.error is None:
            report.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise
    finally:
        report.figures["total_s"] = round(time.monotonic() - started, 1)
        (out / "figures.json").write_text(json.dumps(report.figures, indent=2, ensure_ascii=False))
        (out / "summary.md").write_text(summary_text(report))
    return report


def summary_text_for(out: Path) -> str:
    """The summary a run wrote (for printing after a failure)."""
    path = out / "summary.md"
    return path.read_text() if path.exists() else f"(no summary in {out})"

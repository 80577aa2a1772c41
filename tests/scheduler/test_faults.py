"""Bad input and faults, injected into the fake API server: races on bind (someone else binds,
the pod is deleted or recreated with the same name), nodes disappearing, 500s and timeouts,
watches expiring (410) or dropping, lists failing. The scheduler never exits, never binds a pod
twice, and counts what happened."""

from __future__ import annotations

import threading
import time
from typing import Any

from scheduler.cache import NODE, ClusterCache, Reflector
from scheduler.kube import KubeError
from scheduler.leader import LeaderElector
from tests.kubeapi import factories as f
from tests.kubeapi.fixtures import KubeAPI, running_kube_api
from tests.scheduler.conftest import (
    NS,
    FakeScores,
    add_nodes,
    add_pods,
    allow,
    binding_successes,
    node_of,
    wait_for,
)


def _binding_requests(k: KubeAPI, name: str) -> list[int]:
    return [r.status for r in k.server.requests if r.resource == "pods/binding" and r.name == name]


def _unschedulable(k: KubeAPI, name: str) -> str:
    """The message of the pod's PodScheduled=False Unschedulable condition, "" without one."""
    conds = (k.store.pod(NS, name) or {}).get("status", {}).get("conditions") or ()
    return next((c["message"] for c in conds if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"),
                "")


def test_pod_bound_by_someone_else_between_filter_and_bind(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1", "n2")
    inst = start_scheduler(k.url, FakeScores(allow("n1")))
    hold = k.server.inject(resource="pods/binding", delay_s=0.5)  # our bind waits at the server...
    pod = add_pods(k, "race")[0]
    wait_for(lambda: hold.hits, 5, "our bind request")
    k.store.bind(NS, "race", "n2", uid=pod["metadata"]["uid"])  # ...while another scheduler binds it
    wait_for(lambda: inst.stats.binds()["conflict"] == 1, 5, "the conflict counted")
    time.sleep(1.5)  # past the first backoff: a blind retry would show here
    assert node_of(k, "race") == "n2"
    assert _binding_requests(k, "race") == [409], "retried blindly"
    wait_for(lambda: inst.stats.binds() == {"bound": 0, "conflict": 1, "error": 0}, 5, "bind counters")
    assert inst.runtime.cache.assumed() == {}, "the assumption on n1 was dropped"


def test_pod_recreated_with_the_same_name_is_refused_by_the_uid_precondition(
        kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")))
    hold = k.server.inject(resource="pods/binding", delay_s=0.5)
    old = add_pods(k, "twin")[0]
    wait_for(lambda: hold.hits, 5, "our bind request")
    k.core.delete_namespaced_pod("twin", NS)
    new = add_pods(k, "twin")[0]
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    wait_for(lambda: node_of(k, "twin") == "n1", 5, "the new pod bound")
    # Counted once answered; the server records a request just before its answer.
    wait_for(lambda: inst.stats.binds() == {"bound": 1, "conflict": 1, "error": 0}, 5, "bind counters")
    assert _binding_requests(k, "twin") == [409, 201]
    assert k.store.pod(NS, "twin")["metadata"]["uid"] == new["metadata"]["uid"]


def test_pod_deleted_before_bind_is_dropped(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")))
    hold = k.server.inject(resource="pods/binding", delay_s=0.5)
    add_pods(k, "gone")
    wait_for(lambda: hold.hits, 5, "our bind request")
    k.core.delete_namespaced_pod("gone", NS)
    wait_for(lambda: inst.stats.binds()["conflict"] == 1, 5, "404 counted as conflict")
    assert _binding_requests(k, "gone") == [404]
    wait_for(lambda: inst.runtime.cache.assumed() == {}, 5, "the assumption released")


def test_nodes_disappearing(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "best", "other")
    scores = FakeScores({**allow("best", score=5.0), **allow("other", score=50.0)})
    inst = start_scheduler(k.url, scores)

    def known() -> set[str]:
        return set(inst.runtime.cache.table().infos)

    add_pods(k, "first")
    wait_for(lambda: node_of(k, "first") == "best", 5, "first pod on the best node")
    k.core.delete_node("best")
    # Nodes and pods come on separate watches: a pod seen before the node's deletion would be
    # bound to it (the API server accepts a binding to any name, as a real one does).
    wait_for(lambda: known() == {"other"}, 5, "the deletion seen by the scheduler")
    add_pods(k, "second")
    wait_for(lambda: node_of(k, "second") == "other", 5, "second pod on the remaining node")
    k.core.delete_node("other")
    wait_for(lambda: known() == set(), 5, "the second deletion seen")
    add_pods(k, "third")
    wait_for(lambda: any(c["type"] == "PodScheduled"
                         for c in k.store.pod(NS, "third")["status"].get("conditions") or ()), 5, "third pod told why")
    cond = next(c for c in k.store.pod(NS, "third")["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["message"] == "no nodes available to schedule pods"


def test_bind_500s_are_errors_retried_with_backoff(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")))
    k.server.inject(resource="pods/binding", status=500, times=2)
    started = time.monotonic()
    add_pods(k, "p")
    wait_for(lambda: node_of(k, "p") == "n1", 10, "bound after two failures")
    assert time.monotonic() - started >= 2.9, "backoff 1 s then 2 s"
    wait_for(lambda: inst.stats.binds() == {"bound": 1, "conflict": 0, "error": 2}, 5, "bind counters")
    assert _binding_requests(k, "p") == [500, 500, 201]


def test_bind_timeout_keeps_the_pod_counted_and_binds_it_once(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1", cpu="1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")), request_timeout_s=0.5)
    k.server.inject(resource="pods/binding", delay_s=1.2)  # answered after our client gave up
    add_pods(k, "slow", cpu="600m")
    wait_for(lambda: inst.stats.binds()["error"] == 1, 5, "the timeout")
    add_pods(k, "next", cpu="600m")  # must not take the capacity the lost bind may hold
    wait_for(lambda: node_of(k, "slow") == "n1", 5, "the slow pod bound")
    time.sleep(1.5)
    assert binding_successes(k).get("slow") == 1
    assert node_of(k, "next") == "", "the node is full: 600m + 600m > 1 cpu"


def test_bind_connection_reset_is_retried(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1", cpu="1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")))
    k.server.inject(resource="pods/binding", reset=True)  # no answer, and nothing bound
    # The node fits the pod once: the retry must not compete with the pod's own assumption.
    add_pods(k, "p", cpu="600m")
    wait_for(lambda: node_of(k, "p") == "n1", 5, "bound on the retry")
    wait_for(lambda: inst.stats.binds() == {"bound": 1, "conflict": 0, "error": 1}, 5, "bind counters")
    assert inst.runtime.cache.assumed() in ({}, {k.store.pod(NS, "p")["metadata"]["uid"]: "n1"})
    assert inst.stats.unschedulable_counts()["resources"] == 0


def test_a_lost_bind_of_a_pod_then_deleted_frees_its_node(kube_api: KubeAPI, start_scheduler) -> None:
    """The capacity a bind with a lost answer holds is released when the pending watch shows the
    pod deleted without a node (the API never binds a pod being deleted) — not by a timer."""
    k = kube_api
    add_nodes(k, "n1", cpu="1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")))
    k.server.inject(resource="pods/binding", reset=True, times=None)  # no answer, and nothing bound
    add_pods(k, "doomed", cpu="600m")
    wait_for(lambda: inst.stats.binds()["error"] >= 1, 5, "the lost answer")
    k.core.delete_namespaced_pod("doomed", NS)
    k.server.clear_faults()
    add_pods(k, "next", cpu="600m")
    wait_for(lambda: node_of(k, "next") == "n1", 5, "the next pod bound on the freed node")
    assert inst.runtime.cache.assumed() in ({}, {k.store.pod(NS, "next")["metadata"]["uid"]: "n1"})


def test_assumed_capacity_is_held_while_the_bound_watch_is_down(kube_api: KubeAPI, start_scheduler) -> None:
    """No timer releases a bound pod's capacity before a watch or a list shows the pod: with the
    bound-pod watch and list failing, an hour later the node is still full."""
    k = kube_api
    add_nodes(k, "n1", cpu="1")
    skew = [0.0]
    inst = start_scheduler(k.url, FakeScores(allow("n1")), clock=lambda: time.monotonic() + skew[0])
    k.server.wait_for_watches(3)
    bound_pods = r"fieldSelector=.*spec\.nodeName!="  # the bound-pod reflector's selector
    watch = k.server.inject(verb="watch", resource="pods", query=bound_pods, status=500, times=None)
    k.server.inject(verb="list", resource="pods", query=bound_pods, status=500, times=None)
    k.server.drop_watches()  # the pending and node watches resume; the bound one cannot
    wait_for(lambda: watch.hits, 5, "the bound-pod watch failing")
    fill = add_pods(k, "fill", cpu="600m")[0]
    wait_for(lambda: inst.stats.binds()["bound"] == 1, 5, "the first pod bound")
    assert inst.runtime.cache.assumed() == {fill["metadata"]["uid"]: "n1"}
    skew[0] = 3600.0  # the scheduler's clock an hour on: past any expiry timer
    add_pods(k, "next", cpu="600m")
    wait_for(lambda: node_of(k, "next") or _unschedulable(k, "next"), 10, "the next pod evaluated")
    assert node_of(k, "next") == "", "overcommitted: 600m + 600m on a 1-cpu node"
    assert "1 Insufficient cpu" in _unschedulable(k, "next")
    k.server.clear_faults()  # the bound-pod reflector relists and sees the pod
    # Its backoff doubles from 0.5 s while the faults last: up to 16 s after 15 s of failures.
    wait_for(lambda: inst.runtime.cache.assumed() == {}, 20, "the assumption replaced by the listed pod")
    assert inst.runtime.cache.table()["n1"].requested.cpu == 600
    assert node_of(k, "next") == ""


def test_watch_expiry_410_relists_and_keeps_scheduling(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")))
    lists = k.server.count("list")
    k.server.compact(expire_open_watches=True)
    # A reflector counts its list once the answer is in the cache, after the server counted it.
    wait_for(lambda: all(r.lists == 2 for r in inst.runtime.reflectors), 5, "all three relisted")
    assert k.server.count("list") == lists + 3
    add_pods(k, "after-410")
    wait_for(lambda: node_of(k, "after-410") == "n1", 5, "scheduling goes on")


def test_clean_watch_end_resumes_and_connection_loss_relists(kube_api: KubeAPI, start_scheduler) -> None:
    """docs/design.md: relist on 410 and on connection loss (events may be lost with the connection);
    a watch the server ends cleanly (its timeout) resumes from the last resourceVersion."""
    k = kube_api
    add_nodes(k, "n1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")))
    for abrupt, lists in ((False, 1), (True, 2)):
        k.server.wait_for_watches(3)
        assert k.server.drop_watches(abrupt=abrupt) == 3
        k.store.create("pods", f.pod(f"while-down-{abrupt}"), NS)  # lands between watches
        name = f"while-down-{abrupt}"
        wait_for(lambda: node_of(k, name) == "n1", 10, "bound after reconnect")  # noqa: B023 (waited for here)
        wait_for(lambda: all(r.lists == lists for r in inst.runtime.reflectors), 5,  # noqa: B023
                 f"{lists} list(s) per reflector after abrupt={abrupt}")


def test_bookmarks_keep_a_quiet_watch_current_across_compaction(start_scheduler) -> None:
    # Renewals 20 s apart: nothing but this test writes to the store while it runs.
    with running_kube_api(bookmark_interval_s=0.2) as k:
        add_nodes(k, "n1")
        inst = start_scheduler(k.url, FakeScores(allow("n1")), lease_duration_s=60.0, renew_deadline_s=40.0,
                               retry_period_s=20.0)
        k.server.wait_for_watches(3)
        lists = k.server.count("list")
        for i in range(3):  # writes none of the three watches shows: only bookmarks move them on
            k.store.create("pods", f.pod(f"other-{i}", scheduler_name="other"), NS)
        time.sleep(0.6)  # a few bookmarks
        k.server.compact()
        time.sleep(0.6)  # bookmarks at the compacted resourceVersion
        started = k.server.watches_started
        assert k.server.drop_watches() == 3
        wait_for(lambda: k.server.watches_started >= started + 3 and k.server.open_watches == 3, 5, "rewatched")
        time.sleep(0.3)
        assert k.server.count("list") == lists, "a relist: the watch restarted from a compacted resourceVersion"
        assert all(r.lists == 1 for r in inst.runtime.reflectors)


def test_api_errors_at_start_are_retried_never_fatal(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1")
    add_pods(k, "early")
    k.server.inject(verb="list", status=500, times=4)
    k.server.inject(verb="watch", status=503, times=2)
    start_scheduler(k.url, FakeScores(allow("n1")))
    wait_for(lambda: node_of(k, "early") == "n1", 10, "bound once the API recovered")


class _ScriptedKube:
    """The Kube wrapper's list/watch, scripted: `list_error` raises from list, `watch_events` are
    streamed by every watch, which then ends at once (as behind a proxy that closes watches)."""

    def __init__(self) -> None:
        self.list_error: Exception | None = None
        self.watch_events: list[tuple[str, dict]] = []
        self.lists = self.watches = 0

    def list(self, kind: str, field_selector: str = "") -> tuple[list[dict], str]:
        self.lists += 1
        if self.list_error is not None:
            raise self.list_error
        return [], "7"

    def watch(self, kind: str, field_selector: str, resource_version: str, *, timeout_s: float) -> Any:
        self.watches += 1
        kube = self

        class Stream:
            resource_version = "8"

            def __iter__(self) -> Any:
                return iter(list(kube.watch_events))

            def stop(self) -> None:
                pass

        return Stream()


def _run(target: Any) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    t = threading.Thread(target=target, args=(stop,), daemon=True)
    t.start()
    return t, stop


def test_watches_closed_at_once_do_not_make_a_hot_loop() -> None:
    kube = _ScriptedKube()
    r = Reflector(kube, ClusterCache(), NODE, "", min_interval_s=0.5)  # type: ignore[arg-type]
    t, stop = _run(r.run)
    time.sleep(1.2)
    stop.set()
    t.join(2)
    assert kube.lists == 1 and 2 <= kube.watches <= 3, f"{kube.watches} watches in 1.2 s"


def test_a_reflector_survives_a_bug_relists_with_backoff_and_reports_itself_unhealthy() -> None:
    kube = _ScriptedKube()
    cache = ClusterCache()
    kube.watch_events = [("ADDED", {"metadata": {"name": "n1"}, "status": "not a mapping"})]  # node_info fails
    r = Reflector(kube, cache, NODE, "", backoff_initial_s=0.05, backoff_max_s=0.1, min_interval_s=0.0,  # type: ignore[arg-type]
                  unhealthy_after_s=0.3)
    t, stop = _run(r.run)
    try:
        wait_for(lambda: kube.lists >= 3, 5, "relists after the bug")
        assert t.is_alive() and r.healthy(), "failing for less than unhealthy_after_s"
        kube.list_error = KubeError(None, "connection refused")
        wait_for(lambda: not r.healthy(), 5, "unhealthy after failing for 0.3 s")
        lists = kube.lists
        time.sleep(0.35)
        assert kube.lists - lists <= 5, "backoff between failed lists"
        kube.list_error, kube.watch_events = None, []
        wait_for(r.healthy, 5, "healthy again once a watch works")
    finally:
        stop.set()
        t.join(2)


def test_the_elector_survives_a_bug_in_a_renewal() -> None:
    class Broken:
        calls = 0

        def get_lease(self, namespace: str, name: str) -> dict:
            Broken.calls += 1
            raise ValueError("a bug")

    e = LeaderElector(Broken(), "ksense", "a", retry_period_s=0.05)  # type: ignore[arg-type]
    t, stop = _run(e.run)
    wait_for(lambda: Broken.calls >= 3, 5, "renewals go on after the bug")
    assert t.is_alive() and not e.is_leader()
    stop.set()
    t.join(2)


def test_not_ready_once_the_scheduler_threads_are_gone(kube_api: KubeAPI, start_scheduler) -> None:
    inst = start_scheduler(kube_api.url, FakeScores())
    assert inst.runtime.ready()
    inst.stop()
    assert not inst.runtime.ready()

"""scheduler.kube against the fake API server through the official client: paged lists with
field selectors, watches (events, resourceVersion, 410 → Gone, stop), bind outcomes, events,
the uid-guarded status patch, and leader election on a Lease (fake clock)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from scheduler.cache import BOUND_SELECTOR, pending_selector
from scheduler.kube import BOUND, CONFLICT, ERROR, PODS, Gone, Kube, KubeError
from scheduler.leader import LeaderElector
from tests.kubeapi import factories as f
from tests.kubeapi.fixtures import KubeAPI
from tests.scheduler.conftest import NS, add_nodes, add_pods, kube_for, wait_for


def test_list_pages_and_selectors(kube_api: KubeAPI) -> None:
    k = kube_api
    add_nodes(k, "n1")
    add_pods(k, *(f"p{i}" for i in range(7)))
    add_pods(k, "other", scheduler_name="default-scheduler")
    k.store.create("pods", f.pod("bound", node_name="n1", phase="Running"), NS)
    k.store.create("pods", f.pod("done", node_name="n1", phase="Succeeded"), NS)
    kube = kube_for(k.url)
    pending, rv = kube.list(PODS, pending_selector("fuzzy-scheduler"), page_size=3)
    assert sorted(p["metadata"]["name"] for p in pending) == [f"p{i}" for i in range(7)]
    assert rv == str(k.store.resource_version)
    assert k.server.count("list", "pods") == 3, "three pages"
    bound, _ = kube.list(PODS, BOUND_SELECTOR)
    assert [p["metadata"]["name"] for p in bound] == ["bound"]


def test_watch_streams_events_and_410_is_gone(kube_api: KubeAPI) -> None:
    k = kube_api
    add_nodes(k, "n1")  # resourceVersion "0" would mean "from now" and never expire
    kube = kube_for(k.url)
    _, rv = kube.list(PODS)
    stream = kube.watch(PODS, "", rv, timeout_s=5)
    seen: list[tuple[str, str]] = []

    def consume() -> None:
        for etype, obj in stream:
            # The position already includes the event being handled (a consumer that stops here resumes after it).
            assert stream.resource_version == obj["metadata"]["resourceVersion"]
            seen.append((etype, obj["metadata"]["name"]))

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    k.server.wait_for_watches(1)
    add_pods(k, "a")
    k.core.delete_namespaced_pod("a", NS)
    wait_for(lambda: len(seen) == 2, 5, "two events")
    assert seen == [("ADDED", "a"), ("DELETED", "a")]
    assert stream.resource_version == str(k.store.resource_version)
    stream.stop()
    t.join(2)
    assert not t.is_alive(), "stop() must end a blocked read"
    k.server.compact()
    with pytest.raises(Gone):
        list(kube.watch(PODS, "", rv, timeout_s=5))


def test_bind_outcomes(kube_api: KubeAPI) -> None:
    k = kube_api
    add_nodes(k, "n1")
    p = add_pods(k, "p")[0]
    kube = kube_for(k.url)
    uid = p["metadata"]["uid"]
    assert kube.bind(NS, "p", "wrong-uid", "n1").result == CONFLICT
    assert kube.bind(NS, "p", uid, "n1").result == BOUND
    again = kube.bind(NS, "p", uid, "n1")
    assert (again.result, again.status) == (CONFLICT, 409)
    assert kube.bind(NS, "missing", uid, "n1").status == 404
    k.server.inject(resource="pods/binding", status=500)
    add_pods(k, "q")
    failed = kube.bind(NS, "q", k.store.pod(NS, "q")["metadata"]["uid"], "n1")
    assert (failed.result, failed.status) == (ERROR, 500)
    k.server.inject(resource="pods/binding", reset=True)
    lost = kube.bind(NS, "q", k.store.pod(NS, "q")["metadata"]["uid"], "n1")
    assert (lost.result, lost.status) == (ERROR, None), "no answer: outcome unknown"


def test_event_created_once_and_status_patch_guarded_by_uid(kube_api: KubeAPI) -> None:
    k = kube_api
    p = add_pods(k, "p")[0]
    kube = kube_for(k.url)
    body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.abc", "namespace": NS},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": NS}, "reason": "X", "message": "m",
            "type": "Normal"}
    kube.create_event(NS, body)
    kube.create_event(NS, body)  # AlreadyExists: done, not an error
    assert len(k.store.events(NS)) == 1
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m"}
    kube.patch_pod_status(NS, "p", p["metadata"]["uid"], cond)
    assert k.store.pod(NS, "p")["status"]["conditions"][0]["message"] == "m"
    with pytest.raises(KubeError) as exc:
        kube.patch_pod_status(NS, "p", "another-pods-uid", cond)
    assert exc.value.status == 409


def test_leader_election_acquire_renew_expire_release(kube_api: KubeAPI) -> None:
    k = kube_api
    now = [100.0]

    def elector(identity: str) -> LeaderElector:
        return LeaderElector(kube_for(k.url), "ksense", identity, lease_duration_s=15, renew_deadline_s=10,
                             retry_period_s=2, clock=lambda: now[0], wall=lambda: 1.7e9 + now[0])

    a, b = elector("a"), elector("b")
    assert a.try_acquire_or_renew() and a.is_leader()
    assert k.store.lease("ksense", "fuzzy-scheduler")["spec"]["holderIdentity"] == "a"
    assert not b.try_acquire_or_renew(), "held by a"
    now[0] += 9
    assert a.try_acquire_or_renew(), "renewed"
    now[0] += 9.9
    assert a.is_leader()
    now[0] += 0.2
    assert not a.is_leader(), "past the renew deadline without renewal: stop binding"
    assert not b.try_acquire_or_renew(), "b first sees a's last renewal now: it waits a full lease from here"
    now[0] += 14.9
    assert not b.try_acquire_or_renew()
    now[0] += 0.2
    assert b.try_acquire_or_renew(), "unchanged for 15 s by b's own clock: expired"
    lease = k.store.lease("ksense", "fuzzy-scheduler")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew()
    b.release()
    assert not b.is_leader()
    assert k.store.lease("ksense", "fuzzy-scheduler")["spec"].get("holderIdentity") in (None, "")
    assert a.try_acquire_or_renew(), "a released lease is taken at once"


class _SlowLeaseRead:
    """The Kube wrapper, with a lease GET that takes `delay_s` of the fake clock."""

    def __init__(self, kube: Kube, now: list[float], delay_s: float):
        self._kube, self._now, self._delay = kube, now, delay_s

    def get_lease(self, namespace: str, name: str) -> dict:
        lease = self._kube.get_lease(namespace, name)
        self._now[0] += self._delay
        return lease

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)


def test_follower_times_expiry_from_after_its_read(kube_api: KubeAPI) -> None:
    """client-go's observedTime: the record was seen when the GET returned, not when it was sent.
    Timing from before a slow read would let the follower take the lease too early."""
    k = kube_api
    now = [100.0]
    a = LeaderElector(kube_for(k.url), "ksense", "a", lease_duration_s=15, renew_deadline_s=10,
                      clock=lambda: now[0], wall=lambda: 1.7e9 + now[0])
    b = LeaderElector(_SlowLeaseRead(kube_for(k.url), now, 5.0), "ksense", "b", lease_duration_s=15,  # type: ignore[arg-type]
                      renew_deadline_s=10, clock=lambda: now[0], wall=lambda: 1.7e9 + now[0])
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # sent at 100, a's record seen at 105
    now[0] = 115.5
    assert not b.try_acquire_or_renew(), "expiry counted from 105, when b saw the record: not before 120"
    now[0] = 120.5
    assert b.try_acquire_or_renew()


def test_remaining_leadership_counts_down_to_the_renew_deadline(kube_api: KubeAPI) -> None:
    now = [100.0]
    e = LeaderElector(kube_for(kube_api.url), "ksense", "a", lease_duration_s=15, renew_deadline_s=10,
                      clock=lambda: now[0])
    assert e.remaining() == 0.0
    assert e.try_acquire_or_renew()
    now[0] = 104.0
    assert e.remaining() == 6.0 and e.is_leader()
    now[0] = 110.0
    assert e.remaining() == 0.0 and not e.is_leader()


def test_lease_write_race_loses_cleanly(kube_api: KubeAPI) -> None:
    k = kube_api
    e = LeaderElector(kube_for(k.url), "ksense", "a")
    k.server.inject(resource="leases", verb="create", status=409)
    assert not e.try_acquire_or_renew(), "someone created it first"
    assert e.try_acquire_or_renew()
    k.server.inject(resource="leases", verb="update", status=409)
    assert not e.try_acquire_or_renew(), "resourceVersion conflict: not ours this round"

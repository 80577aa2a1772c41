"""A 20-node / 500-pod burst while another scheduler binds its own pods to the same nodes:
afterwards no node is overcommitted (requests of non-terminated pods ≤ allocatable for cpu,
memory and pods), no pod was bound twice, and every pod of ours is bound or says why not.

The other scheduler binds through the store in-process (the same `bind` the binding endpoint
runs, with the same watch events), checking capacity atomically under the store's lock, so it
never overcommits on its own. Two optimistic schedulers on shared nodes can still overcommit
one: ours decides on its watch view, the other binds in the milliseconds before our bind lands
(kube-scheduler has the same race with a second scheduler; the kubelet rejects the loser).
Seen here: the other's 300m bind landed 1.7 ms before ours on a node with 150m left. So the
other leaves room for one pod of ours — the largest — on every node it binds to: ours binds one
pod at a time, so whatever the other bound since our view, our one in-flight pod still fits,
and an overcommitted node can only mean that our scheduler missed the other's pods or its own.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict

from scheduler.core.pods import TERMINATED_PHASES, Resources, node_name, pod_requests
from scheduler.core.quantity import canonical
from tests.kubeapi import factories as f
from tests.kubeapi.fixtures import KubeAPI
from tests.scheduler.conftest import NS, FakeScores, add_nodes, allow, binding_requests, deny, wait_for

NODES = [f"node-{i:02d}" for i in range(20)]
OURS, THEIRS = 500, 120
OUR_CPU, OUR_MEMORY = ("100m", "200m", "250m", "500m"), ("64Mi", "128Mi", "256Mi", "512Mi")
#: Room the other scheduler leaves for our one in-flight bind (the module docstring).
IN_FLIGHT = Resources(max(canonical("cpu", c) for c in OUR_CPU), max(canonical("memory", m) for m in OUR_MEMORY),
                      0, 1)


def _usage(pods: list[dict]) -> dict[str, Resources]:
    used: dict[str, Resources] = defaultdict(Resources)
    for p in pods:
        if node_name(p) and p.get("status", {}).get("phase") not in TERMINATED_PHASES:
            used[node_name(p)] += pod_requests(p)
    return used


def _allocatable(k: KubeAPI) -> dict[str, Resources]:
    out = {}
    for node in k.store.nodes():
        a = node["status"]["allocatable"]
        out[node["metadata"]["name"]] = Resources(canonical("cpu", a["cpu"]), canonical("memory", a["memory"]), 0,
                                                  canonical("pods", a["pods"]))
    return out


def _other_scheduler(k: KubeAPI, names: list[str], stop: threading.Event, rng: random.Random) -> None:
    alloc = _allocatable(k)
    for name in names:
        if stop.is_set():
            return
        with k.store.cond:  # atomic check-and-bind: this scheduler never overcommits by itself
            pod = k.store.pod(NS, name)
            assert pod is not None
            used = _usage(k.store.pods())
            want = pod_requests(pod) + IN_FLIGHT
            fits = [n for n in NODES if (used.get(n, Resources()) + want).cpu <= alloc[n].cpu
                    and (used.get(n, Resources()) + want).memory <= alloc[n].memory
                    and (used.get(n, Resources()) + want).pods <= alloc[n].pods]
            if fits:
                k.store.bind(NS, name, rng.choice(fits), uid=pod["metadata"]["uid"])
        stop.wait(0.002)


def test_burst_with_a_second_scheduler_never_overcommits(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    rng = random.Random(7)
    add_nodes(k, *NODES, cpu="4", memory="8Gi", pods="22")
    scores = FakeScores({**allow(*NODES[2:]), **deny(*NODES[:2])})
    for i, n in enumerate(NODES[2:]):
        scores.set({**scores.fetch().records, n: allow(n, score=float(10 + i % 5))[n]})
    inst = start_scheduler(k.url, scores)
    theirs = [f"other-{i}" for i in range(THEIRS)]
    for name in theirs:
        k.store.create("pods", f.pod(name, scheduler_name="other", cpu="300m", memory="256Mi"), NS)
    stop = threading.Event()
    other = threading.Thread(target=_other_scheduler, args=(k, theirs, stop, rng), daemon=True)
    other.start()
    ours = []
    for i in range(OURS):  # created through the API while both schedulers run
        cpu, memory = rng.choice(OUR_CPU), rng.choice(OUR_MEMORY)
        k.core.create_namespaced_pod(NS, f.pod(f"burst-{i}", cpu=cpu, memory=memory))
        ours.append(f"burst-{i}")
        if i == 250:  # a few running pods finish: their capacity comes back
            for p in k.store.pods(NS):
                if p["metadata"]["name"].startswith("burst-") and node_name(p) and rng.random() < 0.2:
                    k.store.patch("pods", NS, p["metadata"]["name"], {"status": {"phase": "Succeeded"}},
                                  subresource="status")
    other.join(timeout=60)
    stop.set()

    def settled() -> bool:
        pods = {p["metadata"]["name"]: p for p in k.store.pods(NS)}
        return all(node_name(pods[n]) or any(c.get("type") == "PodScheduled" and c.get("status") == "False"
                                              for c in pods[n].get("status", {}).get("conditions") or [])
                   for n in ours)

    wait_for(settled, 60, "every pod of ours bound or marked unschedulable", poll_s=0.2)
    pods = k.store.pods(NS)
    used, alloc = _usage(pods), _allocatable(k)
    over = {n: (u, alloc[n]) for n, u in used.items()
            if u.cpu > alloc[n].cpu or u.memory > alloc[n].memory or u.pods > alloc[n].pods}
    assert over == {}, f"overcommitted nodes: {over}"
    ours_bound = [p for p in pods if p["metadata"]["name"].startswith("burst-") and node_name(p)]
    assert not any(node_name(p) in NODES[:2] for p in ours_bound), "denied nodes got pods"
    assert len(ours_bound) > 120, "the scheduler filled the nodes (cpu is the limit here)"
    assert any(node_name(p) in NODES[:2] for p in pods if p["metadata"]["name"].startswith("other-")), \
        "the other scheduler shared the nodes (and used the denied ones)"
    requests = binding_requests(k)
    assert len({name for name, _, _ in requests}) == len(requests), "a bind was tried twice for one pod"
    assert {(who, status) for _, who, status in requests} == {("test-a", 201)}
    assert inst.stats.binds()["error"] == 0

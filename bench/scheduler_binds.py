"""Scheduler bind throughput and API load, through the official client against the fake API server.

Setup (tests/kubeapi, in this process): 1,000 ready nodes, 2,000 pods for `fuzzy-scheduler`.

1. **Baseline — raw bind throughput**: a client loop posts one pods/binding per pod (official
   client, `_preload_content=False`, uid precondition), no watch, no scheduling. This is the
   ceiling the fake server and the client allow on this machine.
2. **ksense**: a full scheduler instance (three reflectors, leader election, the loop with all
   rate limits disabled, a static all-allow score source so the score backend is not measured)
   on a fresh server with the same cluster; pods are created after it is ready; timed from the
   first pod created to the last bound, so watch latency, filtering over 1,000 nodes, the
   assume cache, binds and `Scheduled` events are all inside.
3. **API load** during run 2, from the server's request counters: requests per bound pod by
   (verb, resource). Goal: ≤ 2 writes per pod (bind + event) and no LIST per pod.

Goals: ≥ 100 pods/s; ≤ 2 writes per pod; lists independent of the pod count. For reference, the
first prototype bound at most one pod per 10 s, made N sequential HTTPS calls per pod attempt
and listed every pod every cycle. Exits 0 when a goal is missed (the figures say so), non-zero
only when the harness fails. Run: .venv/bin/python -m bench.scheduler_binds [--nodes N --pods P]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable

from kubernetes import client  # the baseline's raw client loop; the product uses scheduler/kube.py

from scheduler.config import SchedulerConfig
from scheduler.core.filters import ScoreRecord
from scheduler.kube import Kube
from scheduler.loop import Runtime
from scheduler.scores import Scores, ScoreSource
from tests.kubeapi import KubeAPIServer, make_api_client
from tests.kubeapi import factories as f

GOAL_PODS_PER_S = 100.0
GOAL_WRITES_PER_POD = 2.0
NS = "default"


class StaticScores:
    """Every node allowed with a fixed score: the score backend is not what is measured here."""

    name = "static"

    def __init__(self, nodes: list[str]):
        self._scores = Scores({n: ScoreRecord(True, float(i % 50), True) for i, n in enumerate(nodes)})

    def fetch(self) -> Scores:
        return self._scores


def _cluster(server: KubeAPIServer, nodes: list[str]) -> None:
    for name in nodes:
        server.store.create("nodes", f.node(name, cpu="16", memory="64Gi", pods="110"))


def _create_pods(server: KubeAPIServer, count: int) -> list[dict]:
    return [server.store.create("pods", f.pod(f"p{i}", cpu="100m", memory="128Mi"), NS) for i in range(count)]


def baseline(nodes: list[str], pods: int) -> float:
    """Raw binds per second: a client loop posting pods/binding, round-robin over nodes."""
    with KubeAPIServer(history_limit=200_000) as server, make_api_client(server.url) as api:
        core = client.CoreV1Api(api)
        _cluster(server, nodes)
        created = _create_pods(server, pods)
        start = time.perf_counter()
        for i, pod in enumerate(created):
            meta = pod["metadata"]
            body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"], "uid": meta["uid"]},
                    "target": {"kind": "Node", "name": nodes[i % len(nodes)]}}
            core.create_namespaced_pod_binding(meta["name"], NS, body, _preload_content=False)
        return pods / (time.perf_counter() - start)


def ksense(
    nodes: list[str], pods: int, *, scores: ScoreSource | None = None, on_attempt: Callable[[float], None] | None = None
) -> tuple[float, dict[tuple[str, str], int], int, list[str]]:
    """(pods/s, request counts during the run, pods bound, the node of each bound pod). `scores`:
    the score source (default the all-allow StaticScores); `on_attempt` also gets each pod's
    decision time in seconds (bench/scheduler_binds_db keeps them raw for percentiles)."""
    cfg = SchedulerConfig(poll_s=0.0, max_per_cycle=0, placement_delay_s=0.0, score_source="scorer",
                          identity="bench", lease_duration_s=15.0, renew_deadline_s=10.0, retry_period_s=2.0)
    with KubeAPIServer(history_limit=200_000) as server:
        _cluster(server, nodes)
        kube = Kube(make_api_client(server.url), request_timeout_s=10.0)
        runtime = Runtime(cfg, kube=kube, scores=scores or StaticScores(nodes))
        if on_attempt is not None:
            observe = runtime.stats.attempt

            def attempt(seconds: float) -> None:
                on_attempt(seconds)
                observe(seconds)

            runtime.stats.attempt = attempt  # type: ignore[method-assign]
        stop = threading.Event()
        thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not (runtime.ready() and runtime.elector.is_leader()):
            if time.monotonic() > deadline:
                raise RuntimeError("scheduler not ready after 30 s")
            time.sleep(0.01)
        server.reset_counts()
        start = time.perf_counter()
        _create_pods(server, pods)
        deadline = time.monotonic() + 60
        while runtime.stats.binds()["bound"] < pods and time.monotonic() < deadline:
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        stop.set()
        thread.join(timeout=10)  # the last cycle finishes (its events) before the counts are read
        counts = dict(server.counts)
        placed = [p["spec"]["nodeName"] for p in server.store.pods(NS) if p["spec"].get("nodeName")]
        kube.close()
    return len(placed) / elapsed, counts, len(placed), placed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler_binds")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=2000)
    args = parser.parse_args(argv)
    nodes = [f"node-{i:04d}" for i in range(args.nodes)]
    print(f"cluster: {args.nodes} nodes, {args.pods} pods (fake API server over HTTP, official client)")
    raw = baseline(nodes, args.pods)
    print(f"baseline  raw binds (client loop, no scheduling):   {raw:8.1f} pods/s")
    rate, counts, bound, _ = ksense(nodes, args.pods)
    goal = "PASS" if rate >= GOAL_PODS_PER_S and bound == args.pods else "MISS"
    print(f"ksense    scheduled + bound + event, limits off:   {rate:8.1f} pods/s  ({bound}/{args.pods} bound)")
    print(f"ratio     ksense / raw binds:                      {rate / raw:8.2f}")
    print(f"goal      ≥ {GOAL_PODS_PER_S:g} pods/s: {goal}")
    print("API requests during the run, per bound pod:")
    per = max(bound, 1)
    for (verb, resource), count in sorted(counts.items()):
        print(f"  {verb:>8} {resource:<14} {count:7d}  {count / per:6.3f}/pod")
    # Lease renewals are a fixed cost per 2 s, not per pod: shown above, not counted per pod.
    writes = sum(c for (v, r), c in counts.items() if v in ("create", "update", "patch", "delete") and r != "leases")
    lists = sum(c for (v, _), c in counts.items() if v == "list")
    wgoal = "PASS" if writes / per <= GOAL_WRITES_PER_POD else "MISS"
    print(f"pod writes per pod (binding + events + status): {writes / per:.3f} (goal ≤ {GOAL_WRITES_PER_POD:g}: "
          f"{wgoal}); lists during the run: {lists} (none per pod: {'PASS' if lists < 10 else 'MISS'})")
    print("prototype for reference: ≤ 0.1 pods/s (one bind per 10 s), a LIST of every pod every cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

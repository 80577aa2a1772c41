"""Leader election between two scheduler replicas on the fake API server's Lease: only the
leader binds, a crashed leader is replaced after the lease expires, a stopped one hands over at
once, a leader that cannot renew stops binding, and no pod is ever bound twice (checked on the
server's binding history)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.kubeapi.fixtures import KubeAPI
from tests.scheduler.conftest import (
    FakeScores,
    add_nodes,
    add_pods,
    allow,
    assert_one_binder_at_a_time,
    binding_requests,
    node_of,
    wait_for,
)
from tests.support import REPO, free_port

PODS = 60


def _create_slowly(k: KubeAPI, names: list[str], gap_s: float) -> threading.Thread:
    def run() -> None:
        for name in names:
            add_pods(k, name)
            time.sleep(gap_s)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _failover(k: KubeAPI, start_scheduler, *, release: bool) -> float:
    add_nodes(k, "n1", "n2", "n3", cpu="64", pods="500")
    scores = FakeScores(allow("n1", "n2", "n3"))
    a = start_scheduler(k.url, scores, identity="a", release=release)
    b = start_scheduler(k.url, scores, identity="b", wait_leader=False)
    assert not b.runtime.elector.is_leader()
    names = [f"p{i}" for i in range(PODS)]
    creator = _create_slowly(k, names, 0.03)
    wait_for(lambda: a.stats.binds()["bound"] >= PODS // 3, 10, "the leader binding")
    stopped = time.monotonic()
    a.stop()
    wait_for(b.runtime.elector.is_leader, 10, "the other replica taking over")
    takeover = time.monotonic() - stopped
    creator.join()
    wait_for(lambda: all(node_of(k, n) for n in names), 15, "every pod bound")
    # Counted once answered; the server records a request just before its answer.
    wait_for(lambda: a.stats.binds()["bound"] + b.stats.binds()["bound"] == PODS, 5, "bind counters")
    requests = binding_requests(k)
    assert sorted(name for name, _, _ in requests) == sorted(names), "a pod bound twice, or a bind tried twice"
    assert {status for _, _, status in requests} == {201}
    assert_one_binder_at_a_time(k, ["a", "b"])
    assert b.stats.binds()["bound"] > 0
    assert a.stats.binds()["conflict"] + b.stats.binds()["conflict"] == 0, "the replicas raced"
    lease = k.store.lease("ksense", "fuzzy-scheduler")
    assert lease["spec"]["holderIdentity"] == "b"
    return takeover


def test_crashed_leader_is_replaced_after_the_lease_expires(kube_api: KubeAPI, start_scheduler) -> None:
    takeover = _failover(kube_api, start_scheduler, release=False)
    assert 2.0 <= takeover <= 6.0, f"lease duration is 3 s; took over after {takeover:.1f}s"


def test_stopped_leader_releases_the_lease_and_hands_over_at_once(kube_api: KubeAPI, start_scheduler) -> None:
    takeover = _failover(kube_api, start_scheduler, release=True)
    assert takeover <= 1.5, f"retry period is 0.3 s; took over after {takeover:.1f}s"


def test_leader_that_cannot_renew_stops_binding(kube_api: KubeAPI, start_scheduler) -> None:
    k = kube_api
    add_nodes(k, "n1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")))
    fault = k.server.inject(resource="leases", status=500, times=None)
    wait_for(lambda: not inst.runtime.elector.is_leader(), 5, "leadership lost within the renew deadline")
    add_pods(k, "late")
    time.sleep(1.0)
    assert node_of(k, "late") == "", "a replica that lost its lease bound a pod"
    assert fault.hits > 0
    k.server.clear_faults()
    wait_for(inst.runtime.elector.is_leader, 5, "leadership regained")
    wait_for(lambda: node_of(k, "late") == "n1", 5, "bound once leading again")


def test_a_bind_never_outlives_the_leadership_it_was_sent_under(kube_api: KubeAPI, start_scheduler) -> None:
    """The bind's timeout is capped at the leadership time left: a replica that stops renewing gives
    up on its bind by its renew deadline (2 s), not after the 5 s request timeout, so the other
    replica (lease 3 s) cannot start binding while ours is still waiting for an answer."""
    k = kube_api
    add_nodes(k, "n1")
    inst = start_scheduler(k.url, FakeScores(allow("n1")), request_timeout_s=5.0)
    k.server.inject(resource="leases", status=500, times=None)  # renewals fail from now on
    k.server.inject(resource="pods/binding", delay_s=4.0)  # the answer would come after 4 s
    add_pods(k, "slow")
    wait_for(lambda: inst.stats.binds()["error"] == 1, 2.5, "the bind abandoned at the renew deadline")
    assert inst.stats.binds()["bound"] == 0
    k.server.clear_faults()


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters:\n- name: fake\n  cluster:\n    server: {url}\n"
        "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n"
        "users:\n- name: fake\n  user:\n    token: test\n")
    return path


def test_process_serves_metrics_and_hands_over_on_sigterm(kube_api: KubeAPI, tmp_path: Path) -> None:
    """`python -m scheduler` as two processes: /metrics and /readyz, binds by the leader, and a
    SIGTERM that releases the lease so the other process leads at once."""
    from tests.scheduler.test_scores import TextServer  # the /score answer of a fake scorer

    k = kube_api
    add_nodes(k, "n1")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    scorer = TextServer(lambda: json.dumps({"time": stamp, "source": "local", "nodes": [
        {"node": "n1", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "decision": "allow",
         "score": 10.0}]}), "application/json")
    env = {key: v for key, v in os.environ.items() if not key.startswith(("KSENSE_", "FUZZY_"))}
    env.update({"KUBECONFIG": str(_kubeconfig(tmp_path / "kubeconfig", k.url)), "FUZZY_SCORE_SOURCE": "scorer",
                "FUZZY_SCORER_URL": f"http://127.0.0.1:{scorer.port}", "FUZZY_SCHEDULER_POLL_S": "1",
                "FUZZY_SCHEDULER_MAX_PER_CYCLE": "0", "FUZZY_SCHEDULER_PLACEMENT_DELAY_S": "0"})
    procs = {}
    try:
        for name in ("a", "b"):
            port = free_port()
            args = [sys.executable, "-m", "scheduler", "--identity", name, "--metrics-host", "127.0.0.1",
                    "--metrics-port", str(port), "--lease-duration", "10", "--renew-deadline", "6",
                    "--retry-period", "0.3"]
            with open(tmp_path / f"{name}.log", "wb") as log:
                procs[name] = (subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), port)
            if name == "a":
                wait_for(lambda: (k.store.lease("ksense", "fuzzy-scheduler") or {}).get("spec", {})
                         .get("holderIdentity") == "a", 20, "a leading")
        metrics = f"http://127.0.0.1:{procs['a'][1]}"
        wait_for(lambda: _get(metrics + "/readyz") == 200, 20, "a ready")
        add_pods(k, "first")
        wait_for(lambda: node_of(k, "first") == "n1", 10, "bound by a")
        # Counted once the bind's answer is back, which is after the server bound the pod.
        wait_for(lambda: 'ksense_scheduler_binds_total{result="bound"} 1.0' in requests.get(
            metrics + "/metrics", timeout=2).text, 5, "a's bind counted")
        assert "ksense_scheduler_leader 1.0" in requests.get(metrics + "/metrics", timeout=2).text
        wait_for(lambda: _get(f"http://127.0.0.1:{procs['b'][1]}/readyz") == 200, 20, "b ready")
        assert "ksense_scheduler_leader 0.0" in requests.get(f"http://127.0.0.1:{procs['b'][1]}/metrics",
                                                             timeout=2).text
        sent = time.monotonic()
        procs["a"][0].send_signal(signal.SIGTERM)
        assert procs["a"][0].wait(10) == 0
        wait_for(lambda: (k.store.lease("ksense", "fuzzy-scheduler") or {}).get("spec", {})
                 .get("holderIdentity") == "b", 5, "b leading")
        assert time.monotonic() - sent < 3.0, "handover at once, not after the 10 s lease"
        add_pods(k, "second")
        wait_for(lambda: node_of(k, "second") == "n1", 10, "bound by b")
        wait_for(lambda: len(binding_requests(k)) == 2, 5, "the bind recorded (just before its answer)")
        assert binding_requests(k) == [("first", "a", 201), ("second", "b", 201)]
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        scorer.stop()


def _get(url: str) -> int:
    try:
        return requests.get(url, timeout=1).status_code
    except requests.RequestException:
        return 0

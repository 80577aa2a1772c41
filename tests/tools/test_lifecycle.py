"""`python -m tools.lifecycle` against tests/kubeapi's API server through the official client (docs/tools.md).

Short lifetimes (1-2 s, recreated 0.5 s after deletion) stand in for 60-180 s and 15 s. The fake
server runs no scheduler or kubelet: a helper thread binds two of the pods and marks them Running,
so the status CSV shows both Pending and Running pods.
"""

from __future__ import annotations

import csv
import io
import itertools
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import ApiError
from tests.kubeapi import factories as f
from tests.kubeapi.fixtures import KubeAPI, running_kube_api
from tools import lifecycle
from tools.lifecycle import MANAGED_BY, MANAGED_BY_LABEL, STATUS_COLUMNS, LifecycleError

REPO = Path(__file__).resolve().parents[2]
NS = "sa"
NAMES = [f"feedback-inference-{i}" for i in range(2, 12)]
FAST = ["--min-lifetime", "1", "--max-lifetime", "2", "--recreate-after", "0.5", "--quiet"]


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {url}
users:
- name: tester
  user: {{}}
contexts:
- name: fake
  context:
    cluster: fake
    user: tester
current-context: fake
""")
    return path


@pytest.fixture
def kubeconfig(kube_api: KubeAPI, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", kube_api.url)



class Watcher:
    """While the tool runs: the most pod creations in flight at the server, the pods seen, and
    a stand-in kubelet that binds `bind` pods to node-1 and reports them Running."""

    def __init__(self, k: KubeAPI, bind: tuple[str, ...] = ()):
        self.k, self.bind = k, bind
        self.max_in_flight = 0
        self.seen: dict[str, dict] = {}
        self.bound = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _in_flight(self) -> int:
        # Arrivals first, then answers: never more than the true number in flight.
        arrived = self.k.server.count("create", "pods")
        answered = sum(1 for r in list(self.k.server.requests) if r.verb == "create" and r.resource == "pods")
        return arrived - answered

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.max_in_flight = max(self.max_in_flight, self._in_flight())
            for pod in self.k.store.pods():
                self.seen[pod["metadata"]["uid"]] = pod
                name = pod["metadata"]["name"]
                if name in self.bind and not pod["spec"].get("nodeName"):
                    try:
                        self.k.store.bind(NS, name, "node-1", uid=pod["metadata"]["uid"])
                        self.k.core.patch_namespaced_pod_status(name, NS, {"status": {"phase": "Running"}})
                        self.bound += 1
                    except (ApiError, ApiException):
                        pass  # deleted in between


def read_status(path: Path) -> tuple[list[str], dict[str, list[dict]]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        ticks: dict[str, list[dict]] = defaultdict(list)
        for row in reader:
            ticks[row[0]].append(dict(zip(header, row, strict=True)))
    return header, ticks


def test_pods_come_and_go_two_creations_at_a_time_with_a_status_csv(kube_api, kubeconfig, tmp_path):
    kube_api.server.inject(verb="create", resource="pods", delay_s=0.15, times=None)  # slow creations overlap
    status = tmp_path / "status.csv"
    out = io.StringIO()
    started = time.monotonic()
    with Watcher(kube_api, bind=(NAMES[0], NAMES[1])) as w:
        rc = lifecycle.run(["--kubeconfig", str(kubeconfig), "--no-services", "--duration", "7", "--seed", "7",
                            "--status-csv", str(status), "--status-period", "0.5", *FAST], out=out)
    elapsed = time.monotonic() - started
    assert rc == 0, out.getvalue()
    assert elapsed < 12

    # At most two creations in flight at the server, and the limit was reached.
    assert w.max_in_flight == 2
    assert "at most 2 creations at once" in out.getvalue()

    # The pods: right names, namespace, scheduler, labels, small requests.
    assert {p["metadata"]["name"] for p in w.seen.values()} == set(NAMES)
    for pod in w.seen.values():
        name = pod["metadata"]["name"]
        assert pod["metadata"]["namespace"] == NS
        assert pod["spec"]["schedulerName"] == "fuzzy-scheduler"
        assert pod["metadata"]["labels"] == {"app": name, MANAGED_BY_LABEL: MANAGED_BY}
        (container,) = pod["spec"]["containers"]
        assert container["resources"]["requests"] == {"cpu": "50m", "memory": "32Mi"}

    # Deleted and created again: every name several times; nothing left at the end.
    history = kube_api.store.history("pods")
    added = Counter(name for _, _, kind, ns, name in history if kind == "ADDED" and ns == NS)
    deleted = Counter(name for _, _, kind, ns, name in history if kind == "DELETED" and ns == NS)
    assert set(added) == set(NAMES)
    assert min(added.values()) >= 2, added
    assert added == deleted
    assert kube_api.store.pods() == []
    assert w.bound >= 2

    # The status CSV: 10 rows every 0.5 s.
    header, ticks = read_status(status)
    assert tuple(header) == STATUS_COLUMNS
    times = sorted(ticks)
    assert 11 <= len(times) <= 16, times
    for t in times:
        assert sorted(r["Pod"] for r in ticks[t]) == sorted(NAMES)
    stamps = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S.%f") for t in times[:-1]]  # the last one is the final row
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert all(0.3 <= g <= 0.8 for g in gaps), gaps
    rows = [r for t in times for r in ticks[t]]
    assert {r["State"] for r in ticks[times[-1]]} == {"stopped"}
    running = [r for r in rows if r["Phase"] == "Running"]
    assert running and {r["Pod"] for r in running} <= {NAMES[0], NAMES[1]}
    assert {r["Node"] for r in running} == {"node-1"}
    assert all(float(r["Pending_s"]) <= float(r["Age_s"]) for r in running)
    pending = [r for r in rows if r["Phase"] == "Pending"]
    assert {r["Pod"] for r in pending} >= set(NAMES[2:])
    assert all(r["Node"] == "" and r["Pending_s"] == r["Age_s"] for r in pending if r["Pod"] in NAMES[2:])
    assert max(int(r["Recreations"]) for r in rows) >= 2
    # --seed: the first lifetime of each pod is the slot's first draw.
    first = {r["Pod"]: r["Lifetime_s"] for r in rows if r["Recreations"] == "0" and r["Lifetime_s"]}
    assert first["feedback-inference-2"] == f"{random.Random('7:2').uniform(1, 2):.1f}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_it_and_deletes_its_pods(kube_api, kubeconfig, tmp_path, signum):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.lifecycle", "--kubeconfig", str(kubeconfig), "--no-services",
         "--min-lifetime", "60", "--max-lifetime", "60", "--status-csv", str(tmp_path / "s.csv")],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while len(kube_api.store.pods(NS)) < len(NAMES):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the pods were not created"
            time.sleep(0.05)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert f"{signal.Signals(signum).name}, stopping and cleaning up" in stderr
    assert "Traceback" not in stderr
    assert "lifecycle: stopped; created 10 pods" in stdout
    assert kube_api.store.pods() == []


def test_foreign_pod_refused_and_leftovers_replaced(kube_api, kubeconfig, tmp_path):
    kube_api.store.create("pods", f.pod(NAMES[3], NS))  # someone else's pod with one of our names
    with pytest.raises(LifecycleError, match=rf"pod {NS}/{NAMES[3]}: not created by this tool"):
        lifecycle.run(["--kubeconfig", str(kubeconfig), "--no-services", "--duration", "1", "--status-csv", ""])
    assert kube_api.server.count("create", "pods") == 0
    kube_api.store.delete("pods", NS, NAMES[3])

    leftover = kube_api.store.create("pods", f.pod(NAMES[0], NS, labels={"app": NAMES[0],
                                                                          MANAGED_BY_LABEL: MANAGED_BY}))
    other = kube_api.store.create("pods", f.pod("unrelated", NS))
    rc = lifecycle.run(["--kubeconfig", str(kubeconfig), "--no-services", "--duration", "1.5", "--status-csv", "",
                        *FAST], out=io.StringIO())
    assert rc == 0
    history = kube_api.store.history("pods")
    assert [kind for _, _, kind, _, name in history if name == NAMES[0]][:3] == ["ADDED", "DELETED", "ADDED"]
    assert [p["metadata"]["uid"] for p in kube_api.store.pods()] == [other["metadata"]["uid"]]  # only that one
    assert leftover["metadata"]["uid"] != other["metadata"]["uid"]


def test_a_create_whose_answer_is_lost_is_adopted_not_retried_forever(kube_api, kubeconfig, caplog):
    fault = kube_api.server.inject(verb="create", resource="pods", delay_s=1.0)  # created after the client gave up
    out = io.StringIO()
    with caplog.at_level("INFO", logger="ksense.lifecycle"):
        rc = lifecycle.run(["--kubeconfig", str(kubeconfig), "--no-services", "--duration", "5", "--status-csv", "",
                            "--request-timeout", "0.5", *FAST], out=out)
    assert rc == 0
    assert fault.hits == 1
    assert "event=pod_adopted" in caplog.text
    assert "errors 1," in out.getvalue()  # the timeout; the 409 that followed was resolved by adoption
    added = Counter(name for _, _, kind, _, name in kube_api.store.history("pods") if kind == "ADDED")
    assert min(added[n] for n in NAMES) >= 2, added
    assert kube_api.store.pods() == []


def test_bad_options_and_unreachable_api(tmp_path):
    with pytest.raises(LifecycleError, match="--min-lifetime 5 > --max-lifetime 2"):
        lifecycle.parse_args(["--min-lifetime", "5", "--max-lifetime", "2"])
    with pytest.raises(LifecycleError, match="--max-concurrent-creations 0"):
        lifecycle.parse_args(["--max-concurrent-creations", "0"])
    with pytest.raises(LifecycleError, match="no usable Kubernetes configuration"):
        lifecycle.run(["--kubeconfig", str(tmp_path / "missing")])
    with running_kube_api() as k:
        url = k.url  # a port that nothing listens on once the server stopped
    kubeconfig = write_kubeconfig(tmp_path / "kc", url)
    with pytest.raises(LifecycleError, match="Kubernetes API unreachable at"):
        lifecycle.run(["--kubeconfig", str(kubeconfig), "--no-services", "--request-timeout", "2"])


def test_manifests():
    cfg = lifecycle.Config()
    for i, name in zip(range(2, 12), NAMES, strict=True):
        pod = lifecycle.pod_manifest(cfg, i)
        svc = lifecycle.service_manifest(cfg, i)
        assert pod["metadata"]["name"] == svc["metadata"]["name"] == name
        assert pod["metadata"]["namespace"] == svc["metadata"]["namespace"] == "sa"
        assert pod["spec"]["schedulerName"] == "fuzzy-scheduler"
        assert pod["metadata"]["labels"]["app"] == name
        assert svc["spec"]["type"] == "NodePort"
        assert svc["spec"]["selector"] == {"app": name}
        (port,) = svc["spec"]["ports"]
        assert port["nodePort"] == 32000 + i
        assert port["targetPort"] == pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    # The configured values reach the objects (and they deserialise with the official client).
    body = client.ApiClient()._ApiClient__deserialize(lifecycle.service_manifest(cfg, 2), "V1Service")
    assert body.spec.ports[0].node_port == 32002


def test_services_created_once_kept_or_deleted(kube_api, kubeconfig, tmp_path):
    """The NodePort services on the fake API server: created once each, kept or deleted."""
    args = ["--kubeconfig", str(kubeconfig), "--duration", "3", "--status-csv", "", *FAST]

    assert lifecycle.run(args, out=io.StringIO()) == 0
    services = {s.metadata.name: s for s in kube_api.core.list_namespaced_service(NS).items}
    assert set(services) == set(NAMES)  # kept without --delete-services
    for i, name in zip(range(2, 12), NAMES, strict=True):
        spec = services[name].spec
        assert spec.type == "NodePort"
        assert spec.selector == {"app": name}
        assert [p.node_port for p in spec.ports] == [32000 + i]
    assert kube_api.server.count("create", "services") == len(NAMES)  # once each, not per pod
    assert kube_api.store.pods() == []

    assert lifecycle.run([*args, "--delete-services"], out=io.StringIO()) == 0  # adopts its own, then deletes
    assert kube_api.core.list_namespaced_service(NS).items == []
    assert kube_api.store.pods() == []


def test_foreign_service_refused(kube_api):
    cfg, _ = lifecycle.parse_args(["--duration", "1", "--status-csv", ""])
    lc = lifecycle.Lifecycle(cfg, kube_api.api_client, out=io.StringIO())
    foreign = {"metadata": {"name": NAMES[9], "namespace": NS},
               "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 32011}]}}
    kube_api.core.create_namespaced_service(NS, foreign)
    with pytest.raises(LifecycleError, match=rf"service {NS}/{NAMES[9]}: not created by this tool"):
        lc.run()
    assert kube_api.server.count("create", "pods") == 0

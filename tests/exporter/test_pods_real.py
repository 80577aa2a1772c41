"""Per-pod attribution against the real kernel: a kubepods-like cgroup v2 tree with a pinned CPU
hog in one pod and a latency-sensitive task in another on the same CPU.

The exporter test runs the real entry point (it gives up root, then keeps writing the kernel's
pod table through its mapping) and reads /metrics and pod_metrics.csv; the bound test drives the
tracker on a real probe with room for fewer pods than the tree holds.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from common import names
from exporter.core import pods as core
from tests.exporter.podtree import PodTree
from tests.exporter.test_exporter_process import read_port, scrape, start
from tests.exporter.test_exporter_process import stop as _stop
from tests.support import wait_for

pytestmark = pytest.mark.real

CPU = 1 if (os.cpu_count() or 1) > 1 else 0
HOG = f"import os\nos.sched_setaffinity(0, {{{CPU}}})\nwhile True:\n    pass\n"
# Sleeps 0.5 ms and wakes: every wakeup waits behind the hog (a latency-sensitive task).
VICTIM = f"import os, time\nos.sched_setaffinity(0, {{{CPU}}})\nwhile True:\n    time.sleep(0.0005)\n"
IDLE = "import time\nwhile True:\n    time.sleep(0.05)\n"


@pytest.fixture
def tree(need_ebpf):
    t = PodTree()
    yield t
    t.close()


def stop(proc) -> None:
    """SIGTERM, wait, and close the pipes start() opened (an unclosed pipe is an error)."""
    try:
        _stop(proc)
    finally:
        proc.stdout.close()
        proc.stderr.close()


def _value(text: str, family: str, uid: str) -> float | None:
    m = re.search(rf'^{family}{{[^}}]*pod_uid="{uid}"[^}}]*}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def _gauge(text: str, family: str, extra: str = "") -> float | None:
    m = re.search(rf'^{family}{{[^}}]*{extra}[^}}]*}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


@pytest.fixture
def out_dir():
    """A directory nobody can reach: the exporter writes its CSVs as nobody once it gave up
    root, and pytest's tmp_path is root's alone."""
    d = Path(tempfile.mkdtemp(prefix="ksense-pods-"))
    d.chmod(0o755)
    yield d / "out"
    shutil.rmtree(d)


def test_victim_and_aggressor_under_their_uids_and_a_removed_pod_leaves_no_entry(tree, out_dir, tmp_path):
    aggressor, _, a_scope = tree.add_pod(driver="systemd", qos="burstable")
    victim, _, v_scope = tree.add_pod(driver="systemd", qos="besteffort")
    gone, gone_pod, gone_scope = tree.add_pod(driver="cgroupfs", qos="burstable")
    tree.run_in(a_scope, HOG)
    tree.run_in(v_scope, VICTIM)
    idler = tree.run_in(gone_scope, IDLE)
    csv_path = out_dir / "kernel_metrics.csv"
    proc = start(["--port", "0", "--host", "127.0.0.1"], {
        "KSENSE_SOURCE": "ebpf", "KSENSE_CGROUP_ROOT": str(tree.root), "KSENSE_METRICS_CSV": str(csv_path),
        "KSENSE_STATE_DIR": str(tmp_path / "state"), "KSENSE_POD_TOP_K": "5",
    })
    try:
        port = read_port(proc)
        wait_for(lambda: (_value(scrape(port), "ksense_pod_runqueue_wait_seconds_sum", victim) or 0) > 0.05
                 and (_value(scrape(port), "ksense_pod_cpu_seconds_total", aggressor) or 0) > 0.5,
                 30, "the victim's wait and the aggressor's CPU")
        text = scrape(port)
        # The victim waits far more than the hog (which only waits when the victim runs).
        assert _value(text, "ksense_pod_runqueue_wait_seconds_count", victim) > 100
        assert _value(text, "ksense_pod_cpu_seconds_total", aggressor) > 10 * _value(
            text, "ksense_pod_cpu_seconds_total", victim)
        assert _gauge(text, "ksense_pods_tracked") == 3
        entries = _gauge(text, "ksense_bpf_map_entries", 'map="pod_keys"')
        assert entries == 6  # three pods, each its directory and one scope

        rows = wait_for(lambda: _pod_rows(csv_path.with_name(names.POD_METRICS_CSV_NAME)), 10, "pod rows")
        with open(csv_path.with_name(names.POD_METRICS_CSV_NAME), newline="") as f:
            assert next(csv.reader(f)) == list(names.POD_METRICS_COLUMNS)
        by_uid = {}
        for r in rows:
            by_uid.setdefault(r["PodUID"], []).append(r)
        assert {aggressor, victim, gone} <= set(by_uid)
        assert any(int(r["SchedLat_Count"]) > 50 and float(r["SchedLat_Total_ms"]) > 5 for r in by_uid[victim])
        # CPUUtil is a share of the node: the hog holds most of one CPU it shares with the victim.
        cpu = {uid: max((float(r["CPUUtil"]) for r in by_uid[uid] if r["CPUUtil"]), default=0.0)
               for uid in (aggressor, victim)}
        assert cpu[aggressor] > 25 / (os.cpu_count() or 1) and cpu[aggressor] > 3 * cpu[victim], cpu
        assert all(r["Level"] == "pod" and r["CgroupID"].isdigit() for r in rows)

        idler.kill()
        idler.wait()
        tree.remove(gone_pod)
        wait_for(lambda: _gauge(scrape(port), "ksense_pods_tracked") == 2, 5, "the removed pod to be dropped")
        text = scrape(port)
        assert _gauge(text, "ksense_bpf_map_entries", 'map="pod_keys"') == 4
        assert f'pod_uid="{gone}"' not in text
    finally:
        stop(proc)
    assert proc.returncode == 0


def _pod_rows(path: Path) -> list[dict[str, str]] | None:
    if not path.exists():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows if len({r["PodUID"] for r in rows}) >= 3 and len(rows) >= 9 else None


def test_more_pods_than_the_bound_are_counted_and_freed_room_is_reused(tree):
    from exporter.bpf import loader
    from exporter.pods.tracker import PodTracker

    probe = loader.load(pods=loader.PodMaps(pods=2, cgroup_slots=32))
    try:
        made = [tree.add_pod() for _ in range(3)]
        tracker = PodTracker(probe, tree.root, node="n", top_k=1)
        report = tracker.tick(0.0, _now())
        assert (report.tracked, report.capacity, report.overflows) == (2, 2, 1)
        assert len(report.rows) == 2
        keys = probe.pod_keys()
        live = int(np.count_nonzero((keys != 0) & (keys != core.TOMBSTONE)))
        assert live == report.cgroup_entries == 4
        # The pod left out gets the room a removed pod frees, at the next rescan.
        untracked = next(uid for uid, _, _ in made if uid not in tracker.table.slot_of)
        first = next(m for m in made if m[0] in tracker.table.slot_of)
        tree.remove(first[1])
        report = tracker.tick(20.0, _now())
        assert set(tracker.table.slot_of) == {uid for uid, _, _ in made if uid != first[0]}
        assert untracked in tracker.table.slot_of and report.overflows == 1
        live = int(np.count_nonzero((keys != 0) & (keys != core.TOMBSTONE)))
        assert live == report.cgroup_entries == 4
        tracker.close()
        assert int(np.count_nonzero((keys != 0) & (keys != core.TOMBSTONE))) == 0
    finally:
        probe.close()


def _now():
    from datetime import datetime

    return datetime.now()


def test_names_from_the_api_after_root_is_given_up_and_uid_only_when_it_goes(tree, out_dir, tmp_path):
    """The fake API server lists two pods on this node whose cgroups the tree holds: their
    namespace and name label /metrics and fill pod_metrics.csv. The token file is root's alone
    (0600) and the exporter becomes nobody: it presents the token it read before. A pod deleted
    in the API loses its name; the API gone, metrics go on and the gauge says names are not
    in step."""
    from tests.kubeapi import factories
    from tests.kubeapi.server import KubeAPIServer

    token = tmp_path / "token"
    token.write_text("tok-root-only")
    token.chmod(0o600)
    with KubeAPIServer() as api:
        made = {}
        for ns, name in (("shop", "checkout"), ("batch", "nightly")):
            obj = api.store.create("pods", factories.pod(name, ns, node_name="node-a", phase="Running"))
            uid = obj["metadata"]["uid"]
            _, _, scope = tree.add_pod(uid=uid)
            tree.run_in(scope, IDLE)
            made[name] = uid
        api.store.create("pods", factories.pod("elsewhere", "shop", node_name="node-b", phase="Running"))
        csv_path = out_dir / "kernel_metrics.csv"
        proc = start(["--port", "0", "--host", "127.0.0.1"], {
            "KSENSE_SOURCE": "ebpf", "KSENSE_CGROUP_ROOT": str(tree.root), "KSENSE_METRICS_CSV": str(csv_path),
            "KSENSE_STATE_DIR": str(tmp_path / "state"), "KSENSE_NODE_NAME": "node-a",
            "KSENSE_KUBE_API": api.url, "KSENSE_KUBE_TOKEN_FILE": str(token),
        })
        try:
            port = read_port(proc)
            # (the exposition sorts labels: pod_name, pod_namespace, pod_uid)
            checkout = f'pod_name="checkout",pod_namespace="shop",pod_uid="{made["checkout"]}"'
            nightly = f'pod_name="nightly",pod_namespace="batch",pod_uid="{made["nightly"]}"'
            wait_for(lambda: checkout in (t := scrape(port)) and nightly in t, 20, "the pods' names on /metrics")
            assert _gauge(scrape(port), "ksense_pod_names_available") == 1
            rows = wait_for(lambda: _named_rows(csv_path.with_name(names.POD_METRICS_CSV_NAME)), 10, "named rows")
            assert {(r["PodNamespace"], r["PodName"], r["PodUID"]) for r in rows} >= {
                ("shop", "checkout", made["checkout"]), ("batch", "nightly", made["nightly"])}
            sent = [r for r in api.requests if r.resource == "pods"]
            assert sent and {r.authorization for r in sent} == {"Bearer tok-root-only"}
            assert {r.user_agent for r in sent} == {"ksense-exporter"}

            api.store.delete("pods", "batch", "nightly")
            unnamed = f'pod_name="",pod_namespace="",pod_uid="{made["nightly"]}"'
            wait_for(lambda: unnamed in scrape(port), 10, "the deleted pod's name to go")

            api.stop()
            wait_for(lambda: _gauge(scrape(port), "ksense_pod_names_available") == 0, 10, "names unavailable")
            before = _value(scrape(port), "ksense_pod_runqueue_wait_seconds_count", made["checkout"])
            wait_for(lambda: _value(scrape(port), "ksense_pod_runqueue_wait_seconds_count", made["checkout"]) > before,
                     10, "metrics to keep flowing without the API")
            assert checkout in scrape(port)  # a uid's name never changes: kept
        finally:
            stop(proc)
    assert proc.returncode == 0


def _named_rows(path: Path) -> list[dict[str, str]] | None:
    if not path.exists():
        return None
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["PodName"]]
    return rows if len({r["PodUID"] for r in rows}) >= 2 else None

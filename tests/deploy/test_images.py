"""The images, built by `make images` and run by a real container runtime (podman + runc) as the
manifests say: each workload's pod template of `kubectl kustomize deploy/` becomes the `podman
run` arguments of tests/deploy/podman_pods.py, and the containers are then driven for real:

- the exporter, with only the DaemonSet's capabilities, loads its eBPF programs, gives root up,
  and serves ksense_runqueue_latency_seconds that rise under a CPU hog started on the host;
  without CAP_SETUID it stops with its one-line explanation, without CAP_BPF — or under podman's
  own RuntimeDefault seccomp profile, which allows bpf() only with CAP_SYS_ADMIN — it says it
  falls back to procfs; never a traceback. The eBPF test plays RuntimeDefault as containerd's
  profile does for bpf() and perf_event_open() (podman_pods.containerd_like_seccomp);
- the scorer, as uid 65532 with a read-only root, serves /validate over TLS from the mounted
  Secret and picks up a rotated certificate;
- the scheduler reaches the test API server and binds a pod on the scores a real Prometheus holds.

Every pod-spec field podman cannot express is printed per test and listed in docs/images.md.
Needs root, podman, buildah and runc (scripts/setup.sh installs them; required in CI). Images are
reused while their inputs are unchanged (deploy/images/build.py), so a warm run only starts
containers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from exporter.privilege import parse_status
from tests.conftest import require
from tests.deploy.manifests import build, find, pod_spec
from tests.deploy.podman_pods import NOT_PLAYED, Played, containerd_like_seccomp, play
from tests.support import REPO, free_port, wait_for

BUILD = REPO / "deploy" / "images" / "build.py"
ENGINE_ENV = {**os.environ, "CONTAINERS_CONF": str(REPO / "deploy" / "images" / "containers.conf")}
#: Capability numbers of the ones the manifests name (linux/capability.h).
CAP_BITS = {"CHOWN": 0, "SETGID": 6, "SETUID": 7, "SYS_RESOURCE": 24, "PERFMON": 38, "BPF": 39}


@pytest.fixture(scope="module")
def images() -> None:
    """`make images` (its build script): seconds when nothing changed, minutes cold."""
    missing = [t for t in ("podman", "buildah", "runc") if shutil.which(t) is None]
    require(not missing, f"needs {', '.join(missing)} (scripts/setup.sh installs them)")
    require(os.geteuid() == 0, "needs root (runc with host PID, debootstrap)")
    done = subprocess.run([sys.executable, str(BUILD)], cwd=REPO, env=ENGINE_ENV, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stderr
    print(done.stdout)


def _caps_available() -> frozenset[str]:
    """The capabilities this process can hand to a container (its bounding set)."""
    status = Path("/proc/self/status").read_text()
    bounding = int(re.search(r"^CapBnd:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return frozenset(name for name, bit in CAP_BITS.items() if bounding >> bit & 1)


def _say(component: str, played: Played) -> None:
    """The test says where the pod spec and the runtime disagree (shown with -s or on failure)."""
    print(f"\n{component}: not played by podman: " + "; ".join(played.not_played))
    for note in played.notes:
        print(f"{component}:   {note}")


class Container:
    def __init__(self, name: str):
        self.name = name

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["podman", *args], env=ENGINE_ENV, capture_output=True, text=True, check=check,
                              timeout=60)

    def logs(self) -> str:
        done = self.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def state(self) -> dict:
        return json.loads(self.podman("inspect", "--format", "{{json .State}}", self.name).stdout)

    def running(self) -> bool:
        return self.state()["Running"]

    def status(self) -> str:
        """/proc/<pid>/status of the container's first process, read from the host."""
        return Path(f"/proc/{self.state()['Pid']}/status").read_text()


@contextmanager
def running(played: Played) -> Iterator[Container]:
    c = Container(played.args[played.args.index("--name") + 1])
    subprocess.run(["podman", "rm", "--force", "--time", "0", c.name], env=ENGINE_ENV, capture_output=True)
    done = subprocess.run(["podman", "run", "--detach", *played.args], env=ENGINE_ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"podman run {' '.join(played.args)}\n{done.stderr}"
    try:
        yield c
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "2", c.name], env=ENGINE_ENV, capture_output=True,
                       timeout=60)


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as r:
            return r.status, r.read().decode()
    except (OSError, ssl.SSLError):
        return 0, ""


def _workload(kind: str, name: str) -> tuple[dict, tuple[dict, ...]]:
    objects = build("default")
    return pod_spec(find(objects, kind, name)), objects


# --- exporter ------------------------------------------------------------------------------------


def _exporter(name: str, port: int, tmp_path: Path, *, seccomp: str = "containerd", **kwargs) -> Played:
    """seccomp: "containerd" (podman's default + containerd's bpf/perf_event_open rule) or "podman"."""
    pod, objects = _workload("DaemonSet", "ksense-exporter")
    state = tmp_path / "hostpath-var-lib-ksense"
    state.mkdir()
    state.chmod(0o755)
    profile = containerd_like_seccomp(tmp_path / "seccomp.json") if seccomp == "containerd" else None
    played = play(pod, objects, name=name, field_refs={"spec.nodeName": socket.gethostname()},
                  env={"KSENSE_EXPORTER_PORT": str(port)}, host_paths={"state": state},
                  caps_available=_caps_available(), runtime_default=profile, **kwargs)
    _say("exporter", played)
    return played


def _waited(text: str) -> float:
    """Seconds of run-queue waiting ksense_runqueue_latency_seconds has summed (every label set)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ksense_runqueue_latency_seconds_sum"))


def test_exporter_container_loads_ebpf_with_the_manifest_capabilities(images, need_ebpf, tmp_path):
    from tests.exporter.test_ebpf_real import _hogs

    port = free_port()
    played = _exporter(f"ksense-test-exporter-{os.getpid()}", port, tmp_path)
    url = f"http://127.0.0.1:{port}/metrics"
    started = time.monotonic()
    with running(played) as c:
        wait_for(lambda: "ksense_runqueue_latency_seconds_count" in _get(url)[1] or not c.running(), 60,
                 "the exporter's first run-queue latencies")
        cold_start = time.monotonic() - started
        assert c.running(), c.logs()
        print(f"exporter: podman run to the first /metrics with run-queue latencies: {cold_start:.1f} s")
        body = _get(url)[1]
        assert "state_dir_rejected" not in c.logs(), c.logs()
        assert re.search(r'ksense_exporter_source_info\{[^}]*source="ebpf"', body), c.logs()
        # Root only until attached: the container's process now has uid 65534 and no capability.
        creds = parse_status(c.status())
        assert set(creds.uids) == {65534} and not any(creds.caps.values()), creds
        # Under a CPU hog on the host — six processes pinned to one CPU, never sleeping — at least
        # five of them wait at any time: ~5 s of waiting per second. Other work on the machine
        # waits too, so compare equal windows before and during the hog, and ask for a third of that.
        wait_for(lambda: "ksense_runqueue_latency_seconds_sum" in _get(url)[1], 30, "a published interval")
        before = _waited(_get(url)[1])
        time.sleep(3.0)
        quiet = _waited(_get(url)[1]) - before
        hogs = _hogs(6, seconds=3.5)
        start = _waited(_get(url)[1])
        time.sleep(3.0)
        loaded = _waited(_get(url)[1]) - start
        for hog in hogs:
            hog.wait(timeout=30)
        print(f"exporter: run-queue waiting summed over 3 s: {quiet:.1f} s quiet, {loaded:.1f} s under the hog")
        assert loaded - quiet > 5.0, (quiet, loaded)
        assert "Traceback" not in c.logs()


@pytest.mark.parametrize("missing", ["SETUID", "BPF", "podman-seccomp"])
def test_exporter_container_without_what_it_needs_says_why(images, need_ebpf, tmp_path, missing):
    """Without CAP_SETUID: its one-line explanation and exit 2. Without CAP_BPF, or under
    podman's own RuntimeDefault seccomp profile (bpf() only with CAP_SYS_ADMIN): KSENSE_SOURCE=auto
    falls back to procfs and says why. Never a traceback."""
    port = free_port()
    played = _exporter(f"ksense-test-exporter-{missing.lower()}-{os.getpid()}", port, tmp_path,
                       drop_caps=(missing,) if missing != "podman-seccomp" else (),
                       seccomp="podman" if missing == "podman-seccomp" else "containerd")
    with running(played) as c:
        if missing == "SETUID":
            wait_for(lambda: not c.running(), 60, "the exporter to stop")
            assert c.state()["ExitCode"] == 2, c.logs()
            assert "cannot give up root" in c.logs() and "CAP_SETUID" in c.logs(), c.logs()
        else:
            wait_for(lambda: re.search(r'ksense_exporter_source_info\{[^}]*source="procfs"',
                                       _get(f"http://127.0.0.1:{port}/metrics")[1]) or not c.running(), 60,
                     "the procfs source serving")
            assert c.running(), c.logs()
            assert "event=ebpf_unavailable fallback=procfs" in c.logs(), c.logs()
            if missing == "podman-seccomp":  # the seccomp filter's answer to bpf()
                assert "Operation not permitted" in c.logs(), c.logs()
        assert "Traceback" not in c.logs(), c.logs()


# --- scorer ------------------------------------------------------------------------------------------


class SecretVolume:
    """A Secret volume in the kubelet's layout: the files are links through `..data`, which points
    at a timestamped directory and is swapped atomically on an update (AtomicWriter)."""

    def __init__(self, root: Path, mode: int, gid: int):
        self.root, self.mode, self.gid, self.version = root, mode, gid, 0
        root.mkdir()
        root.chmod(0o1777)

    def write(self, files: dict[str, bytes]) -> None:
        self.version += 1
        data = self.root / f"..{self.version}"
        data.mkdir()
        data.chmod(0o755)
        for name, content in files.items():
            (data / name).write_bytes(content)
            os.chown(data / name, 0, self.gid)
            (data / name).chmod(self.mode)
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(data.name)
        os.replace(tmp, self.root / "..data")


def _pair(ca: trustme.CA) -> tuple[dict[str, bytes], bytes]:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return {"tls.crt": leaf.cert_chain_pems[0].bytes(), "tls.key": leaf.private_key_pem.bytes()}, der


def _served_der(port: int, ctx: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None, "the server sent no certificate"
    return der


def test_scorer_container_serves_validate_over_tls_as_non_root_and_reloads_its_certificate(images, tmp_path):
    pod, objects = _workload("Deployment", "ksense-scorer")
    tls_volume = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]
    secret = SecretVolume(tmp_path / "secret-tls", tls_volume["defaultMode"], pod["securityContext"]["fsGroup"])
    ca = trustme.CA()
    files, first = _pair(ca)
    secret.write(files)
    https, metrics = free_port(), free_port()
    played = play(pod, objects, name=f"ksense-test-scorer-{os.getpid()}", field_refs={},
                  env={"FUZZY_WEBHOOK_PORT": str(https), "KSENSE_SCORER_METRICS_PORT": str(metrics)},
                  secrets={"tls": secret.root})
    _say("scorer", played)
    ctx = ssl.create_default_context(cafile=None, capath=None)
    ctx.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
    review = json.loads((REPO / "tests" / "scorer" / "fixtures" / "admission" / "v1_pod_create.request.json")
                        .read_text())
    started = time.monotonic()
    with running(played) as c:
        wait_for(lambda: _get(f"http://127.0.0.1:{metrics}/metrics")[0] == 200 or not c.running(), 60,
                 "the scorer's /metrics")
        print(f"scorer: podman run to the first /metrics: {time.monotonic() - started:.1f} s")
        wait_for(lambda: _get(f"https://127.0.0.1:{https}/healthz", ctx)[0] == 200 or not c.running(), 60,
                 "the scorer's TLS port")
        assert c.running(), c.logs()
        creds = parse_status(c.status())
        assert set(creds.uids) == {65532} and not any(creds.caps.values()), creds
        assert c.podman("exec", c.name, "python3", "-c", "open('/app/x', 'w')", check=False).returncode != 0, \
            "the root file system is writable"
        request = urllib.request.Request(f"https://127.0.0.1:{https}/validate", data=json.dumps(review).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10, context=ctx) as r:
            answer = json.loads(r.read())
        assert r.status == 200 and answer["response"]["uid"] == review["request"]["uid"], answer
        assert _served_der(https, ctx) == first
        files, second = _pair(ca)
        secret.write(files)
        wait_for(lambda: _served_der(https, ctx) == second, 30, "the rotated certificate served")
        assert "Traceback" not in c.logs(), c.logs()


# --- scheduler ---------------------------------------------------------------------------------------


def test_scheduler_container_binds_a_pod_through_the_test_api_server(images, kube_api, tmp_path):
    from common import names as n
    from tests.scheduler.conftest import add_nodes, add_pods, node_of
    from tests.scheduler.test_leader import _kubeconfig
    from tests.scheduler.test_scores import TextServer, scorer_metrics
    from tests.scorer import promserver

    require(promserver.prometheus_binary() is not None, "needs Debian's prometheus")
    scorer = TextServer(lambda: scorer_metrics({"n1": (20.0, 1)}))
    prom = promserver.start_prometheus(tmp_path / "prom", [promserver.component_job(n.JOB_SCORER, [
        f"127.0.0.1:{scorer.port}"])])
    try:
        wait_for(lambda: promserver.instant(prom.url, n.NODE_SCORE.name), 30, "the scores in Prometheus")
        add_nodes(kube_api, "n1")
        kubeconfig = _kubeconfig(tmp_path / "kubeconfig", kube_api.url)
        kubeconfig.chmod(0o644)
        pod, objects = _workload("Deployment", "ksense-scheduler")
        metrics = free_port()
        played = play(pod, objects, name=f"ksense-test-scheduler-{os.getpid()}",
                      field_refs={"metadata.namespace": "ksense", "metadata.name": "ksense-scheduler-test"},
                      env={"KSENSE_PROMETHEUS_URL": prom.url, "KSENSE_SCHEDULER_METRICS_PORT": str(metrics),
                           "KUBECONFIG": "/etc/ksense/kubeconfig"},
                      extra_mounts={"/etc/ksense/kubeconfig": kubeconfig})
        _say("scheduler", played)
        print("scheduler:   KSENSE_PROMETHEUS_URL (ConfigMap: in-cluster DNS) -> the test's Prometheus")
        started = time.monotonic()
        with running(played) as c:
            wait_for(lambda: _get(f"http://127.0.0.1:{metrics}/metrics")[0] == 200 or not c.running(), 60,
                     "the scheduler's /metrics")
            print(f"scheduler: podman run to the first /metrics: {time.monotonic() - started:.1f} s")
            wait_for(lambda: _get(f"http://127.0.0.1:{metrics}/readyz")[0] == 200 or not c.running(), 60,
                     "the scheduler's caches synced")
            assert c.running(), c.logs()
            assert set(parse_status(c.status()).uids) == {65532}
            add_pods(kube_api, "p1")
            # The manifest's pacing: a 10 s poll and a 5 s placement delay.
            wait_for(lambda: node_of(kube_api, "p1") == "n1" or not c.running(), 40, "p1 bound")
            assert node_of(kube_api, "p1") == "n1", c.logs()
            assert "Traceback" not in c.logs(), c.logs()
    finally:
        prom.stop()
        scorer.stop()


def test_every_difference_from_the_pod_spec_is_documented():
    doc = (REPO / "docs" / "images.md").read_text()
    for key in NOT_PLAYED:
        assert f"`{key}`" in doc, f"docs/images.md does not list {key}"

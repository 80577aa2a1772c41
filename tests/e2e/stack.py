"""The whole ksense stack on one machine, on 127.0.0.1 with free ports, for the end-to-end run.

`Stack(out, settings)` starts, in this order, and stops in reverse (by PID, in `finally`):

1. a real Prometheus (tests/scorer/promserver.py: 1 s scrape and rule evaluation) with the
   rules of deploy/rules/ksense-rules.yaml and one scrape job per component under the job
   names the rules and dashboards expect (`ksense-exporter`, `ksense-scorer`,
   `ksense-scheduler`), loaded by a config reload once every port is known;
2. three exporters, started together: **node-a** on this machine's kernel (eBPF), **node-b**
   replaying an edited copy of data/reference/kernel_metrics_real.csv.gz (tests/e2e/recordings.py),
   **node-c** replaying tests/fixtures/quiet_node.csv, all with KSENSE_WARMUP_S shortened so
   the scenario fits in minutes, and each with its own state directory (a baseline persisted
   by an earlier run must not skip the warm-up);
3. two scorer replicas reading that Prometheus, serving the webhook over TLS (a throw-away CA
   from trustme, files in the output folder);
4. the test Kubernetes API server (tests/kubeapi) in this process, with nodes node-a, node-b,
   node-c (allocatable cpu/memory/pods set) and deploy/'s admission webhook pointing at both
   scorer replicas (tests/e2e/apiserver.py);
5. two `python -m scheduler` replicas with leader election (the first one leads) and the
   scenario's rate limits.

Every log goes to `<out>/logs/`, every CSV to `<out>/csv/<component>/`. Readiness is polled
against deadlines; nothing sleeps for a fixed time. `Hogs` is the CPU contention on node-a:
stress-ng workers pinned to every CPU, each stress-ng in its own session so the whole group
is ended by its id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import yaml
from kubernetes import client as k8s

from dashboards import config as dash
from tests import support
from tests.conftest import REAL_KERNEL_CSV
from tests.e2e import recordings
from tests.e2e.apiserver import AdmittingAPIServer, Webhook, WebhookConfig
from tests.kubeapi import factories
from tests.kubeapi.client import make_api_client
from tests.scorer import promserver
from tests.support import REPO

NODES = ("node-a", "node-b", "node-c")
REAL_NODE = "node-a"
REPLAY_NODES = ("node-b", "node-c")
TEST_NAMESPACE = "sa"
LEASE_NAMESPACE = "ksense"
LEASE_NAME = "fuzzy-scheduler"
RULES_FILE = REPO / dash.RULES_FILE
TEST_PODS_FILE = REPO / "deploy" / "test" / "fuzzy-test-pods.yaml"
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


@dataclass(frozen=True)
class Settings:
    """What the scenario changes from the defaults, and why."""

    warmup_s: float = recordings.WARMUP_S
    """KSENSE_WARMUP_S of every exporter (default 600): the replayed recordings are built for it."""
    node_cpu: str = "1"
    node_memory: str = "2Gi"
    node_pods: tuple[tuple[str, str], ...] = (("node-a", "10"), ("node-b", "8"), ("node-c", "8"))
    """Allocatable pods per node: the replayed nodes take eight, so the nine test pods cannot all
    land on one of them; the real node takes ten, so when new pods avoid it under contention,
    that is the fuzzy decision, not a full node."""
    scorer_interval_s: float = 1.0
    scheduler_poll_s: float = 1.0
    scheduler_max_per_cycle: int = 3
    scheduler_placement_delay_s: float = 0.1
    """Rate limits on but small (defaults 10 s / 1 / 5 s would stretch the run to many minutes)."""
    lease_duration_s: float = 4.0
    renew_deadline_s: float = 3.0
    retry_period_s: float = 0.5
    """Leader election (defaults 15 / 10 / 2 s): a crashed leader is replaced within seconds."""
    hogs_per_cpu: int = 3
    hog_nice: int = 10
    """Contention: three busy loops per CPU, at nice 10 — a batch job that saturates every CPU and
    makes runnable tasks queue, while the stack itself keeps getting CPU when it wakes up."""
    start_deadline_s: float = 60.0

    def scorer_env(self) -> dict[str, str]:
        return {"KSENSE_SCORER_INTERVAL_S": f"{self.scorer_interval_s:g}"}

    def exporter_env(self, state_dir: Path) -> dict[str, str]:
        # The CSVs and states go under the run's directory, which may be root's alone: keep root.
        return {"KSENSE_WARMUP_S": f"{self.warmup_s:g}", "KSENSE_STATE_DIR": str(state_dir), "KSENSE_RUN_AS": "0"}


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process' environment without KSENSE_* / FUZZY_* (a developer's settings must not
    leak into the stack), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    env.update(extra or {})
    return env


def get_status(url: str, *, verify: str | bool = True, timeout: float = 1.0) -> int:
    try:
        return requests.get(url, timeout=timeout, verify=verify).status_code
    except requests.RequestException:
        return 0


def fuzzy_test_pods() -> list[dict[str, Any]]:
    """The nine pods of deploy/test/fuzzy-test-pods.yaml."""
    return [d for d in yaml.safe_load_all(TEST_PODS_FILE.read_text()) if d]


class Hogs:
    """CPU contention: `per_cpu` stress-ng CPU workers pinned to each CPU we may run on."""

    def __init__(self, per_cpu: int, nice: int, log_dir: Path):
        self.per_cpu, self.nice, self.log_dir = per_cpu, nice, log_dir
        self.procs: list[subprocess.Popen] = []
        self.cpus = sorted(os.sched_getaffinity(0))

    def start(self, safety_timeout_s: float = 300.0) -> None:
        """stress-ng's own --timeout ends the hogs even if this process dies without cleaning up."""
        nice = self.nice
        for cpu in self.cpus:
            with open(self.log_dir / f"hogs-cpu{cpu}.log", "ab") as log:
                self.procs.append(subprocess.Popen(
                    ["stress-ng", "--cpu", str(self.per_cpu), "--cpu-load", "100", "--taskset", str(cpu),
                     "--timeout", f"{safety_timeout_s:.0f}s", "--quiet"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=lambda: os.nice(nice)))

    def running(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def stop(self, grace_s: float = 5.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)  # the session we made for it: stress-ng and its workers
        for p in self.procs:
            try:
                p.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


class Stack:
    """Start with `with Stack(out) as stack:`; everything is stopped on exit, also after a failure."""

    def __init__(self, out: Path, settings: Settings | None = None):
        self.out = out
        self.settings = settings or Settings()
        self.logs = out / "logs"
        self.csv = out / "csv"
        self.procs: dict[str, support.Process] = {}
        self.prometheus: support.Process | None = None
        self.api: AdmittingAPIServer | None = None
        self.webhook: Webhook | None = None
        self.core: k8s.CoreV1Api | None = None
        self._api_client: k8s.ApiClient | None = None
        self.hogs = Hogs(self.settings.hogs_per_cpu, self.settings.hog_nice, self.logs)
        #: monotonic time of each exporter's first published interval (a replay's recorded t=0)
        self.t0: dict[str, float] = {}
        self.started_wall = time.time()
        self.ports: dict[str, int] = {}
        self.ca_file = out / "tls" / "ca.pem"
        self._bpf_stats_old: str | None = None
        self.node_b_input = out / "inputs" / "node-b.csv"

    # --- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for d in (self.logs, self.csv, self.out / "state", self.out / "tls", self.out / "inputs"):
            d.mkdir(parents=True, exist_ok=True)
        names = ["prometheus", *(f"exporter-{n}" for n in NODES), "scorer-1", "scorer-1-metrics", "scorer-2",
                 "scorer-2-metrics", "scheduler-1", "scheduler-2"]
        self.ports = {name: support.free_port() for name in names if name != "prometheus"}
        self._enable_bpf_stats()
        self._start_prometheus()
        recordings.node_b_recording(REAL_KERNEL_CSV, self.node_b_input, datetime.now().replace(microsecond=0))
        self._start_exporters()
        self._start_scorers()
        self._start_api_server()
        self._start_schedulers()

    def stop(self) -> None:
        """Everything we started, newest first, each by its PID; errors do not stop the rest."""
        self.hogs.stop()
        for name in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.procs[name].stop()
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.stop()
        if self._api_client is not None:
            with contextlib.suppress(Exception):
                self._api_client.close()
        if self.prometheus is not None:
            with contextlib.suppress(Exception):
                self.prometheus.stop()
        if self._bpf_stats_old is not None:
            with contextlib.suppress(OSError):
                BPF_STATS.write_text(self._bpf_stats_old)
            self._bpf_stats_old = None

    # --- parts ------------------------------------------------------------------------------------
    def _enable_bpf_stats(self) -> None:
        """The BPF run-time panels need kernel.bpf_stats_enabled=1 (≈ 20 ns per program run);
        restored at stop."""
        with contextlib.suppress(OSError):
            old = BPF_STATS.read_text()
            BPF_STATS.write_text("1\n")
            self._bpf_stats_old = old

    def _start_prometheus(self) -> None:
        prom_dir = self.out / "prometheus"
        self.prometheus = promserver.start_prometheus(prom_dir, [], rule_files=[RULES_FILE])
        host = "127.0.0.1"
        # The three jobs as deploy/ scrapes them: identity (job, namespace, the exporter's node)
        # from the scrape, which the scorer's and the scheduler's default selectors require.
        jobs = [
            promserver.exporter_job({n: f"{host}:{self.ports[f'exporter-{n}']}" for n in NODES}),
            promserver.component_job(dash.JOB_SCORER, [f"{host}:{self.ports['scorer-1-metrics']}",
                                                       f"{host}:{self.ports['scorer-2-metrics']}"]),
            promserver.component_job(dash.JOB_SCHEDULER, [f"{host}:{self.ports['scheduler-1']}",
                                                          f"{host}:{self.ports['scheduler-2']}"]),
        ]
        (prom_dir / "prometheus.yml").write_text(promserver.prometheus_config(jobs, [RULES_FILE]))
        resp = requests.post(f"{self.prometheus.url}/-/reload", timeout=10)
        if resp.status_code != 200:
            raise AssertionError(f"prometheus reload failed: {resp.status_code} {resp.text}")
        support.wait_for(lambda: len(self.prom_targets()) == 7, 15, "prometheus to load the 7 scrape targets")

    def prom_targets(self) -> list[dict]:
        try:
            body = requests.get(f"{self.prom_url}/api/v1/targets", timeout=2).json()
        except (requests.RequestException, ValueError):
            return []
        return body.get("data", {}).get("activeTargets", [])

    @property
    def prom_url(self) -> str:
        assert self.prometheus is not None
        return self.prometheus.url

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str], port: int, ready: str, *,
               verify: str | bool = True, scheme: str = "http") -> support.Process:
        log = self.logs / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=clean_env(env), stdout=out,
                                    stderr=subprocess.STDOUT)
        server = support.Process(proc, port, log)
        self.procs[name] = server
        url = f"{scheme}://127.0.0.1:{port}{ready}"
        end = time.monotonic() + self.settings.start_deadline_s
        while get_status(url, verify=verify) != 200:
            if proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{name} not ready at {url} (exit {proc.poll()}):\n{server.log_text()[-3000:]}")
            time.sleep(0.05)
        return server

    def _start_exporters(self) -> None:
        s = self.settings

        def real() -> None:
            node = REAL_NODE
            port = self.ports[f"exporter-{node}"]
            self._spawn(f"exporter-{node}", [
                "-m", "exporter", "--source", "ebpf", "--host", "127.0.0.1", "--port", str(port), "--node", node,
                "--csv", str(self.csv / node / "kernel_metrics.csv")],
                s.exporter_env(self.out / "state" / node), port, "/readyz")
            self.t0[node] = time.monotonic()

        def replay(node: str, recording: Path) -> None:
            proc = promserver.start_exporter(
                self.logs, recording, node=node, speed=1.0, env=s.exporter_env(self.out / "state" / node),
                csv_out=self.csv / node / "kernel_metrics.csv", port=self.ports[f"exporter-{node}"],
                deadline_s=s.start_deadline_s)
            self.t0[node] = time.monotonic()
            self.procs[f"exporter-{node}"] = proc

        for node in NODES:
            (self.csv / node).mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(real), pool.submit(replay, "node-b", self.node_b_input),
                       pool.submit(replay, "node-c", recordings.QUIET_NODE_CSV)]
            errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]

    def _tls(self) -> tuple[Path, Path]:
        import trustme  # dev requirement; imported here so the module loads without it

        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        cert, key = self.out / "tls" / "tls.crt", self.out / "tls" / "tls.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        ca.cert_pem.write_to_path(str(self.ca_file))
        return cert, key

    def scorer_url(self, replica: int) -> str:
        return f"https://127.0.0.1:{self.ports[f'scorer-{replica}']}"

    def _start_scorers(self) -> None:
        cert, key = self._tls()
        for i in (1, 2):
            name = f"scorer-{i}"
            out = self.csv / name
            out.mkdir(parents=True, exist_ok=True)
            metrics = self.ports[f"{name}-metrics"]
            self._spawn(name, [
                "-m", "scorer", "--prometheus-url", self.prom_url, "--host", "127.0.0.1",
                "--port", str(self.ports[name]), "--metrics-port", str(metrics), "--tls-cert", str(cert),
                "--tls-key", str(key), "--monitor-csv", str(out / "fuzzy_monitor.csv"),
                "--score-csv", str(out / "fuzzy_score.csv")], self.settings.scorer_env(), metrics, "/metrics")
            end = time.monotonic() + self.settings.start_deadline_s
            while get_status(self.scorer_url(i) + "/healthz", verify=str(self.ca_file)) != 200:
                if time.monotonic() > end:
                    raise AssertionError(f"{name}: webhook port not answering over TLS")
                time.sleep(0.05)

    def score_csvs(self) -> list[Path]:
        return [self.csv / f"scorer-{i}" / "fuzzy_score.csv" for i in (1, 2)]

    def _start_api_server(self) -> None:
        s = self.settings
        self.webhook = Webhook(WebhookConfig.from_manifest(), [self.scorer_url(1), self.scorer_url(2)],
                               ca_file=self.ca_file)
        self.api = AdmittingAPIServer(self.webhook).start()
        for node in NODES:
            self.api.store.create("nodes", factories.node(node, cpu=s.node_cpu, memory=s.node_memory,
                                                          pods=dict(s.node_pods)[node], address="127.0.0.1"))
        self._api_client = make_api_client(self.api.url)
        self.core = k8s.CoreV1Api(self._api_client)
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": self.api.url}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
            "users": [{"name": "e2e", "user": {"token": "e2e"}}],
        }
        (self.out / "kubeconfig.yaml").write_text(yaml.safe_dump(kubeconfig, sort_keys=False))

    def scheduler_identity(self, replica: int) -> str:
        return f"scheduler-{replica}"

    def _start_schedulers(self) -> None:
        s = self.settings
        for i in (1, 2):
            name = self.scheduler_identity(i)
            port = self.ports[name]
            self._spawn(name, [
                "-m", "scheduler", "--kubeconfig", str(self.out / "kubeconfig.yaml"), "--identity", name,
                "--namespace", LEASE_NAMESPACE, "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
                "--prometheus-url", self.prom_url, "--poll", f"{s.scheduler_poll_s:g}",
                "--max-per-cycle", str(s.scheduler_max_per_cycle), "--placement-delay",
                f"{s.scheduler_placement_delay_s:g}", "--lease-duration", f"{s.lease_duration_s:g}",
                "--renew-deadline", f"{s.renew_deadline_s:g}", "--retry-period", f"{s.retry_period_s:g}"],
                {"FUZZY_SCORE_SOURCE": "prometheus"}, port, "/readyz")
            if i == 1:  # a deterministic first leader
                support.wait_for(lambda: self.lease_holder() == self.scheduler_identity(1),
                                    s.start_deadline_s, "scheduler-1 to lead")

    # --- views ------------------------------------------------------------------------------------
    def lease_holder(self) -> str:
        assert self.api is not None
        lease = self.api.store.lease(LEASE_NAMESPACE, LEASE_NAME) or {}
        return (lease.get("spec") or {}).get("holderIdentity") or ""

    def scheduler_process(self, identity: str) -> support.Process:
        return self.procs[identity]

    def describe(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "ports": dict(self.ports),
                "prometheus": self.prom_url if self.prometheus else None,
                "api_server": self.api.url if self.api else None}

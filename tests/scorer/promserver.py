"""Real parts for scorer tests: a Prometheus server and replaying exporters as subprocesses.

`start_prometheus` writes a config (1 s scrape and evaluation interval, the given scrape jobs,
optional rule files), starts /usr/bin/prometheus on 127.0.0.1 with a free port and a temporary
TSDB, and polls /-/ready with a deadline. `exporter_job` and `component_job` are the ksense jobs
as deploy/ configures them (honor_labels off; job, namespace and the exporter's `node` attached
by the scrape — static labels here, service discovery in a cluster), so the scorer and the
scheduler find their series with their default selectors. `start_exporter` runs `python -m
exporter --source replay:FILE` on a free port and polls /readyz. Both return handles whose
`stop()` ends the process by its PID (SIGTERM, then SIGKILL after a grace period); fixtures call
it in their finalizers. Logs go to files in the test's directory, so a full pipe never blocks a
server and a failure can show the log. Nothing sleeps for a fixed time: every wait polls a
condition against a deadline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests
import yaml

from common import names as n
from tests.support import REPO, Process, clean_env, free_port

PROMETHEUS = "/usr/bin/prometheus"


def prometheus_binary() -> str | None:
    return PROMETHEUS if os.access(PROMETHEUS, os.X_OK) else shutil.which("prometheus")


#: The exporter's own `node` label, renamed by the scrape (honor_labels off), is dropped: the
#: same metric relabelling as deploy/'s exporter job.
DROP_EXPORTED_NODE = {"action": "labeldrop", "regex": f"exported_{n.LABEL_NODE}"}


def exporter_job(nodes: Mapping[str, str], *, job: str = n.JOB_EXPORTER, namespace: str = n.NAMESPACE) -> dict:
    """The exporters' scrape job (node -> host:port): `node`, `namespace` and `job` from the
    scrape, never from the exposition, as deploy/ relabels them from the pod."""
    return {
        "job_name": job,
        "honor_labels": False,
        "static_configs": [
            {"targets": [address], "labels": {n.LABEL_NAMESPACE: namespace, n.LABEL_NODE: node}}
            for node, address in nodes.items()
        ],
        "metric_relabel_configs": [DROP_EXPORTED_NODE],
    }


def component_job(job: str, targets: Sequence[str], *, namespace: str = n.NAMESPACE) -> dict:
    """A scorer's or scheduler's scrape job: `namespace` and `job` from the scrape; a scorer's
    per-node `node` label is its own (no target label of that name)."""
    return {
        "job_name": job,
        "honor_labels": False,
        "static_configs": [{"targets": list(targets), "labels": {n.LABEL_NAMESPACE: namespace}}],
    }


#: The plain scrape configuration deploy/ ships (the with-prometheus overlay's ConfigMap).
SHIPPED_SCRAPE_CONFIG = REPO / "deploy" / "overlays" / "with-prometheus" / "prometheus-configmap.yaml"


def shipped_jobs(sd_file: Path) -> list[dict]:
    """The scrape jobs deploy/ ships, exactly, but for their discovery: Kubernetes discovery
    (which Debian's Prometheus is built without) is replaced by `sd_file` (file_sd), whose
    targets carry the `__meta_kubernetes_*` labels endpointslice discovery attaches (`sd_target`).
    The shipped relabelling, honor_labels and metric relabelling then run as they would in a
    cluster. The namespace restriction of the shipped discovery is not carried over: a target
    in another namespace is scraped, and labelled with that namespace."""
    config = yaml.safe_load(yaml.safe_load(SHIPPED_SCRAPE_CONFIG.read_text())["data"]["prometheus.yml"])
    jobs = []
    for job in config["scrape_configs"]:
        job = dict(job)
        assert [sd["role"] for sd in job.pop("kubernetes_sd_configs")] == ["endpointslice"]
        job["file_sd_configs"] = [{"files": [str(sd_file)]}]
        jobs.append(job)
    return jobs


def sd_target(address: str, *, service: str, pod: str, node: str, namespace: str = n.NAMESPACE,
              port_name: str = "metrics") -> dict:
    """One file_sd target group carrying what endpointslice discovery knows about a pod's port."""
    return {"targets": [address], "labels": {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_service_label_app_kubernetes_io_name": service,
        "__meta_kubernetes_endpointslice_port_name": port_name,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_node_name": node,
    }}


def prometheus_config(jobs: Sequence[Mapping], rule_files: Sequence[Path] = (), interval_s: float = 1.0) -> str:
    """prometheus.yml text. scrape_timeout must not exceed the interval (default 10 s would be
    rejected at 1 s), so it equals it."""
    config: dict = {
        "global": {"scrape_interval": f"{interval_s:g}s", "scrape_timeout": f"{interval_s:g}s",
                   "evaluation_interval": f"{interval_s:g}s"},
        "scrape_configs": [dict(job) for job in jobs],
    }
    if rule_files:
        config["rule_files"] = [str(p) for p in rule_files]
    return yaml.safe_dump(config, sort_keys=False)


def start_prometheus(
    workdir: Path,
    jobs: Sequence[Mapping] = (),
    *,
    rule_files: Sequence[Path] = (),
    interval_s: float = 1.0,
    deadline_s: float = 30.0,
) -> Process:
    """Start a real Prometheus running the scrape `jobs` every `interval_s`; ready on return."""
    binary = prometheus_binary()
    if binary is None:
        raise FileNotFoundError("prometheus binary not found")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(prometheus_config(jobs, rule_files, interval_s))
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = Process(proc, port, log)
    server._wait_ready("/-/ready", deadline_s, "prometheus")
    return server


def instant(url: str, query: str) -> list[dict]:
    """The vector of an instant query ([] on any failure): for polling conditions."""
    try:
        body = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=2.0).json()
    except (requests.RequestException, ValueError):
        return []
    return body.get("data", {}).get("result", []) if body.get("status") == "success" else []


def start_exporter(
    workdir: Path,
    replay_csv: Path,
    *,
    node: str,
    speed: float,
    env: Mapping[str, str] | None = None,
    csv_out: Path | None = None,
    port: int | None = None,
    deadline_s: float = 30.0,
) -> Process:
    """`python -m exporter --source replay:FILE` on `port` (default: a free one); ready (/readyz
    200) on return. KSENSE_* / FUZZY_* variables of the test's environment are dropped and
    `env` added; it keeps the user it was started as (KSENSE_RUN_AS=0)."""
    port = port if port is not None else free_port()
    args = [
        sys.executable, "-m", "exporter", "--source", f"replay:{replay_csv}", "--speed", f"{speed:g}",
        "--host", "127.0.0.1", "--port", str(port), "--node", node,
    ]
    args += ["--csv", str(csv_out)] if csv_out is not None else ["--no-csv"]
    # The CSV goes to the test's directory, which only root (CI's user) can reach: keep root.
    full_env = clean_env({"KSENSE_RUN_AS": "0", **(env or {})})
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"exporter-{node}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    exporter = Process(proc, port, log)
    exporter._wait_ready("/readyz", deadline_s, "exporter")
    return exporter

"""docs/examples/kube-scheduler-extender.yaml is a complete, correct KubeSchedulerConfiguration
for the scorer: its fields are those of kube-scheduler's v1 `Extender` type, it points at the
scorer's Service and a name on the scorer's certificate, and a real scorer answers what
kube-scheduler would send with exactly these settings: POST <urlPrefix>/<verb>, node names only
(nodeCacheCapable), TLS verified against caFile with serverName."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import urllib3
import yaml

from tests import support
from tests.conftest import require
from tests.scorer import promserver
from tests.support import REPO, wait_for

EXAMPLE = REPO / "docs" / "examples" / "kube-scheduler-extender.yaml"
SERVICE = REPO / "deploy" / "base" / "scorer-service.yaml"
TLS_SCRIPT = REPO / "scripts" / "setup_webhook_tls.sh"
#: json names of kube-scheduler's config/v1 Extender and ExtenderTLSConfig (k8s.io/kube-scheduler).
EXTENDER_FIELDS = {"urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight", "bindVerb", "enableHTTPS",
                   "tlsConfig", "httpTimeout", "nodeCacheCapable", "managedResources", "ignorable"}
TLS_FIELDS = {"insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData"}
NODE = "extender-node"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}


def _config() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def _extender() -> dict:
    (extender,) = _config()["extenders"]
    return extender


def test_it_is_a_v1_kube_scheduler_configuration_with_one_profile():
    config = _config()
    assert (config["apiVersion"], config["kind"]) == ("kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration")
    (profile,) = config["profiles"]
    assert profile["schedulerName"] != "default-scheduler"  # a second scheduler: see docs/extender.md
    assert config["leaderElection"]["resourceName"] != "kube-scheduler"


def test_extender_fields_are_the_v1_types_and_the_scorers_verbs():
    extender = _extender()
    assert set(extender) <= EXTENDER_FIELDS and set(extender["tlsConfig"]) <= TLS_FIELDS
    assert (extender["filterVerb"], extender["prioritizeVerb"]) == ("filter", "prioritize")
    assert "bindVerb" not in extender and "preemptVerb" not in extender  # the scorer serves neither
    assert isinstance(extender["weight"], int) and extender["weight"] > 0
    assert extender["nodeCacheCapable"] is True and isinstance(extender["ignorable"], bool)
    assert extender["enableHTTPS"] is True and extender["tlsConfig"].get("insecure") is not True
    assert extender["tlsConfig"]["caFile"].startswith("/")


def test_url_and_server_name_are_the_scorer_service_and_a_name_on_its_certificate():
    service = yaml.safe_load(SERVICE.read_text())
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    (https,) = [p for p in service["spec"]["ports"] if p["name"] == "https"]
    url = urlsplit(_extender()["urlPrefix"])
    assert (url.scheme, url.hostname, url.port) == ("https", f"{name}.{namespace}.svc", https["port"])
    server_name = _extender()["tlsConfig"]["serverName"]
    assert server_name == f"{name}.{namespace}.svc"
    assert server_name in TLS_SCRIPT.read_text()  # the script's certificate carries this SAN


@pytest.fixture(scope="module")
def scorer(tmp_path_factory, real_kernel_csv):
    """A real scorer over TLS (certificate for the example's serverName) scoring one replayed node."""
    require(importlib.util.find_spec("trustme") is not None, "needs trustme (requirements/dev.txt)")
    import trustme

    work = tmp_path_factory.mktemp("extender")
    server_name = _extender()["tlsConfig"]["serverName"]
    ca = trustme.CA()
    leaf = ca.issue_cert(server_name)
    cert, key, ca_file = work / "tls.crt", work / "tls.key", work / "ca.crt"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    exporter = promserver.start_exporter(work, real_kernel_csv, node=NODE, speed=20.0,
                                         env={"KSENSE_WARMUP_S": "5", "KSENSE_STATE_DIR": str(work / "state")})
    api, metrics = support.free_port(), support.free_port()
    log = work / "scorer.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scorer", "--exporter-url", f"{exporter.url}/metrics", "--host", "127.0.0.1",
             "--port", str(api), "--metrics-port", str(metrics), "--no-csv", "--tls-cert", str(cert),
             "--tls-key", str(key)],
            cwd=REPO, env={**_env(), "KSENSE_SCORER_INTERVAL_S": "1"}, stdout=out, stderr=subprocess.STDOUT)
    server = support.Process(proc, api, log)
    pool = urllib3.HTTPSConnectionPool("127.0.0.1", api, server_hostname=server_name, assert_hostname=server_name,
                                       ca_certs=str(ca_file), cert_reqs="CERT_REQUIRED", timeout=5.0, retries=False)
    try:
        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return pool.request("GET", "/readyz").status == 200
            except urllib3.exceptions.HTTPError:
                return False
        wait_for(ready, 60, "the scorer's first evaluation")
        yield pool
    finally:
        pool.close()
        server.stop()
        exporter.stop()


def _call(pool: urllib3.HTTPSConnectionPool, verb: str, body: dict) -> object:
    """POST as kube-scheduler does: <urlPrefix path>/<verb>, JSON."""
    path = urlsplit(_extender()["urlPrefix"]).path.rstrip("/") + "/" + verb
    answer = pool.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert answer.status == 200, answer.data
    return json.loads(answer.data)


@pytest.mark.real
def test_a_real_scorer_answers_both_verbs_as_configured(scorer):
    extender = _extender()
    args = {"Pod": {"metadata": {"name": "p", "namespace": "sa"}}, "Nodes": None, "NodeNames": [NODE, "unknown-node"]}
    filtered = _call(scorer, extender["filterVerb"], args)
    assert filtered["Error"] == ""
    assert NODE in filtered.get("NodeNames", []) or NODE in filtered["FailedNodes"]
    assert set(filtered["FailedAndUnresolvableNodes"]) == {"unknown-node"}
    priorities = _call(scorer, extender["prioritizeVerb"], args)
    assert [p["Host"] for p in priorities] == [NODE, "unknown-node"]
    assert all(isinstance(p["Score"], int) and 0 <= p["Score"] <= 10 for p in priorities)


@pytest.mark.real
def test_the_certificate_is_checked_against_the_server_name(scorer):
    wrong = urllib3.HTTPSConnectionPool("127.0.0.1", scorer.port, server_hostname="ksense-scorer.elsewhere.svc",
                                        assert_hostname="ksense-scorer.elsewhere.svc", ca_certs=scorer.ca_certs,
                                        cert_reqs="CERT_REQUIRED", timeout=5.0, retries=False)
    with pytest.raises(urllib3.exceptions.SSLError):
        wrong.request("GET", "/healthz")
    wrong.close()

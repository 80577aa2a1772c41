"""Every environment variable the manifests set is one the components read (no typo reaches a
cluster, where it would only be a warning in a log), docs/configuration.md's table of what the
manifests set documents each of them, and docs/operations.md walks the install steps in order."""

from __future__ import annotations

from common.envconf import KNOWN_ENV
from tests.deploy.manifests import SHIPPED, build, containers, of_kind
from tests.support import REPO

CONFIGURATION = REPO / "docs" / "configuration.md"
OPERATIONS = REPO / "docs" / "operations.md"

#: Standard Kubernetes variables the scheduler reads (scheduler/config.py), not KSENSE_/FUZZY_ names.
STANDARD = {"POD_NAMESPACE", "POD_NAME"}
OURS = {"ksense-exporter", "ksense-scorer", "ksense-scheduler"}


def _manifest_variables() -> set[str]:
    names = set()
    for overlay in SHIPPED:
        for workload in of_kind(build(overlay), "Deployment", "DaemonSet"):
            if workload["metadata"]["name"] in OURS:
                for c in containers(workload):
                    names |= {e["name"] for e in c.get("env", [])}
    return names


def test_every_variable_in_the_manifests_is_read_by_a_component():
    names = _manifest_variables()
    assert names
    assert names - KNOWN_ENV - STANDARD == set()


def test_every_variable_in_the_manifests_is_in_the_docs_table():
    text = CONFIGURATION.read_text()
    table = text[text.index("## Configuration in the manifests"):]
    missing = sorted(n for n in _manifest_variables() if f"`{n}`" not in table)
    assert missing == []


def test_install_steps_come_in_an_order_that_works():
    """Build before apply, apply before TLS (the script needs the namespace and the webhook),
    TLS before verify (the scorer waits for its Secret), then use."""
    text = OPERATIONS.read_text()
    text = text[text.index("### 1. "):]
    order = ["docker build", "docker push", "kubectl apply -k deploy/", "scripts/setup_webhook_tls.sh",
             "rollout status", "schedulerName: fuzzy-scheduler", "kubectl apply -f deploy/test/fuzzy-test-pods.yaml",
             "deploy/examples/webhook-namespaces"]
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions)

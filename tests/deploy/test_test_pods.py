"""deploy/test/fuzzy-test-pods.yaml (docs/operations.md): nine pause pods for fuzzy-scheduler, small
requests, in a namespace the webhook watches (and never a system one); valid manifests."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import DEPLOY, build, find

PODS = DEPLOY / "test" / "fuzzy-test-pods.yaml"


def _pods():
    return [d for d in yaml.safe_load_all(PODS.read_text()) if d]


def test_nine_pause_pods_for_fuzzy_scheduler():
    pods = _pods()
    assert len(pods) == 9
    assert len({p["metadata"]["name"] for p in pods}) == 9
    for pod in pods:
        assert pod["kind"] == "Pod"
        spec = pod["spec"]
        assert spec["schedulerName"] == "fuzzy-scheduler"
        assert "nodeName" not in spec
        (c,) = spec["containers"]
        assert c["image"].startswith("registry.k8s.io/pause:") and not c["image"].endswith(":latest")
        requests = c["resources"]["requests"]
        assert requests["cpu"].endswith("m") and int(requests["cpu"][:-1]) <= 50
        assert requests["memory"].endswith("Mi") and int(requests["memory"][:-2]) <= 64


def test_pods_are_in_a_namespace_the_webhook_watches():
    hook = find(build("default"), "ValidatingWebhookConfiguration", "ksense-scorer")
    allow, deny = hook["webhooks"][0]["namespaceSelector"]["matchExpressions"]
    for pod in _pods():
        ns = pod["metadata"]["namespace"]
        assert ns in allow["values"] and ns not in deny["values"]
    # The file never creates or owns the namespace (a `kubectl delete -f` must not delete it).
    assert all(d["kind"] == "Pod" for d in _pods())


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_pods_validate(version):
    for pod in _pods():
        kubernetes_validate.validate(pod, version, strict=True)

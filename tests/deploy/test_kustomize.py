"""Every overlay builds with kustomize and every object validates against the Kubernetes
schemas offline (strict: unknown fields are errors), for Kubernetes 1.30 and the newest
version kubernetes-validate bundles. Kustomizations keep to resources + patches, manifests are
named <component>-<kind>.yaml, selectors never carry the version, and deploy/generated/ is in
sync with its sources (deploy/build.py --check)."""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from tests.conftest import require
from tests.deploy.manifests import DEPLOY, OVERLAYS, REPO, SHIPPED, build, of_kind, pod_spec

VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
#: Custom resources: no schema in kubernetes-validate, so they are checked by the assertions
#: below (tests/deploy/test_security.py) and by their operators at apply time, not here.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
}
ALLOWED_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches"}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_strictly(overlay, version):
    objects = build(overlay)
    assert objects
    skipped, errors = [], []
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if key in CRD_KINDS:
            skipped.append(name)
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {exc.caught}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no schema for {key} and not a known CRD kind")
    assert errors == []
    # Only the known CRDs were skipped, and only where they belong.
    assert all(n.split("/")[0] in {k for _, k in CRD_KINDS} for n in skipped)


def test_the_overlays_install_what_they_say():
    kinds = {name: {(o["kind"], o["metadata"]["name"]) for o in build(name)} for name in SHIPPED}
    base = kinds["default"]
    assert kinds["root"] == base  # `kubectl apply -k deploy/` is the default overlay
    for expected in [("Namespace", "ksense"), ("DaemonSet", "ksense-exporter"), ("Deployment", "ksense-scorer"),
                     ("Deployment", "ksense-scheduler"), ("PodDisruptionBudget", "ksense-scorer"),
                     ("ValidatingWebhookConfiguration", "ksense-scorer"), ("Service", "ksense-scorer"),
                     ("Service", "ksense-exporter"), ("Service", "ksense-scheduler"),
                     ("ClusterRole", "ksense-scheduler"), ("Role", "ksense-scheduler-leader-election"),
                     ("ServiceAccount", "ksense-scheduler"), ("ConfigMap", "ksense-config")]:
        assert expected in base
    assert {k for k, _ in kinds["prometheus-operator"] - base} == {"ServiceMonitor"} | (
        {"PrometheusRule"} if (DEPLOY / "rules" / "ksense-prometheusrule.yaml").exists() else set())
    assert {k for k, _ in kinds["cert-manager"] - base} == {"Certificate", "Issuer"}
    assert {("Deployment", "ksense-prometheus"), ("Deployment", "ksense-grafana")} <= kinds["with-prometheus"]
    # Nothing but the namespace-less kinds lives outside ksense (the test pods are not in deploy/ overlays).
    for name in SHIPPED:
        for obj in build(name):
            if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration"):
                assert obj["metadata"].get("namespace") == "ksense", f"{name}: {obj['kind']}/{obj['metadata']['name']}"


def test_no_object_is_defined_twice_and_names_are_unique():
    for name in SHIPPED:
        keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in build(name)]
        assert len(keys) == len(set(keys)), name


def _kustomizations():
    return sorted(p for p in DEPLOY.rglob("kustomization.yaml"))


def test_kustomizations_use_only_resources_and_patches():
    """docs/development.md#rules-the-code-keeps: no generators, vars, replacements or transformers (images, labels,
    namespace...): every object is a plain file, and deploy/build.py writes the generated ones."""
    found = _kustomizations()
    assert len(found) >= 10
    for path in found:
        doc = yaml.safe_load(path.read_text())
        extra = sorted(set(doc) - ALLOWED_KUSTOMIZATION_KEYS)
        assert extra == [], f"{path.relative_to(REPO)}: {extra}"
        assert doc["kind"] == "Kustomization"


def test_manifests_are_named_component_kind():
    """<component>-<kind>.yaml: the file name ends with the lower-cased kind of what it holds
    (patches end with -patch.yaml)."""
    bad = []
    for kustomization in _kustomizations():
        doc = yaml.safe_load(kustomization.read_text())
        files = [r for r in doc.get("resources", []) if r.endswith(".yaml")]
        files += [p["path"] for p in doc.get("patches", []) if "path" in p]
        for rel in files:
            path = kustomization.parent / rel
            kinds = {d["kind"].lower() for d in yaml.safe_load_all(path.read_text()) if d}
            stem = path.name.removesuffix(".yaml").removesuffix("-patch")
            if len(kinds) != 1 or not stem.endswith("-" + kinds.pop()):
                bad.append(str(path.relative_to(REPO)))
    assert bad == []


def test_selectors_exclude_the_version():
    for name in SHIPPED:
        for obj in of_kind(build(name), "Deployment", "DaemonSet", "PodDisruptionBudget"):
            labels = obj["spec"]["selector"]["matchLabels"]
            assert "app.kubernetes.io/version" not in labels and "version" not in labels
            if obj["kind"] != "PodDisruptionBudget":
                template = obj["spec"]["template"]["metadata"]["labels"]
                assert labels.items() <= template.items()
        for svc in of_kind(build(name), "Service"):
            assert "app.kubernetes.io/version" not in svc["spec"]["selector"]


def test_every_workload_has_requests_limits_and_probes():
    for name in SHIPPED:
        for obj in of_kind(build(name), "Deployment", "DaemonSet"):
            for c in pod_spec(obj)["containers"]:
                where = f"{name}: {obj['metadata']['name']}/{c['name']}"
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
                assert "memory" in c["resources"]["limits"], where
                assert "readinessProbe" in c, where
                assert c["image"].split(":")[-1] not in ("", "latest") and ":" in c["image"], where


def test_generated_files_are_in_sync_with_their_sources():
    result = subprocess.run([sys.executable, str(DEPLOY / "build.py"), "--check"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr


def test_dashboards_are_shipped_as_configmaps():
    sources = sorted((DEPLOY / "dashboards").glob("*.json"))
    require(bool(sources), "deploy/dashboards/*.json not generated yet (python -m dashboards.build)")
    cms = [o for o in build("default") if o["kind"] == "ConfigMap" and
           o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert sorted(k for cm in cms for k in cm["data"]) == sorted(p.name for p in sources)
    for cm in cms:
        (key, text), = cm["data"].items()
        assert text.strip() == (DEPLOY / "dashboards" / key).read_text().strip()


def test_rules_are_shipped():
    rule = DEPLOY / "rules" / "ksense-prometheusrule.yaml"
    plain = DEPLOY / "rules" / "ksense-rules.yaml"
    require(rule.exists() and plain.exists(), "deploy/rules/ not generated yet (python -m dashboards.build)")
    rules = of_kind(build("prometheus-operator"), "PrometheusRule")
    assert rules and all(r["metadata"]["namespace"] == "ksense" for r in rules)
    cm = [o for o in build("with-prometheus") if o["kind"] == "ConfigMap"
          and o["metadata"]["name"] == "ksense-prometheus-rules"]
    assert cm[0]["data"] == {"ksense-rules.yaml": plain.read_text()}

"""The security-relevant fields of every shipped overlay, asserted exactly: the admission
webhook (docs/operations.md), RBAC (least privilege: the scheduler's verbs are the documented list; no wildcard,
no secrets, no pod delete anywhere), restricted Pod Security for the scorer and the scheduler,
and the exporter's documented capability set, host namespaces and read-only host mounts."""

from __future__ import annotations

import pytest

from common import names as n
from exporter.config import ExporterConfig
from tests.deploy.manifests import SHIPPED, build, containers, env, find, of_kind, pod_spec
from tests.scorer import promserver

WEBHOOK_ENTRY = {
    "name": "pods.fuzzy.ksense.io",
    "admissionReviewVersions": ["v1"],
    "sideEffects": "NoneOnDryRun",
    "failurePolicy": "Ignore",
    "timeoutSeconds": 2,
    "matchPolicy": "Equivalent",
    "clientConfig": {"service": {"name": "ksense-scorer", "namespace": "ksense", "path": "/validate", "port": 8443}},
    "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
    "namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["sn", "sa", "hotel"]},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "ksense"]},
    ]},
}

#: docs/operations.md: pods get/list/watch, pods/binding create, pods/status patch, nodes get/list/watch,
#: events create/patch (cluster-wide); leases in its own namespace.
SCHEDULER_CLUSTER_RULES = {
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/binding"): {"create"},
    ("", "pods/status"): {"patch"},
    ("", "nodes"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
}
SCHEDULER_LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["fuzzy-scheduler"],
     "verbs": ["get", "update"]},
]

#: The exporter's capabilities, each with its reason next to it in exporter-daemonset.yaml and
#: checked against a real kernel in test_exporter_capabilities.py.
EXPORTER_CAPABILITIES = ["BPF", "PERFMON", "SYS_RESOURCE", "SETGID", "SETUID", "CHOWN"]
EXPORTER_HOST_MOUNTS = {
    "/host/proc": "/proc",
    "/sys/kernel/tracing": "/sys/kernel/tracing",
    "/lib/modules": "/lib/modules",
    "/usr/src": "/usr/src",
}


@pytest.fixture(params=SHIPPED)
def objects(request):
    return build(request.param)


# --- webhook ------------------------------------------------------------------------------------
def test_webhook_configuration_is_exactly_the_spec(objects):
    hooks = of_kind(objects, "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    assert [h["kind"] for h in hooks] == ["ValidatingWebhookConfiguration"]
    hook = hooks[0]
    assert hook["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert hook["webhooks"] == [WEBHOOK_ENTRY]


def test_webhook_has_no_ca_bundle_in_the_manifest(objects):
    """§8: a caBundle placeholder in the manifest is reset by every `kubectl apply -k`. Absent,
    the field the TLS script or cert-manager wrote is left alone."""
    hook = find(objects, "ValidatingWebhookConfiguration", "ksense-scorer")
    assert "caBundle" not in hook["webhooks"][0]["clientConfig"]


def test_cert_manager_overlay_injects_the_ca():
    hook = find(build("cert-manager"), "ValidatingWebhookConfiguration", "ksense-scorer")
    assert hook["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "ksense/ksense-scorer-tls"}
    cert = find(build("cert-manager"), "Certificate", "ksense-scorer-tls")
    assert cert["spec"]["secretName"] == "ksense-scorer-tls"
    assert cert["spec"]["dnsNames"] == ["ksense-scorer", "ksense-scorer.ksense", "ksense-scorer.ksense.svc",
                                        "ksense-scorer.ksense.svc.cluster.local"]
    scorer = find(build("cert-manager"), "Deployment", "ksense-scorer")
    volumes = {v["name"]: v for v in pod_spec(scorer)["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "ksense-scorer-tls"


def test_changed_allowlist_still_never_matches_system_namespaces():
    hook = find(build("example-webhook-namespaces"), "ValidatingWebhookConfiguration", "ksense-scorer")
    allow, deny = hook["webhooks"][0]["namespaceSelector"]["matchExpressions"]
    assert allow["operator"] == "In" and allow["values"] == ["team-a", "team-b", "sa"]
    assert deny == {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "ksense"]}


# --- RBAC ---------------------------------------------------------------------------------------
def _rules(objects):
    for role in of_kind(objects, "ClusterRole", "Role"):
        for rule in role.get("rules", []):
            yield role, rule


def test_no_wildcards_no_secrets_no_pod_delete_anywhere(objects):
    assert of_kind(objects, "ClusterRole", "Role")
    for role, rule in _rules(objects):
        where = f"{role['kind']}/{role['metadata']['name']}"
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), where
        assert "nonResourceURLs" not in rule, where
        assert "secrets" not in rule["resources"], where
        assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"]), where
        if "pods" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, where
    for binding in of_kind(objects, "ClusterRoleBinding", "RoleBinding"):
        assert binding["roleRef"]["name"] not in ("cluster-admin", "admin", "edit"), binding["metadata"]["name"]


def test_scheduler_cluster_role_is_exactly_the_spec_list(objects):
    role = find(objects, "ClusterRole", "ksense-scheduler")
    got: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource)
                assert key not in got, f"{key} granted twice"
                got[key] = set(rule["verbs"])
    assert got == SCHEDULER_CLUSTER_RULES
    binding = find(objects, "ClusterRoleBinding", "ksense-scheduler")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "ksense-scheduler"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ksense-scheduler", "namespace": "ksense"}]


def test_scheduler_leases_only_in_its_namespace(objects):
    role = find(objects, "Role", "ksense-scheduler-leader-election")
    assert role["metadata"]["namespace"] == "ksense"
    assert role["rules"] == SCHEDULER_LEASE_RULES
    binding = find(objects, "RoleBinding", "ksense-scheduler-leader-election")
    assert binding["metadata"]["namespace"] == "ksense"
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ksense-scheduler", "namespace": "ksense"}]


def test_only_the_scheduler_prometheus_and_the_exporter_get_an_api_token(objects):
    for workload in of_kind(objects, "Deployment", "DaemonSet"):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec.get("serviceAccountName", "default") != "default" or spec["automountServiceAccountToken"] is False
        if name in ("ksense-scheduler", "ksense-prometheus", "ksense-exporter"):
            continue
        assert spec.get("automountServiceAccountToken") is False, name


def test_the_exporter_may_only_read_pods_and_keeps_reading_its_token_once_unprivileged(objects):
    """Pod names (exporter/pods/kubenames.py): get/list/watch pods, nothing else; the token
    mounted, and group-readable by the gid the exporter becomes (fsGroup = KSENSE_RUN_AS's gid)."""
    role = find(objects, "ClusterRole", "ksense-exporter")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = find(objects, "ClusterRoleBinding", "ksense-exporter")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "ksense-exporter"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ksense-exporter", "namespace": "ksense"}]
    spec = pod_spec(find(objects, "DaemonSet", "ksense-exporter"))
    assert spec["serviceAccountName"] == "ksense-exporter" and spec["automountServiceAccountToken"] is True
    (c,) = spec["containers"]
    run_as = env(c).get("KSENSE_RUN_AS", {}).get("value")
    gid = int(run_as.split(":")[-1]) if run_as else ExporterConfig.run_as[1]
    assert spec["securityContext"]["fsGroup"] == gid
    assert "KSENSE_KUBE_API" not in env(c)  # auto: the in-cluster API


def test_scheduler_lease_namespace_and_identity_come_from_the_downward_api(objects):
    scheduler = find(objects, "Deployment", "ksense-scheduler")
    e = env(pod_spec(scheduler)["containers"][0])
    assert e["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert e["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert e["FUZZY_SCHEDULER_NAME"]["value"] == "fuzzy-scheduler"
    assert scheduler["spec"]["replicas"] == 2


def test_scheduler_can_verify_the_scorer_with_its_private_ca(objects):
    """FUZZY_SCORE_SOURCE=scorer needs the scorer's CA (`--scorer-ca-file`): only `ca.crt` of the
    scorer's TLS Secret is mounted, read-only, and optional so the prometheus default starts
    without the Secret."""
    spec = pod_spec(find(objects, "Deployment", "ksense-scheduler"))
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["/etc/ksense/scorer-ca"]["readOnly"] is True
    assert volumes[mounts["/etc/ksense/scorer-ca"]["name"]]["secret"] == {
        "secretName": "ksense-scorer-tls", "optional": True, "items": [{"key": "ca.crt", "path": "ca.crt"}]}


# --- Pod Security: scorer and scheduler meet `restricted` ---------------------------------------
@pytest.mark.parametrize("name", ["ksense-scorer", "ksense-scheduler"])
def test_restricted_pod_security(objects, name):
    workload = find(objects, "Deployment", name)
    spec = pod_spec(workload)
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostPID", "hostIPC", "hostNetwork"):
        assert not spec.get(key), key
    assert all("hostPath" not in v for v in spec.get("volumes", []))
    for c in containers(workload):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc.get("privileged", False) is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0
        assert sc.get("seccompProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}
        assert not c.get("ports") or all("hostPort" not in p for p in c["ports"])


def test_scorer_shape(objects):
    scorer = find(objects, "Deployment", "ksense-scorer")
    assert scorer["spec"]["replicas"] == 2
    pdb = find(objects, "PodDisruptionBudget", "ksense-scorer")
    assert pdb["spec"]["selector"] == scorer["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1
    spec = pod_spec(scorer)
    c = spec["containers"][0]
    e = env(c)
    assert e["FUZZY_TLS_CERT"]["value"] == "/etc/ksense/tls/tls.crt"
    assert e["FUZZY_TLS_KEY"]["value"] == "/etc/ksense/tls/tls.key"
    assert e["FUZZY_WEBHOOK_PORT"]["value"] == "8443" and e["KSENSE_SCORER_METRICS_PORT"]["value"] == "9861"
    assert e["KSENSE_PROMETHEUS_URL"]["valueFrom"]["configMapKeyRef"] == {"name": "ksense-config",
                                                                         "key": "KSENSE_PROMETHEUS_URL"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["/etc/ksense/tls"]["readOnly"] is True
    assert volumes[mounts["/etc/ksense/tls"]["name"]]["secret"]["secretName"] == "ksense-scorer-tls"
    # Writable paths on a read-only root: the CSVs (/tmp/ksense) and gunicorn's heartbeat (/dev/shm).
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert {p["containerPort"] for p in c["ports"]} == {8443, 9861}


def test_services_expose_the_contract_ports(objects):
    ports = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in of_kind(objects, "Service")}
    assert ports["ksense-exporter"] == {9860}
    assert ports["ksense-scorer"] == {8443, 9861}
    assert ports["ksense-scheduler"] == {9862}


# --- the exporter -------------------------------------------------------------------------------
def test_exporter_daemonset_capabilities_and_host_access(objects):
    ds = find(objects, "DaemonSet", "ksense-exporter")
    spec = pod_spec(ds)
    assert spec["hostPID"] is True
    assert not spec.get("hostNetwork") and not spec.get("hostIPC")
    assert spec["tolerations"] == [{"operator": "Exists"}]
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": EXPORTER_CAPABILITIES}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path, host in EXPORTER_HOST_MOUNTS.items():
        assert mounts[path]["readOnly"] is True, path
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == host
    writable_host = [volumes[m["name"]]["hostPath"]["path"] for m in mounts.values()
                     if "hostPath" in volumes[m["name"]] and not m.get("readOnly")]
    assert writable_host == ["/var/lib/ksense"]  # the persisted baseline, nothing else
    e = env(c)
    assert e["KSENSE_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert e["KSENSE_PROC_ROOT"]["value"] == "/host/proc"
    assert e["KSENSE_EXPORTER_PORT"]["value"] == "9860"
    assert e["KSENSE_STATE_DIR"]["value"].startswith("/var/lib/ksense/")
    assert {"livenessProbe", "readinessProbe"} <= set(c)
    assert {"requests", "limits"} <= set(c["resources"])


def test_exporter_capability_reasons_are_written_next_to_them():
    from tests.deploy.manifests import DEPLOY

    text = (DEPLOY / "base" / "exporter-daemonset.yaml").read_text().splitlines()
    for cap in EXPORTER_CAPABILITIES:
        (i,) = [n for n, line in enumerate(text) if line.strip() == f"- {cap}"]
        assert text[i - 1].strip().startswith("#"), f"no reason above {cap}"


def test_emptydirs_are_bounded(objects):
    for workload in of_kind(objects, "Deployment", "DaemonSet"):
        for v in pod_spec(workload).get("volumes", []):
            if "emptyDir" in v:
                assert "sizeLimit" in v["emptyDir"], f"{workload['metadata']['name']}/{v['name']}"


def _relabels(rules: list[dict], source: str = "source_labels", target: str = "target_label") -> dict[str, list]:
    """target label -> source labels of every plain copy rule."""
    return {r[target]: r[source] for r in rules if target in r and r.get("action", "replace") == "replace"}


def test_scrape_annotations_and_servicemonitors_trust_the_scrape_not_the_exposition():
    """Trust the label, not the publisher: honorLabels off, job = Service name and namespace =
    ksense from discovery (the scorer's and scheduler's default selectors), the exporter's
    `node` from its pod's node (its exposed one dropped)."""
    for workload in of_kind(build("default"), "Deployment", "DaemonSet"):
        ann = workload["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        ports = {p["containerPort"] for c in pod_spec(workload)["containers"] for p in c["ports"]}
        assert int(ann["prometheus.io/port"]) in ports
    monitors = {m["metadata"]["name"]: m for m in of_kind(build("prometheus-operator"), "ServiceMonitor")}
    assert sorted(monitors) == sorted((n.JOB_EXPORTER, n.JOB_SCHEDULER, n.JOB_SCORER))
    for name, m in monitors.items():
        assert m["metadata"]["namespace"] == n.NAMESPACE
        assert all(ep["honorLabels"] is False for ep in m["spec"]["endpoints"])
        # job = Service name = what the selectors, dashboards and rules select on
        assert m["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        assert "jobLabel" not in m["spec"]
        assert m["spec"]["namespaceSelector"] == {"matchNames": [n.NAMESPACE]}
        for ep in m["spec"]["endpoints"]:
            relabels = _relabels(ep.get("relabelings", []), "sourceLabels", "targetLabel")
            if name == n.JOB_EXPORTER:
                assert relabels == {n.LABEL_NODE: ["__meta_kubernetes_pod_node_name"]}
                assert ep["metricRelabelings"] == [promserver.DROP_EXPORTED_NODE]
            else:  # the scorer's own per-node `node` label must survive: no target label of that name
                assert n.LABEL_NODE not in relabels and "metricRelabelings" not in ep


def test_minimal_prometheus_scrapes_the_three_jobs_by_identity():
    import yaml

    cm = find(build("with-prometheus"), "ConfigMap", "ksense-prometheus")
    config = yaml.safe_load(cm["data"]["prometheus.yml"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert sorted(jobs) == sorted((n.JOB_EXPORTER, n.JOB_SCHEDULER, n.JOB_SCORER))
    for name, job in jobs.items():
        assert job["honor_labels"] is False
        assert job["kubernetes_sd_configs"] == [{"role": "endpointslice", "namespaces": {"names": [n.NAMESPACE]}}]
        relabels = _relabels(job["relabel_configs"])
        assert relabels[n.LABEL_NAMESPACE] == ["__meta_kubernetes_namespace"]
        assert relabels["pod"] == ["__meta_kubernetes_pod_name"]
        if name == n.JOB_EXPORTER:
            assert relabels[n.LABEL_NODE] == ["__meta_kubernetes_pod_node_name"]
            assert job["metric_relabel_configs"] == [promserver.DROP_EXPORTED_NODE]
        else:
            assert n.LABEL_NODE not in relabels and "metric_relabel_configs" not in job
        assert n.LABEL_JOB not in relabels  # job = job_name, what the selectors name
    # The test parts scrape as these do (tests/scorer/promserver.py).
    test_job = promserver.exporter_job({"w1": "127.0.0.1:1"})
    assert (test_job["honor_labels"], test_job["metric_relabel_configs"]) == (
        jobs[n.JOB_EXPORTER]["honor_labels"], jobs[n.JOB_EXPORTER]["metric_relabel_configs"])
    url = find(build("with-prometheus"), "ConfigMap", "ksense-config")["data"]["KSENSE_PROMETHEUS_URL"]
    assert url == "http://ksense-prometheus.ksense.svc:9090"
    default_url = find(build("default"), "ConfigMap", "ksense-config")["data"]["KSENSE_PROMETHEUS_URL"]
    assert default_url == "http://prometheus-operated.monitoring.svc:9090"


def test_grafana_mounts_every_dashboard_configmap():
    objects = build("with-prometheus")
    dashboards = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"
                        and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1")
    grafana = find(objects, "Deployment", "ksense-grafana")
    (volume,) = [v for v in pod_spec(grafana)["volumes"] if v["name"] == "dashboards"]
    assert sorted(s["configMap"]["name"] for s in volume["projected"]["sources"]) == dashboards

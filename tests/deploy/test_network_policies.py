"""Network exposure of every shipped overlay: each ksense pod is selected by an ingress
NetworkPolicy, every port a policy opens is a port the pod listens on (and every listening port
has a rule), /metrics is open to Prometheus only, and the scorer's 8443 to the control plane's
address range and our scheduler — narrowed to one range by the documented example."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import SHIPPED, build, containers, find, of_kind, pod_spec

PROMETHEUS_PEERS = [
    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
    {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ksense-prometheus"}}},
]
SCHEDULER_PODS = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ksense-scheduler"}}}


def _selects(policy: dict, labels: dict) -> bool:
    want = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in want.items())


def _rules_by_port(policy: dict) -> dict[int, list]:
    return {p["port"]: rule.get("from") for rule in policy["spec"]["ingress"] for p in rule["ports"]}


@pytest.mark.parametrize("overlay", SHIPPED)
def test_every_pod_has_a_policy_matching_its_ports(overlay):
    objects = build(overlay)
    policies = of_kind(objects, "NetworkPolicy")
    for workload in of_kind(objects, "Deployment", "DaemonSet"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies if _selects(p, labels)]
        name = workload["metadata"]["name"]
        assert len(mine) == 1, f"{overlay}: {name} is selected by {len(mine)} NetworkPolicies"
        assert mine[0]["spec"]["policyTypes"] == ["Ingress"]
        listening = {p["containerPort"] for c in containers(workload) for p in c.get("ports", [])}
        assert not pod_spec(workload).get("hostNetwork"), f"{name}: a policy does not apply on the host network"
        assert set(_rules_by_port(mine[0])) == listening, f"{overlay}: {name}"


@pytest.mark.parametrize("overlay", SHIPPED)
def test_metrics_ports_are_open_to_prometheus_only(overlay):
    objects = build(overlay)
    for name, port in (("ksense-exporter", 9860), ("ksense-scorer", 9861), ("ksense-scheduler", 9862)):
        assert _rules_by_port(find(objects, "NetworkPolicy", name))[port] == PROMETHEUS_PEERS, name


def test_scorer_api_admits_private_ranges_and_the_scheduler_by_default():
    peers = _rules_by_port(find(build("default"), "NetworkPolicy", "ksense-scorer"))[8443]
    assert peers == [{"ipBlock": {"cidr": c}} for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")] + [
        SCHEDULER_PODS]


def test_the_example_narrows_the_api_to_the_control_plane():
    peers = _rules_by_port(find(build("example-networkpolicy-control-plane"), "NetworkPolicy", "ksense-scorer"))
    assert peers[8443] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}, SCHEDULER_PODS]
    assert peers[9861] == PROMETHEUS_PEERS


def test_the_demo_prometheus_answers_our_components_and_grafana_only():
    peers = _rules_by_port(find(build("with-prometheus"), "NetworkPolicy", "ksense-prometheus"))[9090]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in peers] == [
        "ksense-scorer", "ksense-scheduler", "ksense-grafana"]

"""Helpers for the deploy tests: build overlays with the venv's kubectl (kustomize) and pick
objects out of the result."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBECTL = Path(sys.executable).parent / "kubectl"

#: Every kustomization a user applies: the root (= default), each overlay, each example.
OVERLAYS = {
    "root": DEPLOY,
    "default": DEPLOY / "overlays" / "default",
    "cert-manager": DEPLOY / "overlays" / "cert-manager",
    "prometheus-operator": DEPLOY / "overlays" / "prometheus-operator",
    "with-prometheus": DEPLOY / "overlays" / "with-prometheus",
    "example-webhook-namespaces": DEPLOY / "examples" / "webhook-namespaces",
    "example-image-registry": DEPLOY / "examples" / "image-registry",
    "example-prometheus-url": DEPLOY / "examples" / "prometheus-url",
    "example-networkpolicy-control-plane": DEPLOY / "examples" / "networkpolicy-control-plane",
}
#: The overlays ksense ships as they are (the examples are meant to be edited).
SHIPPED = ("root", "default", "cert-manager", "prometheus-operator", "with-prometheus")

NAMESPACE = "ksense"
SERVICE_DNS_NAMES = (
    "ksense-scorer",
    "ksense-scorer.ksense",
    "ksense-scorer.ksense.svc",
    "ksense-scorer.ksense.svc.cluster.local",
)


@functools.cache
def build(overlay: str) -> tuple[dict, ...]:
    """`kubectl kustomize` of one overlay, as a tuple of objects (cached: the tests only read)."""
    result = subprocess.run([str(KUBECTL), "kustomize", str(OVERLAYS[overlay])], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def find(objects: tuple[dict, ...], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def of_kind(objects: tuple[dict, ...], *kinds: str) -> list[dict]:
    return [o for o in objects if o["kind"] in kinds]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> Iterator[dict]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env(container: dict) -> dict[str, dict]:
    """name -> the whole env entry (value or valueFrom)."""
    return {e["name"]: e for e in container.get("env", [])}

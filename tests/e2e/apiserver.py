"""The test Kubernetes API server with the ksense admission webhook configured.

tests/kubeapi's fake API server does not emulate admission webhooks (its NOT_EMULATED list), so
this module adds what a kube-apiserver with deploy/'s ValidatingWebhookConfiguration does on a
pod CREATE, without editing the fake:

- the webhook's rules, namespaceSelector, path, timeout and failurePolicy are read from
  `deploy/base/scorer-validatingwebhookconfiguration.yaml` itself (namespaces carry the
  automatic `kubernetes.io/metadata.name` label, as in a real cluster);
- on every pod create that goes through the HTTP API (a POST; `store.create` from the test's
  own process is setup, not a request), after defaulting and before the object is stored — where
  validating admission runs — an AdmissionReview v1 is POSTed over TLS to one scorer replica,
  round-robin as a Service would spread it; `failurePolicy: Ignore` admits the pod when the call
  fails or times out, `Fail` refuses it with the API server's message; a denial is a 403;
- every successful bind is timestamped (`binds`), for the scenario's figures and timeline.

The hook point is the store's `_default_and_validate` step; a test pins that it still exists,
so a refactor of the fake fails loudly instead of silently skipping admission.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.kubeapi.server import PODS, ApiError, KubeAPIServer, ResourceType, Store
from tests.support import REPO

WEBHOOK_MANIFEST = REPO / "deploy" / "base" / "scorer-validatingwebhookconfiguration.yaml"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class WebhookConfig:
    """One webhook of a ValidatingWebhookConfiguration, as far as a pod CREATE needs it."""

    name: str
    path: str
    timeout_s: float
    failure_policy: str
    operations: tuple[str, ...]
    resources: tuple[str, ...]
    namespace_selector: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_manifest(cls, path: Path = WEBHOOK_MANIFEST) -> WebhookConfig:
        doc = yaml.safe_load(path.read_text())
        hook = doc["webhooks"][0]
        rules = hook.get("rules") or []
        return cls(
            name=hook["name"],
            path=(hook.get("clientConfig") or {}).get("service", {}).get("path") or "/",
            timeout_s=float(hook.get("timeoutSeconds", 10)),
            failure_policy=hook.get("failurePolicy", "Fail"),
            operations=tuple(op for r in rules for op in r.get("operations") or ()),
            resources=tuple(res for r in rules for res in r.get("resources") or ()),
            namespace_selector=tuple((hook.get("namespaceSelector") or {}).get("matchExpressions") or ()),
        )

    def matches(self, resource: str, operation: str, namespace: str) -> bool:
        if resource not in self.resources or operation not in self.operations:
            return False
        labels = {NAMESPACE_LABEL: namespace}
        return all(_expression_ok(e, labels) for e in self.namespace_selector)


def _expression_ok(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unknown selector operator {op!r}")


@dataclass
class AdmissionCall:
    """One AdmissionReview the API server sent (or tried to)."""

    wall: float
    namespace: str
    name: str
    uid: str
    endpoint: str
    status: int | None = None  # HTTP status; None when no answer came
    allowed: bool | None = None
    message: str = ""
    duration_s: float = 0.0
    error: str = ""


def review_request(obj: Mapping[str, Any], namespace: str, uid: str) -> dict[str, Any]:
    """The AdmissionReview v1 a kube-apiserver sends for a pod CREATE."""
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": (obj.get("metadata") or {}).get("name", ""), "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": obj, "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


class Webhook:
    """Calls the webhook on one of `endpoints` (base URLs), round-robin; keeps every call."""

    def __init__(self, config: WebhookConfig, endpoints: Sequence[str], *, ca_file: Path | None):
        if not endpoints:
            raise ValueError("a webhook needs at least one endpoint")
        self.config = config
        self._endpoints = itertools.cycle(list(endpoints))
        self._verify: str | bool = str(ca_file) if ca_file else True
        self._lock = threading.Lock()
        self._local = threading.local()
        self.calls: list[AdmissionCall] = []

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def review(self, obj: Mapping[str, Any], namespace: str) -> AdmissionCall:
        with self._lock:
            endpoint = next(self._endpoints)
        meta = obj.get("metadata") or {}
        call = AdmissionCall(time.time(), namespace, meta.get("name", ""), str(uuid.uuid4()), endpoint)
        started = time.monotonic()
        try:
            # verify= per request: REQUESTS_CA_BUNDLE would override a session setting.
            resp = self._session().post(endpoint + self.config.path, json=review_request(obj, namespace, call.uid),
                                        timeout=self.config.timeout_s, verify=self._verify)
            call.status = resp.status_code
            body = resp.json() if resp.status_code == 200 else {}
            answer = body.get("response") or {}
            if answer.get("uid") != call.uid:
                call.error = f"response uid {answer.get('uid')!r} is not the request's"
            call.allowed = bool(answer.get("allowed"))
            call.message = ((answer.get("status") or {}).get("message")) or ""
        except (requests.RequestException, ValueError) as exc:
            call.error = f"{type(exc).__name__}: {exc}"
        call.duration_s = time.monotonic() - started
        with self._lock:
            self.calls.append(call)
        return call

    def admit(self, obj: Mapping[str, Any], namespace: str) -> None:
        """Apply the answer as the API server would; raises ApiError to refuse the create."""
        call = self.review(obj, namespace)
        failed = call.status != 200 or call.allowed is None or bool(call.error)
        if failed:
            if self.config.failure_policy == "Ignore":
                return
            raise ApiError(500, f'Internal error occurred: failed calling webhook "{self.config.name}": '
                                f"{call.error or call.status}")
        if not call.allowed:
            raise ApiError(403, f'admission webhook "{self.config.name}" denied the request: {call.message}')


@dataclass(frozen=True)
class Bind:
    wall: float
    mono: float
    namespace: str
    name: str
    node: str


class AdmittingStore(Store):
    """The fake's store, plus validating admission on HTTP pod creates and bind timestamps."""

    def __init__(self, webhook: Webhook | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.webhook = webhook
        self._request = threading.local()
        self.binds: list[Bind] = []

    def create_raw(self, rt: ResourceType, body: dict, namespace: str | None, *, keep_status: bool = False):
        # keep_status is set only by in-process setup (Store.create), never by a POST.
        self._request.from_api = not keep_status
        try:
            return super().create_raw(rt, body, namespace, keep_status=keep_status)
        finally:
            self._request.from_api = False

    def _default_and_validate(self, rt: ResourceType, obj: dict) -> None:
        super()._default_and_validate(rt, obj)
        if rt is not PODS or self.webhook is None or not getattr(self._request, "from_api", False):
            return
        namespace = obj["metadata"].get("namespace") or "default"
        if self.webhook.config.matches("pods", "CREATE", namespace):
            self.webhook.admit(obj, namespace)

    def bind(self, namespace: str, name: str, node_name: str, **kwargs: Any) -> dict:
        pod = super().bind(namespace, name, node_name, **kwargs)
        self.binds.append(Bind(time.time(), time.monotonic(), namespace, name, node_name))
        return pod


class AdmittingAPIServer(KubeAPIServer):
    """KubeAPIServer whose store is an AdmittingStore (same constructor options)."""

    def __init__(self, webhook: Webhook | None, *, history_limit: int = 1000, default_tolerations: bool = True,
                 priority_classes: Mapping[str, int] | None = None, **kwargs: Any):
        super().__init__(history_limit=history_limit, default_tolerations=default_tolerations,
                         priority_classes=priority_classes, **kwargs)
        self.store = AdmittingStore(webhook, history_limit=history_limit, default_tolerations=default_tolerations,
                                    priority_classes=priority_classes)

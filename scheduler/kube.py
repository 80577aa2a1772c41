"""The scheduler's one door to the Kubernetes API: the ONLY module that imports `kubernetes`.

Everything above this module speaks plain wire-format dicts (what `scheduler.core` reads) and
sees one exception type, `KubeError` (`Gone` for 410), whatever went wrong — an API status, a
timeout, a reset connection. Tests fake the scheduler at this wrapper, never at the client.

Responses are read with `_preload_content=False` and parsed with `json.loads`: the generated
client cannot decode the binding response (docs/development.md#rules-the-code-keeps), and building model objects for
thousands of pods per list would cost more than the scheduling itself. Watches call the
generated list functions with `watch=True` and read the JSON lines themselves: the client's
`watch.Watch` does not fit — its `stop()` cannot interrupt a blocked read on a plain-HTTP
connection (the socket has moved from the connection to the response), and its
`deserialize=False` path fails on ERROR events. A 410 surfaces here as `Gone`; the caller relists.

Leader election on this wrapper's lease calls lives in `scheduler.leader`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from common import names as n

log = logging.getLogger(__name__)

BOUND, CONFLICT, ERROR = n.BIND_RESULTS
PODS, NODES = "pods", "nodes"
#: + the replica's identity: the API server's audit log (and the tests' fake server) tells which
#: replica sent each request, e.g. which one bound a pod.
USER_AGENT_PREFIX = "ksense-scheduler/"


class KubeError(Exception):
    """A failed API call. `status` is the HTTP status, None when no answer came (timeout,
    refused or reset connection) — then the outcome of a write is unknown."""

    def __init__(self, status: int | None, message: str):
        super().__init__(f"{status or 'no answer'}: {message}")
        self.status = status
        self.message = message


class Gone(KubeError):
    """410: the resourceVersion (or continue token) is too old; list again."""


def _status_message(exc: ApiException) -> str:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return json.loads(exc.body or "").get("message") or exc.reason or ""
    return str(exc.reason or "")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn the client's and urllib3's exceptions into KubeError."""
    try:
        yield
    except ApiException as exc:
        status = exc.status or None  # the client says 0 for "no HTTP answer" (e.g. SSL errors)
        error = Gone if status == 410 else KubeError
        raise error(status, f"{what}: {_status_message(exc)}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeError(None, f"{what}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class BindOutcome:
    """`result` is a `ksense_scheduler_binds_total` label; `status` None means no answer came,
    so the pod may have been bound after all."""

    result: str
    status: int | None
    detail: str


class WatchStream:
    """One watch request: iterate for (type, object) pairs of ADDED / MODIFIED / DELETED;
    `resource_version` follows every event and bookmark; an ERROR event raises (`Gone` for
    410). `stop()` from another thread ends a blocked read at once (socket shutdown)."""

    def __init__(self, func: Callable[..., Any], what: str, **kwargs: Any):
        self._func = func
        self._what = what
        self._kwargs = kwargs
        self._lock = threading.Lock()
        self._resp: Any = None
        self._stopped = False
        self.resource_version: str = kwargs.get("resource_version") or ""

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        try:
            with _translated(self._what):
                resp = self._func(watch=True, _preload_content=False, **self._kwargs)
                with self._lock:
                    self._resp = resp
                    stopped = self._stopped
                try:
                    if not stopped:
                        yield from self._events(resp)
                finally:
                    with self._lock:
                        self._resp = None
                    resp.release_conn()
        except KubeError:
            if not self._stopped:  # a cut made by stop() is the end of the stream, not an error
                raise

    def _events(self, resp: Any) -> Iterator[tuple[str, dict]]:
        buffer = b""
        for chunk in resp.stream(amt=None, decode_content=False):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    code = obj.get("code")
                    raise (Gone if code == 410 else KubeError)(code, f"{self._what}: {obj.get('message')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:  # before the yield: a consumer that stops at this event resumes after it
                    self.resource_version = rv
                if etype != "BOOKMARK":
                    yield etype, obj

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):  # already closed or released: nothing to stop
                resp.shutdown()


class ErrorLog:
    """How a retry loop reports its failures: a warning when the error differs from the last one
    logged, the same error again at most every `every_s` (debug in between), a traceback only for
    what is not an API error (a bug), one line on recovery; and how long it has been failing, for
    health checks."""

    def __init__(self, what: str, *, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._what = what
        self._every = every_s
        self._clock = clock
        self._last: str | None = None
        self._logged_at = -math.inf
        self._failing_since: float | None = None

    def failed(self, exc: Exception, retry_in_s: float) -> None:
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        text = f"{type(exc).__name__}: {exc}"
        if text != self._last or now - self._logged_at >= self._every:
            self._last, self._logged_at = text, now
            log.warning("event=api_failing what=%r retry_in_s=%.1f error=%r", self._what, retry_in_s, text,
                        exc_info=not isinstance(exc, KubeError))
        else:
            log.debug("event=api_failing what=%r retry_in_s=%.1f error=%r", self._what, retry_in_s, text)

    def ok(self) -> None:
        if self._failing_since is not None:
            log.info("event=api_recovered what=%r", self._what)
        self._failing_since, self._last = None, None

    def failing_for(self) -> float:
        """Seconds since the first of the current run of failures; 0 when the last attempt worked."""
        since = self._failing_since
        return 0.0 if since is None else self._clock() - since


class Kube:
    """Thin wrapper over the official client: lists, watches, bind, events, status, leases.
    Every method returns plain dicts and raises only `KubeError`. `identity` (the leader-election
    identity) goes into the User-Agent of every request."""

    def __init__(self, api_client: client.ApiClient, *, request_timeout_s: float = 10.0, identity: str = ""):
        if identity:
            api_client.user_agent = USER_AGENT_PREFIX + identity
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)
        self._timeout = request_timeout_s

    @classmethod
    def connect(cls, kubeconfig: Path | None = None, *, request_timeout_s: float = 10.0, identity: str = "") -> Kube:
        """From a kubeconfig file when given, else the in-cluster service account, else the
        default kubeconfig (~/.kube/config) for a developer's machine."""
        cfg = client.Configuration()
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except ConfigException:
                config.load_kube_config(client_configuration=cfg)
        # Three long-lived watches plus lease, bind and event writes share the pool.
        cfg.connection_pool_maxsize = 16
        return cls(client.ApiClient(cfg), request_timeout_s=request_timeout_s, identity=identity)

    def close(self) -> None:
        self._api.close()

    def _lister(self, kind: str) -> Callable[..., Any]:
        return self._core.list_pod_for_all_namespaces if kind == PODS else self._core.list_node

    # --- reading -----------------------------------------------------------------------------
    def list(self, kind: str, field_selector: str = "", *, page_size: int = 500) -> tuple[list[dict], str]:
        """All `kind` objects ("pods" across namespaces, or "nodes") matching the selector, in
        pages; returns (items, resourceVersion of the list) to watch from."""
        items: list[dict] = []
        token = None
        func = self._lister(kind)
        while True:
            kwargs: dict[str, Any] = {"limit": page_size, "_preload_content": False,
                                      "_request_timeout": self._timeout}
            if field_selector:
                kwargs["field_selector"] = field_selector
            if token:
                kwargs["_continue"] = token
            with _translated(f"list {kind}"):
                body = json.loads(func(**kwargs).data)
            items.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, meta.get("resourceVersion") or ""

    def watch(self, kind: str, field_selector: str, resource_version: str, *, timeout_s: float) -> WatchStream:
        """A watch from `resource_version`, ended by the server after `timeout_s` (the client's
        read timeout is a little longer, so a silent dead connection is noticed too)."""
        kwargs: dict[str, Any] = {
            "resource_version": resource_version,
            "timeout_seconds": max(1, int(timeout_s)),
            "allow_watch_bookmarks": True,
            "_request_timeout": (self._timeout, timeout_s + 30.0),
        }
        if field_selector:
            kwargs["field_selector"] = field_selector
        return WatchStream(self._lister(kind), f"watch {kind}", **kwargs)

    # --- writes ------------------------------------------------------------------------------
    def bind(self, namespace: str, name: str, uid: str, node: str, *, timeout_s: float | None = None) -> BindOutcome:
        """POST pods/binding with the pod's uid as precondition. `conflict` for 409 (bound
        elsewhere, replaced by a pod with another uid, being deleted) and 404 (deleted): drop
        the pod. `error` for anything else (5xx, timeout): retry later. `timeout_s` shortens the
        request timeout (to the leadership time left)."""
        timeout = self._timeout if timeout_s is None else min(self._timeout, timeout_s)
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": namespace, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            with _translated(f"bind {namespace}/{name} to {node}"):
                self._core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False,
                                                         _request_timeout=timeout)
        except KubeError as exc:
            return BindOutcome(CONFLICT if exc.status in (404, 409) else ERROR, exc.status, str(exc))
        return BindOutcome(BOUND, 201, "")

    def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Create a core/v1 Event; AlreadyExists (the same deterministic name written by another
        replica or an earlier run) counts as done."""
        try:
            with _translated(f"create event in {namespace}"):
                self._core.create_namespaced_event(namespace, body, _preload_content=False,
                                                   _request_timeout=self._timeout)
        except KubeError as exc:
            if exc.status != 409:
                raise

    def patch_pod_status(self, namespace: str, name: str, uid: str, condition: Mapping[str, Any]) -> None:
        """Strategic-merge one condition into pods/status (conditions merge by type). The uid in
        the patch is a precondition: a recreated pod with the same name is left alone (409)."""
        body = {"metadata": {"uid": uid}, "status": {"conditions": [dict(condition)]}}
        with _translated(f"patch status of {namespace}/{name}"):
            self._core.patch_namespaced_pod_status(name, namespace, body, _preload_content=False,
                                                   _request_timeout=self._timeout)

    # --- leases ------------------------------------------------------------------------------
    def get_lease(self, namespace: str, name: str) -> dict:
        with _translated(f"get lease {namespace}/{name}"):
            return json.loads(self._coordination.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=self._timeout).data)

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict:
        with _translated(f"create lease in {namespace}"):
            return json.loads(self._coordination.create_namespaced_lease(
                namespace, body, _preload_content=False, _request_timeout=self._timeout).data)

    def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict:
        """PUT with metadata.resourceVersion: 409 when someone wrote it since we read it."""
        with _translated(f"update lease {namespace}/{name}"):
            return json.loads(self._coordination.replace_namespaced_lease(
                name, namespace, body, _preload_content=False, _request_timeout=self._timeout).data)

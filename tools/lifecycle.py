"""`python -m tools.lifecycle`: the pod lifecycle load test (docs/tools.md).

Keeps a scheduler busy the way a small inference fleet does: pods `feedback-inference-2` …
`feedback-inference-11` (namespace `sa`, `schedulerName: fuzzy-scheduler`) each live a random
60–180 s, are deleted, and come back 15 s later, so pods keep arriving while nodes change. Each
pod has a NodePort Service (pod i → nodePort 32000 + i, 32002–32011) that outlives the pods.

- At most 2 creations are in flight at once (a semaphore around the create requests), so a
  restart of the tool does not burst 10 pods onto the scheduler at once.
- Every 2 s one list request reads the pods' phase and node, and one row per pod goes to the
  status CSV (durable and size-rotated like the exporter's) and a one-line summary to stdout.
- Bounded and stoppable: every wait wakes on stop; every API call has a timeout; `--duration`
  stops it by itself. On stop (duration, Ctrl-C or SIGTERM) it deletes every pod it created
  (found by label, deleted with the uid precondition, so a same-named pod of someone else is
  never touched) and, with `--delete-services`, its services; then it checks nothing is left.
  A second Ctrl-C exits at once, without clean-up.
- It refuses to start (exit 2) when a pod or service of the same name exists that it did not
  create; leftovers of an earlier run (its label) are deleted first.

Exit status: 0 stopped and cleaned up; 1 something was left behind (named on stderr); 2 bad
options, no usable kubeconfig, the API unreachable or forbidden, or a foreign object in the way.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from common import logs
from common.core.csvrow import format_time
from common.csvfile import MIB, CsvSink

LOG = logging.getLogger("ksense.lifecycle")

NAME_PREFIX = "feedback-inference-"
FIRST, LAST = 2, 11
NODE_PORT_BASE = 32000
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "ksense-lifecycle"
DEFAULT_IMAGE = "registry.k8s.io/pause:3.9"

#: The status CSV: one row per pod per period.
STATUS_COLUMNS = (
    "Time", "Pod", "State", "Phase", "Node", "Age_s", "Lifetime_s", "Pending_s", "Restarts", "Recreations",
    "Service", "NodePort", "LastError",
)

# Slot states (the tool's view, next to the API's phase).
CREATING, ALIVE, DELETING, WAITING, STOPPED = "creating", "alive", "deleting", "waiting", "stopped"

#: Retry delay after a failed create (AlreadyExists while the previous pod terminates, API errors).
RETRY_S = 1.0


class LifecycleError(Exception):
    """A problem the user must fix; main prints it as one line and exits 2."""


@dataclass(frozen=True)
class Config:
    """Everything the run needs; built from the command line (`parse_args`)."""

    namespace: str = "sa"
    scheduler_name: str = "fuzzy-scheduler"
    image: str = DEFAULT_IMAGE
    cpu: str = "50m"
    memory: str = "32Mi"
    container_port: int = 8080
    first: int = FIRST
    last: int = LAST
    min_lifetime_s: float = 60.0
    max_lifetime_s: float = 180.0
    recreate_after_s: float = 15.0
    max_concurrent_creations: int = 2
    status_csv: Path | None = Path("/tmp/ksense/lifecycle_status.csv")
    status_period_s: float = 2.0
    status_max_bytes: int = 16 * MIB
    services: bool = True
    delete_services: bool = False
    duration_s: float | None = None
    seed: int | None = None
    request_timeout_s: float = 10.0
    grace_period_s: int | None = None
    quiet: bool = False


def pod_name(i: int) -> str:
    return f"{NAME_PREFIX}{i}"


def node_port(i: int) -> int:
    return NODE_PORT_BASE + i


def labels(i: int) -> dict[str, str]:
    return {"app": pod_name(i), MANAGED_BY_LABEL: MANAGED_BY}


def pod_manifest(cfg: Config, i: int) -> dict[str, Any]:
    """A small inference-like pod: one container, small requests, the fuzzy scheduler."""
    resources = {"requests": {"cpu": cfg.cpu, "memory": cfg.memory}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(i), "namespace": cfg.namespace, "labels": labels(i)},
        "spec": {
            "schedulerName": cfg.scheduler_name,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "inference",
                "image": cfg.image,
                "ports": [{"name": "http", "containerPort": cfg.container_port}],
                "resources": resources,
            }],
        },
    }


def service_manifest(cfg: Config, i: int) -> dict[str, Any]:
    """NodePort Service for pod i on nodePort 32000 + i, selecting the pod by its `app` label."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": pod_name(i), "namespace": cfg.namespace, "labels": labels(i)},
        "spec": {
            "type": "NodePort",
            "selector": {"app": pod_name(i)},
            "ports": [{"name": "http", "port": cfg.container_port, "targetPort": cfg.container_port,
                       "nodePort": node_port(i), "protocol": "TCP"}],
        },
    }


def _api_error(exc: Exception) -> str:
    """One line for an API failure: `409 AlreadyExists`, `connection refused`, ..."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}".strip()
    return f"{type(exc).__name__}: {exc}"[:200]


@dataclass
class Slot:
    """One pod name's life: written by its worker thread, read by the status thread (under `lock`)."""

    index: int
    state: str = WAITING
    uid: str | None = None
    created_at: float | None = None
    lifetime_s: float | None = None
    running_at: float | None = None  # first status tick that saw the pod out of Pending
    phase: str = ""
    node: str = ""
    restarts: int = 0
    creations: int = 0
    service_ok: bool = False
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return pod_name(self.index)


@dataclass
class Counters:
    creations: int = 0
    deletions: int = 0
    errors: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class Lifecycle:
    """The load test against one namespace; `run()` blocks until stopped, then cleans up."""

    def __init__(self, cfg: Config, api_client: client.ApiClient, *, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, out: TextIO = sys.stdout):
        self.cfg = cfg
        self.core = client.CoreV1Api(api_client)
        self.stop = stop or threading.Event()
        self.clock = clock
        self.out = out
        self.slots = [Slot(i) for i in range(cfg.first, cfg.last + 1)]
        self.gate = threading.BoundedSemaphore(cfg.max_concurrent_creations)
        self.counters = Counters()
        self._counter_lock = threading.Lock()
        self._started = clock()
        self._sink = CsvSink(cfg.status_csv, STATUS_COLUMNS, max_bytes=cfg.status_max_bytes,
                             keep=2) if cfg.status_csv else None

    # ---- API calls (all with a timeout) --------------------------------------------------

    def _kw(self) -> dict[str, Any]:
        return {"_request_timeout": self.cfg.request_timeout_s}

    def _our_pods(self) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(
            self.cfg.namespace, label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}", **self._kw()).items

    def _delete_pod(self, name: str, uid: str | None) -> bool:
        """Delete one pod of ours; True when it is gone (or was already)."""
        body = client.V1DeleteOptions(grace_period_seconds=self.cfg.grace_period_s,
                                      preconditions=client.V1Preconditions(uid=uid) if uid else None)
        try:
            self.core.delete_namespaced_pod(name, self.cfg.namespace, body=body, **self._kw())
        except ApiException as exc:
            if exc.status == 404:
                return True
            if exc.status == 409:  # the uid no longer matches: not our pod any more, leave it
                LOG.warning("event=pod_replaced pod=%s/%s effect='left alone'", self.cfg.namespace, name)
                return True
            raise
        return True

    def _delete_service(self, name: str) -> None:
        try:
            self.core.delete_namespaced_service(name, self.cfg.namespace, **self._kw())
        except ApiException as exc:
            if exc.status != 404:
                raise

    # ---- preflight ---------------------------------------------------------------------------

    def preflight(self) -> None:
        """The API answers; no foreign pod or service holds one of our names; leftovers of an
        earlier run are deleted."""
        ns = self.cfg.namespace
        names = {s.name for s in self.slots}
        try:
            pods = self.core.list_namespaced_pod(ns, **self._kw()).items
        except ApiException as exc:
            raise LifecycleError(f"cannot list pods in namespace {ns}: {_api_error(exc)}") from None
        except (HTTPError, OSError) as exc:
            raise LifecycleError(f"Kubernetes API unreachable at {self.core.api_client.configuration.host}: "
                                 f"{_api_error(exc)}") from None
        foreign, leftovers = [], []
        for p in pods:
            if p.metadata.name in names:
                ours = (p.metadata.labels or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
                (leftovers if ours else foreign).append(p)
        if self.cfg.services:
            try:
                services = self.core.list_namespaced_service(ns, **self._kw()).items
            except ApiException as exc:
                raise LifecycleError(f"cannot list services in namespace {ns}: {_api_error(exc)} "
                                     "(use --no-services to run without them)") from None
            for svc in services:
                if svc.metadata.name in names and (svc.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
                    foreign.append(svc)
        if foreign:
            listed = ", ".join(f"{type(o).__name__[2:].lower()} {ns}/{o.metadata.name}" for o in foreign)
            raise LifecycleError(f"{listed}: not created by this tool (no label {MANAGED_BY_LABEL}={MANAGED_BY}); "
                                 "delete it or use another --namespace")
        for p in leftovers:
            LOG.info("event=leftover_pod_deleted pod=%s/%s", ns, p.metadata.name)
            try:
                self._delete_pod(p.metadata.name, p.metadata.uid)
            except (ApiException, HTTPError, OSError) as exc:
                raise LifecycleError(f"cannot delete pod {ns}/{p.metadata.name} left over by an earlier run: "
                                     f"{_api_error(exc)}") from None

    # ---- the slot workers ----------------------------------------------------------------

    @contextmanager
    def _creation(self) -> Iterator[bool]:
        """Hold one of the creation permits; yields False (without a permit) when stopping."""
        while not self.gate.acquire(timeout=0.1):
            if self.stop.is_set():
                yield False
                return
        with self._counter_lock:
            self.counters.in_flight += 1
            self.counters.max_in_flight = max(self.counters.max_in_flight, self.counters.in_flight)
        try:
            yield not self.stop.is_set()
        finally:
            with self._counter_lock:
                self.counters.in_flight -= 1
            self.gate.release()

    def _ensure_service(self, slot: Slot) -> None:
        if not self.cfg.services or slot.service_ok:
            return
        try:
            self.core.create_namespaced_service(self.cfg.namespace, service_manifest(self.cfg, slot.index),
                                                **self._kw())
            slot.service_ok = True
            LOG.info("event=service_created service=%s/%s node_port=%d", self.cfg.namespace, slot.name,
                     node_port(slot.index))
        except ApiException as exc:
            if exc.status != 409:
                raise
            slot.service_ok = True  # ours from an earlier run (preflight refused foreign ones): keep it

    def _create(self, slot: Slot) -> bool:
        with slot.lock:
            slot.state = CREATING
        try:
            try:
                self._ensure_service(slot)
            except (ApiException, HTTPError, OSError) as exc:  # the pod is still worth creating
                self._error(slot, f"service: {_api_error(exc)}")
            pod = self.core.create_namespaced_pod(self.cfg.namespace, pod_manifest(self.cfg, slot.index),
                                                  **self._kw())
        except (ApiException, HTTPError, OSError) as exc:
            why = _api_error(exc)
            pod = self._adoptable(slot) if isinstance(exc, ApiException) and exc.status == 409 else None
            if pod is None:
                if isinstance(exc, ApiException) and exc.status == 409:
                    why += " (the previous pod is still terminating)"
                self._error(slot, f"create: {why}")
                return False
            LOG.info("event=pod_adopted pod=%s why='created by a request whose answer was lost'", slot.name)
        with slot.lock:
            slot.state, slot.uid, slot.created_at = ALIVE, pod.metadata.uid, self.clock()
            slot.running_at, slot.phase, slot.node, slot.restarts = None, "Pending", "", 0
            slot.creations += 1
            slot.last_error = ""
        with self._counter_lock:
            self.counters.creations += 1
        return True

    def _adoptable(self, slot: Slot) -> client.V1Pod | None:
        """After 409 AlreadyExists: the pod when it is ours and not terminating (an earlier create
        timed out after the server had created it), else None (the last one is still going away)."""
        try:
            pod = self.core.read_namespaced_pod(slot.name, self.cfg.namespace, **self._kw())
        except (ApiException, HTTPError, OSError):
            return None
        ours = (pod.metadata.labels or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
        return pod if ours and not pod.metadata.deletion_timestamp else None

    def _error(self, slot: Slot, message: str) -> None:
        LOG.warning("event=slot_error slot=%s error=%r", slot.name, message)
        with slot.lock:
            slot.last_error = message
        with self._counter_lock:
            self.counters.errors += 1

    def _slot_loop(self, slot: Slot) -> None:
        try:
            self._slot_cycle(slot)
        except Exception as exc:  # a bug: keep the other pods going; clean-up still finds this one by label
            LOG.exception("event=worker_failed slot=%s", slot.name)
            self._error(slot, f"worker failed: {exc!r}")

    def _slot_cycle(self, slot: Slot) -> None:
        seed = self.cfg.seed
        rng = random.Random(f"{seed}:{slot.index}") if seed is not None else random.Random()
        while not self.stop.is_set():
            with self._creation() as permitted:
                created = permitted and self._create(slot)
            if not created:
                if self.stop.wait(RETRY_S):
                    break
                continue
            lifetime = rng.uniform(self.cfg.min_lifetime_s, self.cfg.max_lifetime_s)
            with slot.lock:
                slot.lifetime_s = lifetime
            if self.stop.wait(lifetime):
                break
            with slot.lock:
                slot.state = DELETING
                uid = slot.uid
            try:
                self._delete_pod(slot.name, uid)
            except (ApiException, HTTPError, OSError) as exc:
                self._error(slot, f"delete: {_api_error(exc)}")  # clean-up at stop finds it by label
            with slot.lock:
                slot.state, slot.uid, slot.created_at, slot.lifetime_s = WAITING, None, None, None
                slot.phase, slot.node = "", ""
            with self._counter_lock:
                self.counters.deletions += 1
            if self.stop.wait(self.cfg.recreate_after_s):
                break

    # ---- status ------------------------------------------------------------------------------

    def _observe(self) -> str:
        """One list request: phase, node and restarts of each live pod. '' or the error."""
        try:
            pods = {p.metadata.name: p for p in self._our_pods()}
        except (ApiException, HTTPError, OSError) as exc:
            return _api_error(exc)
        now = self.clock()
        for slot in self.slots:
            p = pods.get(slot.name)
            with slot.lock:
                if p is None or slot.uid is None or p.metadata.uid != slot.uid:
                    continue
                slot.phase = (p.status.phase if p.status else "") or ""
                slot.node = (p.spec.node_name if p.spec else "") or ""
                statuses = (p.status.container_statuses if p.status else None) or []
                slot.restarts = sum(cs.restart_count or 0 for cs in statuses)
                if slot.running_at is None and slot.phase not in ("", "Pending"):
                    slot.running_at = now
        return ""

    def status_rows(self, wall: datetime, now: float) -> list[list[object]]:
        rows = []
        for slot in self.slots:
            with slot.lock:
                age = now - slot.created_at if slot.created_at is not None else None
                pending = None
                if slot.created_at is not None:
                    pending = (slot.running_at if slot.running_at is not None else now) - slot.created_at
                rows.append([
                    format_time(wall), slot.name, slot.state, slot.phase, slot.node,
                    None if age is None else f"{age:.1f}",
                    None if slot.lifetime_s is None else f"{slot.lifetime_s:.1f}",
                    None if pending is None else f"{pending:.1f}",
                    slot.restarts, max(0, slot.creations - 1),
                    slot.name if self.cfg.services else None, node_port(slot.index) if self.cfg.services else None,
                    slot.last_error or None,
                ])
        return rows

    def _status_tick(self, final: bool = False) -> None:
        error = "" if final else self._observe()
        rows = self.status_rows(datetime.now(), self.clock())
        if self._sink is not None:
            for row in rows:
                self._sink.write(row)
        if not self.cfg.quiet:
            states = [r[2] for r in rows]
            phases = [r[3] for r in rows if r[3]]
            c = self.counters
            line = (f"lifecycle t={self.clock() - self._started:.0f}s "
                    + " ".join(f"{s} {states.count(s)}" for s in (ALIVE, CREATING, DELETING, WAITING, STOPPED)
                               if states.count(s))
                    + " | " + (" ".join(f"{p} {phases.count(p)}" for p in sorted(set(phases))) or "no pods")
                    + f" | created {c.creations} deleted {c.deletions} errors {c.errors}"
                    + (f" | status list failed: {error}" if error else ""))
            print(line, file=self.out, flush=True)

    def _status_loop(self) -> None:
        period = self.cfg.status_period_s
        k = 1
        while not self.stop.wait(max(0.0, self._started + k * period - self.clock())):
            self._status_tick()
            k = max(k + 1, int((self.clock() - self._started) / period) + 1)  # skip missed ticks, no burst

    # ---- run and clean up --------------------------------------------------------------------

    def run(self) -> int:
        self.preflight()
        self._started = self.clock()
        threads = [threading.Thread(target=self._slot_loop, args=(s,), name=f"lifecycle-{s.index}", daemon=True)
                   for s in self.slots]
        threads.append(threading.Thread(target=self._status_loop, name="lifecycle-status", daemon=True))
        for t in threads:
            t.start()
        LOG.info("event=started pods=%d namespace=%s duration=%r", len(self.slots), self.cfg.namespace,
                 f"{self.cfg.duration_s:g} s" if self.cfg.duration_s else "until stopped")
        # Poll, never block on the event here: the signal handler sets it from this very thread.
        end = None if self.cfg.duration_s is None else self._started + self.cfg.duration_s
        while not self.stop.is_set():
            remaining = 0.2 if end is None else min(0.2, end - self.clock())
            if remaining <= 0:
                break
            time.sleep(remaining)
        self.stop.set()
        deadline = self.clock() + self.cfg.request_timeout_s + 2.0
        for t in threads:
            t.join(timeout=max(0.0, deadline - self.clock()))
        try:
            return self.cleanup()
        finally:
            if self._sink is not None:
                self._sink.close()

    def cleanup(self) -> int:
        """Delete our pods (and services with --delete-services); 0 when nothing is left."""
        ns, left = self.cfg.namespace, []
        names = {s.name for s in self.slots}
        try:
            for p in self._our_pods():
                if p.metadata.name in names:
                    self._delete_pod(p.metadata.name, p.metadata.uid)
            if self.cfg.services and self.cfg.delete_services:
                services = self.core.list_namespaced_service(
                    ns, label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}", **self._kw()).items
                for svc in services:
                    if svc.metadata.name in names:
                        self._delete_service(svc.metadata.name)
            left = [f"pod {ns}/{p.metadata.name}" for p in self._our_pods()
                    if p.metadata.name in names and not p.metadata.deletion_timestamp]
        except (ApiException, HTTPError, OSError) as exc:
            span = f"{NAME_PREFIX}{{{self.cfg.first}..{self.cfg.last}}}"
            left = [f"maybe pods {ns}/{span} (clean-up failed: {_api_error(exc)})"]
        for s in self.slots:
            with s.lock:
                s.state, s.uid, s.created_at, s.lifetime_s, s.phase, s.node = STOPPED, None, None, None, "", ""
        self._status_tick(final=True)
        c = self.counters
        kept = " (services kept)" if self.cfg.services and not self.cfg.delete_services else ""
        print(f"lifecycle: stopped; created {c.creations} pods, deleted {c.deletions}, errors {c.errors}, "
              f"at most {c.max_in_flight} creations at once{kept}", file=self.out, flush=True)
        if left:
            print(f"lifecycle: left behind: {', '.join(left)}", file=sys.stderr)
            return 1
        return 0


# --------------------------------------------------------------------------------------------
# Command line


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(
        prog="python -m tools.lifecycle",
        description=f"Pod lifecycle load test: pods {NAME_PREFIX}{FIRST}..{LAST} with NodePort services "
                    f"{node_port(FIRST)}-{node_port(LAST)}, random lifetimes, recreated after a pause; "
                    "cleans up on Ctrl-C/SIGTERM or after --duration.",
    )
    k = p.add_argument_group("cluster")
    k.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster when run in a pod, else "
                                        "$KUBECONFIG or ~/.kube/config)")
    k.add_argument("--context", help="kubeconfig context (default: the current context)")
    k.add_argument("--namespace", "-n", default=d.namespace, help=f"namespace (default {d.namespace})")
    k.add_argument("--request-timeout", type=_positive, default=d.request_timeout_s,
                   help=f"seconds per API request (default {d.request_timeout_s:g})")
    w = p.add_argument_group("workload")
    w.add_argument("--scheduler-name", default=d.scheduler_name, help=f"default {d.scheduler_name}")
    w.add_argument("--image", default=d.image, help=f"container image (default {d.image})")
    w.add_argument("--cpu", default=d.cpu, help=f"CPU request (default {d.cpu})")
    w.add_argument("--memory", default=d.memory, help=f"memory request (default {d.memory})")
    w.add_argument("--container-port", type=int, default=d.container_port,
                   help=f"container port and service port (default {d.container_port})")
    w.add_argument("--min-lifetime", type=_positive, default=d.min_lifetime_s,
                   help=f"shortest pod lifetime, seconds (default {d.min_lifetime_s:g})")
    w.add_argument("--max-lifetime", type=_positive, default=d.max_lifetime_s,
                   help=f"longest pod lifetime, seconds (default {d.max_lifetime_s:g})")
    w.add_argument("--recreate-after", type=_non_negative, default=d.recreate_after_s,
                   help=f"seconds between a pod's deletion and its re-creation (default {d.recreate_after_s:g})")
    w.add_argument("--max-concurrent-creations", type=int, default=d.max_concurrent_creations,
                   help=f"creations in flight at once (default {d.max_concurrent_creations})")
    w.add_argument("--seed", type=int, help="seed for the lifetimes (default: random)")
    w.add_argument("--grace-period", type=int, help="deletion grace period, seconds (default: the pod's, 5)")
    w.add_argument("--no-services", dest="services", action="store_false",
                   help="create no NodePort services (pods only)")
    w.add_argument("--delete-services", action="store_true", help="delete the services on exit (default: keep)")
    r = p.add_argument_group("run")
    r.add_argument("--duration", type=_positive, help="stop by itself after this many seconds (default: run until "
                                                      "Ctrl-C/SIGTERM)")
    r.add_argument("--status-csv", default=str(d.status_csv),
                   help=f"status CSV, appended to, rotated at 16 MiB; '' for none (default {d.status_csv})")
    r.add_argument("--status-period", type=_positive, default=d.status_period_s,
                   help=f"seconds between status rows (default {d.status_period_s:g})")
    r.add_argument("--quiet", "-q", action="store_true", help="no per-period summary line on stdout")
    return p


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    args = _parser().parse_args(argv)
    problems = []
    if args.min_lifetime > args.max_lifetime:
        problems.append(f"--min-lifetime {args.min_lifetime:g} > --max-lifetime {args.max_lifetime:g}")
    if args.max_concurrent_creations < 1:
        problems.append(f"--max-concurrent-creations {args.max_concurrent_creations}: must be ≥ 1")
    if not 1 <= args.container_port <= 65535:
        problems.append(f"--container-port {args.container_port}: not a port")
    if args.grace_period is not None and args.grace_period < 0:
        problems.append(f"--grace-period {args.grace_period}: must be ≥ 0")
    if problems:
        raise LifecycleError("invalid options: " + "; ".join(problems))
    cfg = Config(
        namespace=args.namespace, scheduler_name=args.scheduler_name, image=args.image, cpu=args.cpu,
        memory=args.memory, container_port=args.container_port, min_lifetime_s=args.min_lifetime,
        max_lifetime_s=args.max_lifetime, recreate_after_s=args.recreate_after,
        max_concurrent_creations=args.max_concurrent_creations,
        status_csv=Path(args.status_csv) if args.status_csv else None, status_period_s=args.status_period,
        services=args.services, delete_services=args.delete_services, duration_s=args.duration, seed=args.seed,
        request_timeout_s=args.request_timeout, grace_period_s=args.grace_period, quiet=args.quiet,
    )
    return cfg, args


def load_api_client(kubeconfig: str | None, context: str | None,
                    environ: dict[str, str] | os._Environ = os.environ) -> client.ApiClient:
    """Kubeconfig when named (or a context is), in-cluster inside a pod, else the default kubeconfig."""
    configuration = client.Configuration()
    try:
        if kubeconfig or context or not environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        where = kubeconfig or environ.get("KUBECONFIG") or "~/.kube/config"
        raise LifecycleError(f"no usable Kubernetes configuration ({where}): {exc}") from None
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, 16)  # 10 workers + status
    return client.ApiClient(configuration)


def run(argv: Sequence[str] | None = None, *, stop: threading.Event | None = None,
        api_client: client.ApiClient | None = None, out: TextIO = sys.stdout) -> int:
    cfg, args = parse_args(argv)
    own_client = api_client is None
    api_client = api_client or load_api_client(args.kubeconfig, args.context)
    try:
        return Lifecycle(cfg, api_client, stop=stop, out=out).run()
    finally:
        if own_client:
            api_client.close()


def main(argv: Sequence[str] | None = None) -> int:
    logs.setup()
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            print("lifecycle: second signal, exiting without clean-up", file=sys.stderr, flush=True)
            os._exit(130)
        print(f"lifecycle: {signal.Signals(signum).name}, stopping and cleaning up "
              "(again to exit at once)", file=sys.stderr, flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return run(argv, stop=stop)
    except LifecycleError as exc:
        print(f"lifecycle: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Fixtures of the scheduler shell tests: the fake API server (tests/kubeapi), a scriptable score
source, fast configs, and scheduler instances run in threads and stopped at teardown."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest

from scheduler.config import SchedulerConfig
from scheduler.core.filters import ScoreRecord
from scheduler.kube import USER_AGENT_PREFIX, Kube
from scheduler.loop import Runtime
from scheduler.scores import Scores
from tests.kubeapi import factories as f
from tests.kubeapi.client import make_api_client
from tests.kubeapi.fixtures import KubeAPI, kube_api, running_kube_api  # noqa: F401  (pytest fixtures)
from tests.support import wait_for

NS = "default"


class FakeScores:
    """A score source the test scripts: `set(...)` the records, or `fail(reason)`."""

    name = "fake"

    def __init__(self, records: Mapping[str, ScoreRecord] | None = None):
        self._lock = threading.Lock()
        self._scores = Scores(dict(records or {}))
        self.fetches = 0

    def set(self, records: Mapping[str, ScoreRecord]) -> None:
        with self._lock:
            self._scores = Scores(dict(records))

    def fail(self, reason: str = "unreachable") -> None:
        with self._lock:
            self._scores = Scores(error=reason)

    def fetch(self) -> Scores:
        with self._lock:
            self.fetches += 1
            return self._scores


def allow(*nodes: str, score: float = 20.0) -> dict[str, ScoreRecord]:
    return {n: ScoreRecord(True, score, True) for n in nodes}


def deny(*nodes: str, score: float = 80.0) -> dict[str, ScoreRecord]:
    return {n: ScoreRecord(False, score, True) for n in nodes}


def fast_config(**overrides: Any) -> SchedulerConfig:
    """Rate limits off, short lease timings, short timeouts: tests finish in seconds."""
    base = SchedulerConfig(
        poll_s=1.0, max_per_cycle=0, placement_delay_s=0.0, score_source="scorer", namespace="ksense",
        identity="test-a", lease_duration_s=3.0, renew_deadline_s=2.0, retry_period_s=0.3,
        request_timeout_s=2.0, watch_timeout_s=30.0,
    )
    return replace(base, **overrides)


def kube_for(url: str, *, timeout_s: float = 2.0, identity: str = "") -> Kube:
    return Kube(make_api_client(url), request_timeout_s=timeout_s, identity=identity)


class Instance:
    """A Runtime running in a thread; `stop(release=...)` ends it (release=False: a crash)."""

    def __init__(self, runtime: Runtime, *, release: bool = True):
        self.runtime = runtime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=runtime.run, args=(self._stop,), kwargs={"release": release},
                                        name=f"scheduler-{runtime.cfg.identity}", daemon=True)

    def start(self) -> Instance:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "scheduler did not stop"
        self.runtime.kube.close()

    @property
    def stats(self):
        return self.runtime.stats


@pytest.fixture
def start_scheduler() -> Iterator[Callable[..., Instance]]:
    """start_scheduler(url, scores, **config overrides) → a started Instance, stopped at teardown.
    `clock` replaces the scheduler's monotonic clock (a test moves it on instead of waiting)."""
    started: list[Instance] = []

    def start(url: str, scores: Any, *, release: bool = True, wait_leader: bool = True,
              clock: Callable[[], float] = time.monotonic, **overrides: Any) -> Instance:
        cfg = fast_config(**overrides)
        inst = Instance(Runtime(cfg, kube=kube_for(url, timeout_s=cfg.request_timeout_s, identity=cfg.identity),
                                scores=scores, clock=clock),
                        release=release).start()
        started.append(inst)
        wait_for(inst.runtime.ready, 10, "the scheduler's first lists")
        if wait_leader:
            wait_for(inst.runtime.elector.is_leader, 10, "leadership")
        return inst

    yield start
    for inst in started:
        with contextlib.suppress(AssertionError):
            inst.stop()


def add_nodes(k: KubeAPI, *names: str, **kwargs: Any) -> None:
    for name in names:
        k.store.create("nodes", f.node(name, **kwargs))


def add_pods(k: KubeAPI, *names: str, **kwargs: Any) -> list[dict]:
    """Pods created through the official client (a POST: uid, defaults, Pending)."""
    return [k.core.api_client.sanitize_for_serialization(
        k.core.create_namespaced_pod(NS, f.pod(name, **kwargs))) for name in names]


def node_of(k: KubeAPI, name: str) -> str:
    return (k.store.pod(NS, name) or {}).get("spec", {}).get("nodeName") or ""


def binding_successes(k: KubeAPI) -> dict[str, int]:
    """pod name → how many binding requests the server answered 201 (its request history)."""
    out: dict[str, int] = {}
    for rec in list(k.server.requests):
        if rec.resource in ("pods/binding", "bindings") and rec.status == 201:
            out[rec.name or ""] = out.get(rec.name or "", 0) + 1
    return out


def binding_requests(k: KubeAPI) -> list[tuple[str, str, int]]:
    """(pod name, identity of the replica that sent it, status) of every binding request, in the
    order the server answered them (its request history; status 0 = no answer)."""
    return [(rec.name or "", caller_identity(rec.user_agent), rec.status) for rec in list(k.server.requests)
            if rec.resource in ("pods/binding", "bindings")]


def caller_identity(user_agent: str) -> str:
    return user_agent.removeprefix(USER_AGENT_PREFIX)


def assert_one_binder_at_a_time(k: KubeAPI, order: list[str]) -> None:
    """The replicas' binding spans never overlap: every binding request comes from the leader of
    that moment, so the callers appear in `order`, each in one unbroken run."""
    callers = [who for _, who, _ in binding_requests(k)]
    runs = [who for i, who in enumerate(callers) if i == 0 or callers[i - 1] != who]
    assert runs == [who for who in order if who in callers] and set(callers) <= set(order), \
        f"binding requests interleave between replicas: {runs}"

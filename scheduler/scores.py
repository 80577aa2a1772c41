"""Where the scheduler reads each node's fuzzy decision: Prometheus (default) or the scorer's /score.

One request per scheduling cycle for all nodes, never one per node or per pod; the answer
becomes `ScoreRecord`s (allowed, score, fresh) for the core's fuzzy filter.

**Prometheus** (`FUZZY_SCORE_SOURCE=prometheus`): the series the scorer exports, only those with
the scorers' scrape identity (`selector`, KSENSE_SCORER_SELECTOR, default
`job="ksense-scorer",namespace="ksense"`: labels Prometheus attaches with honor_labels off, see
common/names.py; by bare name any other scrape target could publish an allow for any node, or
a deny), aggregated over scorer replicas as docs/metrics.md#scorer-metrics says — `min by (node)` of
`ksense_node_admission_allowed` (deny wins) and `max by (node)` of `ksense_node_score` — plus,
for freshness, the newest sample time of each via `timestamp()`, and a denied node's top pods
(`ksense_node_top_pod`, exported only for denied nodes, per role: victim, aggressor, io_aggressor)
for the FailedScheduling message. The five vectors travel in one instant query, each tagged
with a `ksense_q` label by `label_replace` so `or` keeps them apart. Replicas that disagree on
a node's top pod (each names the pod its own last tick saw) are reconciled as the decision is:
only a denying replica names pods, so deny wins by construction; of the pods named for a role,
the highest rate, then a named pod over a UID-only one, then the lowest UID (`_top_pod`), so one
answer always names the same pod whatever order Prometheus returns the series in.
A sample's age is the query's evaluation time minus its timestamp, both Prometheus' clock, so
clock skew between hosts does not matter; older than `FUZZY_LONG_WIN_S` → stale (Prometheus
would otherwise serve a 5-minute-old sample as current). The newest time per node is used: a
stuck replica can then add a deny (min) but never an allow.

**Scorer** (`FUZZY_SCORE_SOURCE=scorer`): `GET /score` (docs/api.md) over HTTPS with
certificate verification on (a CA file may be given; `verify=` is passed per request because
`REQUESTS_CA_BUNDLE` would override a session setting). Freshness: the report's `time` against
our wall clock. The report's `victim`, `aggressor` and `io_aggressor` (a denied node's top pods)
ride along for the FailedScheduling message.

Both sources bound the whole answer by `timeout_s` (DeadlineSession), not each read: a server
trickling its answer cannot hold a cycle. A source that is down, times out, or answers garbage
yields no records (`Scores.error` says why): every node fails the fuzzy filter with `no_score`,
nothing is bound, and pods say why.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import requests

from common import names as n
from common.deadline_http import DeadlineSession
from common.http_reason import failure_reason
from scheduler.core.filters import ScoreRecord

log = logging.getLogger(__name__)

TAG = "ksense_q"
ALLOWED, SCORE, ALLOWED_TS, SCORE_TS, POD = "allowed", "score", "allowed_ts", "score_ts", "pod"
_POD_LABELS = (n.LABEL_ROLE, n.LABEL_POD_NAMESPACE, n.LABEL_POD_NAME, n.LABEL_POD_UID)


@dataclass(frozen=True)
class Scores:
    """One fetch: records by node, and the failure reason (a short label) when it failed."""

    records: Mapping[str, ScoreRecord] = field(default_factory=dict)
    error: str | None = None


class ScoreSource(Protocol):
    name: str

    def fetch(self) -> Scores: ...


def _tagged(expr: str, tag: str) -> str:
    return f'label_replace({expr}, "{TAG}", "{tag}", "", "")'


def prometheus_query(selector: str = n.SCORER_SELECTOR) -> str:
    """The one instant query per cycle (module docstring), over the series `selector` (label
    matchers) picks."""
    allowed, score, top = (f"{family.name}{{{selector}}}"
                           for family in (n.NODE_ADMISSION_ALLOWED, n.NODE_SCORE, n.NODE_TOP_POD))
    by = n.LABEL_NODE
    return " or ".join((
        _tagged(f"min by ({by}) ({allowed})", ALLOWED),
        _tagged(f"max by ({by}) ({score})", SCORE),
        _tagged(f"max by ({by}) (timestamp({allowed}))", ALLOWED_TS),
        _tagged(f"max by ({by}) (timestamp({score}))", SCORE_TS),
        _tagged(f"max by ({', '.join((by, *_POD_LABELS))}) ({top})", POD),
    ))


def parse_prometheus(body: Mapping[str, Any], long_win_s: float) -> dict[str, ScoreRecord]:
    """Records from the query's JSON answer. A node needs all four values; the age is the
    evaluation time (each sample's first element) minus the older of the two sample times.
    Raises ValueError for an answer that is not a successful vector."""
    if body.get("status") != "success" or (body.get("data") or {}).get("resultType") != "vector":
        raise ValueError(f"not a successful vector: {str(body)[:200]}")
    values: dict[str, dict[str, tuple[float, float]]] = {}
    pods: dict[tuple[str, str], list[tuple[float, Mapping[str, str]]]] = {}
    for sample in body["data"].get("result") or ():
        metric = sample.get("metric") or {}
        node, tag = metric.get(n.LABEL_NODE), metric.get(TAG)
        if not node or not tag:
            continue
        at, value = sample["value"]
        if tag == POD:
            if metric.get(n.LABEL_ROLE) in n.POD_ROLES and metric.get(n.LABEL_POD_UID):
                pods.setdefault((node, metric[n.LABEL_ROLE]), []).append((float(value), metric))
            continue
        values.setdefault(node, {})[tag] = (float(at), float(value))
    records = {}
    for node, got in values.items():
        if not {ALLOWED, SCORE, ALLOWED_TS, SCORE_TS} <= got.keys():
            continue
        evaluated = got[ALLOWED][0]
        age = evaluated - min(got[ALLOWED_TS][1], got[SCORE_TS][1])
        allowed = got[ALLOWED][1] >= 0.5
        named = {} if allowed else {role: _top_pod(pods.get((node, role), ())) for role in n.POD_ROLES}
        records[node] = ScoreRecord(allowed=allowed, score=got[SCORE][1], fresh=age <= long_win_s, **named)
    return records


def _top_pod(candidates: Iterable[tuple[float, Mapping[str, str]]]) -> str:
    """The pod shown for one node and role (module docstring): highest rate, then named, then
    lowest UID; "" when none."""
    ranked = sorted(candidates, key=lambda c: (-c[0], not c[1].get(n.LABEL_POD_NAME), c[1][n.LABEL_POD_UID]))
    if not ranked:
        return ""
    labels = ranked[0][1]
    return n.pod_shown(labels.get(n.LABEL_POD_NAMESPACE, ""), labels.get(n.LABEL_POD_NAME, ""),
                       labels[n.LABEL_POD_UID])


def _parse_time(text: object) -> float:
    if not isinstance(text, str):
        return -math.inf
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return -math.inf


def parse_scorer(body: Mapping[str, Any], now: float, long_win_s: float) -> dict[str, ScoreRecord]:
    """Records from `GET /score` (docs/api.md). Raises ValueError when it is not that shape."""
    nodes = body.get("nodes")
    if not isinstance(nodes, list):
        raise ValueError(f"no nodes list: {str(body)[:200]}")
    records = {}
    for report in nodes:
        node = report.get("node") if isinstance(report, dict) else None
        if not node:
            continue
        score = report.get("score")
        records[node] = ScoreRecord(
            allowed=report.get("decision") == n.DECISION_ALLOW,
            score=float(score) if isinstance(score, int | float) else math.inf,
            fresh=now - _parse_time(report.get("time")) <= long_win_s,
            **{role: _pod(report.get(role)) for role in n.POD_ROLES},
        )
    return records


def _pod(value: object) -> str:
    """A report's `victim`/`aggressor`/`io_aggressor` (docs/api.md) as shown to people; "" when null or not
    that shape (the message only loses a name)."""
    if not isinstance(value, dict) or not isinstance(value.get("uid"), str) or not value["uid"]:
        return ""
    namespace, name = value.get("namespace"), value.get("name")
    return n.pod_shown(namespace if isinstance(namespace, str) else "", name if isinstance(name, str) else "",
                       value["uid"])


class PrometheusScores:
    """Scores from the Prometheus HTTP query API (module docstring)."""

    name = "prometheus"

    def __init__(self, url: str, *, selector: str = n.SCORER_SELECTOR, long_win_s: float = 60.0,
                 timeout_s: float = 2.0, session: requests.Session | None = None):
        self._url = url.rstrip("/") + "/api/v1/query"
        self._long_win = long_win_s
        self._timeout = timeout_s
        self._session = session or DeadlineSession()
        self._query = prometheus_query(selector)
        if not selector:
            log.warning("event=selector_unrestricted hint='every scrape target of this Prometheus can publish "
                        "decisions for any node: set KSENSE_SCORER_SELECTOR'")

    def fetch(self) -> Scores:
        try:
            resp = self._session.get(self._url, params={"query": self._query}, timeout=self._timeout)
            resp.raise_for_status()
            return Scores(parse_prometheus(resp.json(), self._long_win))
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            return Scores(error=failure_reason(exc))


class ScorerScores:
    """Scores from the scorer's `/score` (module docstring)."""

    name = "scorer"

    def __init__(self, url: str, *, ca_file: Path | None = None, long_win_s: float = 60.0, timeout_s: float = 2.0,
                 session: requests.Session | None = None, wall: Callable[[], float] = time.time):
        self._url = url.rstrip("/") + "/score"
        self._verify: str | bool = str(ca_file) if ca_file is not None else True
        self._long_win = long_win_s
        self._timeout = timeout_s
        self._session = session or DeadlineSession()
        self._wall = wall

    def fetch(self) -> Scores:
        try:
            resp = self._session.get(self._url, timeout=self._timeout, verify=self._verify)
            resp.raise_for_status()
            return Scores(parse_scorer(resp.json(), self._wall(), self._long_win))
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            return Scores(error=failure_reason(exc))

"""The scorer's cluster source: every node's inputs from the Prometheus HTTP query API.

Per tick, one instant query per signal for all nodes (never one per node), all evaluated at
the same `time=` so the inputs of a tick are consistent.

Whose series: only those carrying the scrape identity of `selector` (KSENSE_EXPORTER_SELECTOR,
default `job="ksense-exporter",namespace="ksense"`, common/names.py), labels Prometheus
attaches itself when honor_labels is off, with `node` relabelled from the exporter pod's node.
Any other scrape target of a shared Prometheus can publish `ksense_friction{node="w1"} 0`;
selected by bare name, that series could win for w1 (the newest series wins, below) and allow it,
deny any node, or invent nodes. Selected by identity, it is not read at all.

What a tick asks, per signal S (its family restricted to the selector), in one answer:

    count_values by (node) ("ksense_value", last_over_time(S[<long_win_s>s]))

Only series with a sample in the last `long_win_s` take part: Prometheus answers an instant
query with the last sample of the past 5 minutes, so a dead exporter would otherwise look
healthy for 5 minutes. The answer is one element per node and distinct value, the value in the
label `ksense_value` (each backend prints the value it stored so that it parses back exactly;
VictoriaMetrics stores ≈ 12 significant digits, in its per-series answers too), the number of
series having it as the element's value: ≈ 90 bytes per node with one fresh series, instead of
the ≈ 2 × 170 bytes of every series and its `timestamp()` with every scrape label that this
query replaced (at 10,000 nodes 0.9 MB instead of 3.4 MB per signal, whose decoding and pairing
was a third of the tick), and one evaluation of S on the database instead of two. A node with
one value is exact whatever its number of fresh series: the newest has that value. A node with
more than one value has several fresh series that disagree (two scrape jobs, a changed
`instance`, a restart without staleness markers): its value is read per series in a second
request for that signal (`detail_query`): every series of the nodes with more than one fresh
series and, tagged `ksense_ts="1"`, each one's own `timestamp()`; scorer/core/inputs.py pairs
them per series and keeps each node's newest series (ties: the larger value), so a stale larger
value never borrows a fresh timestamp.

A node known to the source (seen in any signal of this tick, or before) but without a fresh
series of an input gets one more request for that input (`stale_query`: the newest timestamp of
each node with no fresh series), so the input is missing with its age (`stale 75s`), not
`absent` (core.REASONED_SIGNALS: for Direction, the baseline state and the source, which some
nodes do not export, stale and absent mean the same, and nothing more is asked). Until the
source knows a node (its first tick, unless the history replay made nodes known), every input
gets it, so a node whose every series is already stale is seen and denied. A failed follow-up
costs only those ages (the nodes are then `absent`), never the fresh values read before it. `timestamp()` is
applied directly to the selector: only then is it each sample's own time (on an expression it is
the evaluation time); `time()` is the query's `time=`. Both backends measured (Prometheus,
VictoriaMetrics) give the same answers (tests/scorer/test_tick_query.py).
The history replay (range queries, once at start-up) reads every series with its timestamp
(`queries`) and pairs them the same way. Any answer (Thanos, Mimir) of the Prometheus HTTP API
works.

Every request has an overall deadline of `timeout_s` for its whole answer (DeadlineSession:
a Prometheus trickling its answer a byte at a time fails the query at the deadline; requests'
own timeout is per read and would not).

Requests at once: the tick's first request goes alone, so a database that is down costs one
failed request (below); the other inputs then go together, `concurrency`
at a time (KSENSE_SCORER_QUERY_CONCURRENCY, default 4), each on its own connection, and the
stale follow-ups after them the same way. The database evaluates several queries on several
cores while the scorer decodes the answers that are in: on this project's two-core VM, with
VictoriaMetrics holding 10,000 nodes and nothing else running, a tick's fetch took 1.08–1.12 s
one request at a time and 0.80–0.95 s four at a time (docs/sizing.md).
A tick's answers are recorded in the inputs' fixed order whatever order they arrive in.

Pods (`top_pods`, scorer.sources.NamesPods): after the tick's decisions, one instant query per
role names the top victim (run-queue wait per second), aggressor (CPU seconds per second) and IO
aggressor (D-state seconds per second) among the pods of the nodes the tick denied on their
score (scorer/core/inputs.py pod_queries: `node=~` their names, in up to POD_QUERY_GROUPS
queries per role of at most POD_QUERY_CHARS of names; more read every node's pods, the old
cost, and keep theirs), which their deny's reason shows; a
node without per-pod series, or a failed query, names nobody, and nothing is asked after a
fetch that found the database down or failing. Asked for every node, the three queries read every pod's series of the
fleet each tick: with 30 pods per node (21 exposed) at 1,000 nodes they were three quarters of
the tick on VictoriaMetrics (docs/sizing.md).

Failures never raise. Each failed request is counted under a short reason label (`unreachable`,
`timeout`, `http_503`, `bad_response`, `query_error`, plus `empty` for a successful query that
named no node: a wrong URL, a scrape config whose job or namespace labels differ from the
selector's, or a lost `node` label); the affected inputs are missing with a readable reason
("prometheus down", "timeout", "http 503"). At most one request per signal per tick (two while a
node's fresh series disagree, or a known node has no fresh series of an input; plus three pod
queries when a node is denied on its score), and when
Prometheus is unreachable, times out or answers 5xx, the rest of that tick's queries are skipped
(they would fail the same way): a down Prometheus costs one failed request per tick, not a
storm (one that dies in the middle of a tick: at most the `concurrency` requests in flight).
Nodes seen before stay present with every input missing (`Inputs.ok=False` when nothing could
be read), so their decisions turn to deny instead of vanishing; a node unseen for
`forget_after_s` is dropped (decommissioned).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import requests

from common import names as n
from common.deadline_http import DeadlineSession
from common.http_reason import BAD_RESPONSE, failure_reason, status_reason
from scorer.core import inputs as core
from scorer.core.model import Inputs, PodRef
from scorer.sources import shown

NAME = n.SCORER_SOURCE_PROMETHEUS
TS_LABEL = "ksense_ts"
#: Requests of one tick in flight at once (module docstring; KSENSE_SCORER_QUERY_CONCURRENCY).
QUERY_CONCURRENCY = 4
#: Longest list of node names in one pod query: VictoriaMetrics refuses a query over 16 kB by
#: default (-search.maxQueryLen), whatever the method.
POD_QUERY_CHARS = 12_000
#: Pod queries per role naming nodes; denied nodes that need more are read from every node's pods.
POD_QUERY_GROUPS = 4
#: Longest expression sent in a GET's URL: proxies refuse long URLs (nginx: 8 kB by default).
FORM_QUERY_CHARS = 4000
#: Prometheus refuses a range query of more than 11,000 points per series.
MAX_POINTS = 11_000

log = logging.getLogger(__name__)

class PromError(Exception):
    """A failed query; `reason` is the short counter label, `fatal` says whether the rest of the
    tick's queries would fail the same way (transport errors, 5xx)."""

    def __init__(self, reason: str, detail: str, *, fatal: bool):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.fatal = fatal


def timestamped_query(selector: str) -> str:
    """Every series of `selector` and, tagged `ksense_ts="1"`, each one's own timestamp: the
    per-series answer `core.split_timestamped(_matrix)` pairs."""
    return f'{selector} or label_replace(timestamp({selector}), "{TS_LABEL}", "1", "", "")'


def _fresh_series(selector: str, long_win_s: float) -> str:
    return f"last_over_time({selector}[{long_win_s:g}s])"


def tick_query(selector: str, long_win_s: float) -> str:
    """The tick's query for one series selector (module docstring): each node's distinct values
    of its fresh series."""
    return (f'count_values by ({n.LABEL_NODE}) ("{core.VALUE_LABEL}", '
            f"{_fresh_series(selector, long_win_s)})")


def detail_query(selector: str, long_win_s: float) -> str:
    """`timestamped_query` restricted to the nodes with more than one fresh series of `selector`."""
    dup = f"(count by ({n.LABEL_NODE}) ({_fresh_series(selector, long_win_s)}) > 1)"
    return (f"({selector} and on ({n.LABEL_NODE}) {dup})"
            f' or label_replace(timestamp({selector}) and on ({n.LABEL_NODE}) {dup}, "{TS_LABEL}", "1", "", "")')


def stale_query(selector: str, long_win_s: float) -> str:
    """The newest sample time of each node whose every series of `selector` is older than
    `long_win_s`."""
    return f"max by ({n.LABEL_NODE}) (timestamp({selector})) < time() - {long_win_s:g}"


def queries(selector: str, optional: Iterable[str] = ()) -> Mapping[str, str]:
    """signal -> the per-series PromQL (`timestamped_query`) of its family, reading only series
    matched by `selector` (label matchers; "" reads every series of the family, whoever
    published it); the `optional` signals (the rule base's optional inputs) only when named.
    The history replay's range queries."""
    return MappingProxyType({signal: timestamped_query(sel)
                             for signal, sel in core.selectors(selector, optional).items()})


def tick_queries(selector: str, long_win_s: float, optional: Iterable[str] = ()) -> Mapping[str, str]:
    """signal -> its `tick_query`, as `queries`."""
    return MappingProxyType({signal: tick_query(sel, long_win_s)
                             for signal, sel in core.selectors(selector, optional).items()})


def chunks(start: float, end: float, step: float, max_points: int = MAX_POINTS) -> Iterator[tuple[float, float]]:
    """Split [start, end] into consecutive ranges of at most `max_points` steps each, aligned to
    `start` so no step is evaluated twice or skipped."""
    span = step * (max_points - 1)
    lo = start
    while lo <= end + 1e-9:
        hi = min(end, round(lo + span, 3))
        yield lo, hi
        lo = round(hi + step, 3)


class PromClient:
    """The few calls of the Prometheus HTTP API we make; every failure is a PromError. Each call
    gets its whole answer within `timeout_s` or fails with `timeout` (a caller's own `session`
    must be a DeadlineSession for that to hold). Calls may come from several threads at once:
    each takes an idle session of its own (one connection each, kept for the next tick; urllib3
    closes a pool's connections when it is garbage-collected); a caller's own `session` serves
    every call, so it must not be shared by concurrent callers."""

    def __init__(self, url: str, *, timeout_s: float = 2.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self._timeout = timeout_s
        self._given = session
        self._idle: list[requests.Session] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _session(self) -> Iterator[requests.Session]:
        if self._given is not None:
            yield self._given
            return
        with self._lock:
            session = self._idle.pop() if self._idle else DeadlineSession()
        try:
            yield session
        finally:
            with self._lock:
                self._idle.append(session)

    def _get(self, path: str, params: Mapping[str, str], *, form: bool = False) -> dict:
        try:
            with self._session() as session:
                if form:
                    resp = session.post(f"{self.url}{path}", data=params, timeout=self._timeout)
                else:
                    resp = session.get(f"{self.url}{path}", params=params, timeout=self._timeout)
        except requests.RequestException as exc:
            raise PromError(failure_reason(exc), str(exc), fatal=True) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            detail = body.get("error", "") if isinstance(body, dict) else resp.text[:200]
            raise PromError(status_reason(resp.status_code), detail, fatal=resp.status_code >= 500)
        if not isinstance(body, dict):
            raise PromError(BAD_RESPONSE, f"not JSON: {resp.text[:80]!r}", fatal=False)
        if body.get("status") != "success":
            raise PromError("query_error", str(body.get("error", body.get("status"))), fatal=False)
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise PromError(BAD_RESPONSE, "no data.result list", fatal=False)
        return data

    def query(self, expr: str, at: float) -> list[dict]:
        """Instant query at Unix time `at`; the vector's elements. An expression longer than
        FORM_QUERY_CHARS goes as a form POST (the API's other way), any other as a GET (a proxy
        in front may accept GET only)."""
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"}, form=len(expr) > FORM_QUERY_CHARS)
        if data.get("resultType") != "vector":
            raise PromError(BAD_RESPONSE, f"resultType {data.get('resultType')!r}, expected vector", fatal=False)
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """Range query; the matrix's series. The caller keeps each call under MAX_POINTS."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        data = self._get("/api/v1/query_range", params)
        if data.get("resultType") != "matrix":
            raise PromError(BAD_RESPONSE, f"resultType {data.get('resultType')!r}, expected matrix", fatal=False)
        return data["result"]


#: A read's answer, or the exception that failed it (PromError, or a malformed answer's).
Outcome = tuple[Any, Exception | None]


def _outcome(read: Callable[[str, float], Any], key: str, at: float) -> Outcome:
    """`read(key, at)` as an Outcome: the failures a read may raise are returned, not raised."""
    try:
        return read(key, at), None
    except (PromError, AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        if not isinstance(exc, PromError):
            log.debug("event=bad_answer query=%s error=%r", key, str(exc))
        return None, exc


class Skipped(PromError):
    """A request not sent because an earlier one of the same tick failed fatally (the database
    is down or failing): the signal fails with that reason, no request is counted."""

    def __init__(self, cause: PromError):
        super().__init__(cause.reason, "skipped", fatal=True)


def _reason(exc: Exception | None) -> str:
    """A failure's short reason label (a malformed answer is `bad_response`)."""
    return exc.reason if isinstance(exc, PromError) else BAD_RESPONSE


def _count(errors: dict[str, int], exc: Exception) -> None:
    """Count a failed request under its reason label; a request not sent counts nothing."""
    if not isinstance(exc, Skipped):
        reason = _reason(exc)
        errors[reason] = errors.get(reason, 0) + 1


class PrometheusSource:
    """`InputSource` over Prometheus; see the module docstring. `clock` is the wall clock (Unix
    seconds) used to age known nodes; sample ages are measured against `fetch(now)`. `inputs`:
    the optional inputs to read (RuleBase.inputs), one more query each per tick. `concurrency`:
    requests in flight at once after the tick's first (1: one at a time)."""

    name = NAME
    provides = frozenset(n.OPTIONAL_INPUTS)

    def __init__(
        self,
        url: str,
        *,
        selector: str = n.EXPORTER_SELECTOR,
        long_win_s: float = 60.0,
        timeout_s: float = 2.0,
        forget_after_s: float = 3600.0,
        concurrency: int = QUERY_CONCURRENCY,
        clock: Callable[[], float] = time.time,
        inputs: Iterable[str] = (),
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.client = PromClient(url, timeout_s=timeout_s)
        self._concurrency = concurrency
        self._optional = tuple(inputs)
        self.selectors = core.selectors(selector, self._optional)
        self.queries = tick_queries(selector, long_win_s, self._optional)
        self.history_queries = queries(selector, self._optional)
        self._matchers = selector
        if not selector:
            log.warning("event=selector_unrestricted hint='every scrape target of this Prometheus can publish "
                        "inputs for any node: set KSENSE_EXPORTER_SELECTOR'")
        self.long_win_s = long_win_s
        self._forget_after_s = forget_after_s
        self._clock = clock
        self._known: dict[str, float] = {}  # node -> wall time last seen
        self._failing: str | None = None  # the reason of the ongoing outage, for one log line
        self._aborted = False  # the last fetch found the database down or failing (no pod query then)

    def fetch(self, now: datetime) -> Inputs:
        at = round(now.timestamp(), 3)  # the query's `time=`: what `time()` and ages are measured against
        vectors: dict[str, dict[str, core.Sample]] = {}
        failed: dict[str, str] = {}
        errors: dict[str, int] = {}
        abort: PromError | None = None

        def counted(outcome: Outcome) -> Any:
            """One read's answer, or None after counting its failure (a fatal one skips the
            tick's later requests)."""
            nonlocal abort
            answer, exc = outcome
            if exc is None:
                return answer
            _count(errors, exc)
            if isinstance(exc, PromError) and exc.fatal:
                abort = abort or exc
            return None

        def read(signal: str, outcome: Outcome) -> None:
            """Keep an input's answer, or make the input failed with the reason."""
            if (got := counted(outcome)) is not None:
                vectors[signal] = got
            else:
                failed[signal] = shown(_reason(outcome[1]), NAME)

        first, *rest = self.queries
        # The first request alone: a database that is down costs one failed request per tick.
        read(first, _outcome(self._read, first, at))
        if abort is not None:
            for signal in rest:
                failed[signal] = shown(abort.reason, NAME)
        else:
            for signal, outcome in zip(rest, self._all([(self._read, signal, at) for signal in rest]), strict=True):
                read(signal, outcome)
        if abort is None:
            # Nothing known yet (start, or no node ever seen): the nodes whose series are all
            # stale would go unseen; ask for every input then.
            known = set(self._known).union(*vectors.values()) if self._known else None
            stale = [signal for signal in vectors if signal in core.REASONED_SIGNALS
                     and (known is None or not known.issubset(vectors[signal]))]
            outcomes = self._all([(self._read_stale, signal, at) for signal in stale])
            for signal, outcome in zip(stale, outcomes, strict=True):
                # A failed follow-up loses only the stale nodes' ages (they stay `absent`),
                # never the fresh values read before it.
                for node, sample in (counted(outcome) or {}).items():
                    vectors[signal].setdefault(node, sample)  # a fresh value wins
        self._aborted = abort is not None
        for signal in (core.FROZEN, core.CPU):
            if signal in vectors and not vectors[signal]:
                # Every exporter exports these two; none at all means we read the wrong place.
                errors["empty"] = errors.get("empty", 0) + 1
        ok = len(failed) < len(self.queries)
        self._note_outage(None if ok else next(iter(errors), "unknown"))
        nodes = core.build(vectors, failed, now=at, long_win_s=self.long_win_s, known=self._remember(vectors),
                           optional=self._optional)
        return Inputs(
            time=now, source=NAME, nodes=MappingProxyType(nodes), errors=MappingProxyType(errors), ok=ok
        )

    def top_pods(self, nodes: Iterable[str], now: datetime) -> tuple[core.TopPods, Mapping[str, int]]:
        """The top pods by role of `nodes` at `now` (module docstring), and the failed requests
        by reason: per role, one query per group of names (POD_QUERY_CHARS; up to
        POD_QUERY_GROUPS, else one over every node's pods, the answer kept for `nodes`),
        `concurrency` at a time.
        Nothing is asked after a fetch that found the database down or failing."""
        wanted = set(nodes)
        if not wanted or self._aborted:
            return {}, {}
        groups: Sequence[Sequence[str] | None] = core.node_groups(wanted, POD_QUERY_CHARS, POD_QUERY_GROUPS) or [None]
        calls = [(role, expr) for group in groups for role, expr in core.pod_queries(self._matchers, group).items()]
        pods: dict[str, dict[str, PodRef]] = {}
        errors: dict[str, int] = {}
        at = round(now.timestamp(), 3)
        outcomes = self._all([(self._top_pods, expr, at) for _, expr in calls])
        for (role, _), (got, exc) in zip(calls, outcomes, strict=True):
            if exc is not None:
                _count(errors, exc)
            else:
                pods.setdefault(role, {}).update((node, pod) for node, pod in got.items() if node in wanted)
        return pods, errors

    def _all(self, calls: Sequence[tuple[Callable[[str, float], Any], str, float]]) -> list[Outcome]:
        """Each call's outcome, in order, `concurrency` of them at a time. After a fatal failure
        the calls not yet started are not sent: they fail as `Skipped` with its reason."""
        fatal: list[PromError] = []

        def run(call: tuple[Callable[[str, float], Any], str, float]) -> Outcome:
            if fatal:
                return None, Skipped(fatal[0])
            outcome = _outcome(*call)
            if isinstance(outcome[1], PromError) and outcome[1].fatal:
                fatal.append(outcome[1])
            return outcome

        if self._concurrency == 1 or len(calls) < 2:
            return [run(call) for call in calls]
        with ThreadPoolExecutor(max_workers=min(self._concurrency, len(calls)),
                                thread_name_prefix="ksense-query") as pool:
            return list(pool.map(run, calls))

    def _read(self, signal: str, at: float) -> dict[str, core.Sample]:
        """node -> Sample of one signal at `at`: the tick query, then, only when it names nodes
        with disagreeing series, their series one by one (module docstring)."""
        got, duplicated = core.split_tick(self.client.query(self.queries[signal], at), at)
        if duplicated:
            query = detail_query(self.selectors[signal], self.long_win_s)
            detail = core.split_timestamped(self.client.query(query, at), TS_LABEL)
            got.update((node, detail[node]) for node in duplicated if node in detail)
        return got

    def _read_stale(self, signal: str, at: float) -> dict[str, core.Sample]:
        """The ages of the nodes without a fresh series of `signal` (module docstring)."""
        return core.split_stale(self.client.query(stale_query(self.selectors[signal], self.long_win_s), at))

    def _top_pods(self, expr: str, at: float) -> dict[str, PodRef]:
        """node -> its top pod from one of `core.pod_queries`."""
        return core.top_pods(self.client.query(expr, at))

    def history(self, start: datetime, end: datetime, step: float) -> list[Inputs]:
        """Inputs at every `step` from `start` to `end` (range queries, ≤ MAX_POINTS per call),
        as `fetch` would have produced them then: used to rebuild the decision states after a
        restart. Nodes seen in the history become known. Empty on any failure (logged): a
        partial history would rebuild a state no other replica has."""
        lo, hi = round(start.timestamp(), 3), round(end.timestamp(), 3)
        per_step: dict[float, dict[str, dict[str, core.Sample]]] = {}
        try:
            for signal, expr in self.history_queries.items():
                for a, b in chunks(lo, hi, step):
                    matrix = core.split_timestamped_matrix(self.client.query_range(expr, a, b, step), TS_LABEL)
                    for t, by_node in matrix.items():
                        per_step.setdefault(t, {}).setdefault(signal, {}).update(by_node)
        except (PromError, KeyError, TypeError, ValueError, IndexError) as exc:
            log.warning("event=history_unavailable error=%r", str(exc))
            return []
        out: list[Inputs] = []
        seen: set[str] = set()
        for k in range(math.floor((hi - lo) / step + 1e-9) + 1):
            t = round(lo + k * step, 3)
            vectors = per_step.get(t, {})
            for vector in vectors.values():
                seen.update(vector)
            nodes = core.build(vectors, {}, now=t, long_win_s=self.long_win_s, known=seen, optional=self._optional)
            out.append(Inputs(time=datetime.fromtimestamp(t, UTC), source=NAME, nodes=MappingProxyType(nodes)))
        wall = self._clock()
        for node in seen:
            self._known.setdefault(node, wall)
        return out

    def _remember(self, vectors: Mapping[str, Mapping[str, core.Sample]]) -> list[str]:
        wall = self._clock()
        for vector in vectors.values():
            for node in vector:
                self._known[node] = wall
        for node, seen in list(self._known.items()):
            if wall - seen > self._forget_after_s:
                del self._known[node]
                log.info("event=node_forgotten node=%s unseen_s=%.0f", node, wall - seen)
        return list(self._known)

    def _note_outage(self, reason: str | None) -> None:
        """One log line when Prometheus stops answering and one when it is back, not one per tick."""
        if reason is not None and self._failing is None:
            log.warning("event=prometheus_unavailable url=%s reason=%s", self.client.url, reason)
        elif reason is None and self._failing is not None:
            log.info("event=prometheus_recovered url=%s", self.client.url)
        self._failing = reason

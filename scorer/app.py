"""The scorer's HTTP API as a plain WSGI application (SPEC §3.4, CONTRACT §3).

Plain WSGI rather than a framework: six fixed routes, and the webhook's budget is milliseconds
per request, so the whole per-request path is a dict lookup, the handler and one json.dumps.
Everything it answers comes from `results()` (the evaluator's latest immutable Results): no
request calls Prometheus, and GET /score changes nothing.

Routes: GET /healthz, GET /readyz, GET /score[?node=NAME][&explain=1], POST /validate,
POST /filter, POST /prioritize. /metrics is served by the separate plain-HTTP metrics server.

Request bodies (POST): `Content-Type` must be application/json (415); `Content-Length` beyond
the route's limit is refused with 413 before a byte is read, and a body without a length
(chunked) is read only up to limit + 1 bytes; the body must be strict UTF-8 JSON without
NaN/Infinity and nested less deeply than the interpreter's recursion limit (400). The limits:
7 MiB for /validate (SPEC §3.4: an object and its oldObject at the API server's 3 MiB request
limit, plus the envelope), 32 MiB for the extender verbs, whose `Nodes` form carries whole Node
objects (configure the extender `nodeCacheCapable: true` on big clusters: names only).

/validate never answers 5xx: an unexpected exception while building the review becomes an
allowed review when the request's uid is known (admission.fallback), else 400. Unexpected
exceptions anywhere are logged with a traceback the first time per route and then at most once
a minute with a count; there is no log line per request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

from scorer.core import admission, extender
from scorer.core.admission import ScoreRecord
from scorer.core.model import NodeInputs, Results
from scorer.core.reports import report_json, results_json

MIB = 1 << 20
VALIDATE_MAX_BYTES = 7 * MIB
EXTENDER_MAX_BYTES = 32 * MIB
JSON_TYPE = "application/json"
NOT_READY = {"error": "not ready"}
#: After the first traceback of a route, further failures there are logged at most this often.
FAILURE_LOG_EVERY_S = 60.0

_LOG = logging.getLogger("ksense.scorer.http")

_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    415: "415 Unsupported Media Type",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}

StartResponse = Callable[..., Any]
Body = Mapping[str, Any] | list | str


class AdmissionRecorder(Protocol):
    """What the webhook needs of scorer.recorder.Recorder."""

    def record(self, record: ScoreRecord) -> str: ...

    def observe(self, outcome: str, seconds: float) -> None: ...


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _FailureLog:
    """Unexpected exceptions, logged once with a traceback per place, then counted and logged
    at most every FAILURE_LOG_EVERY_S: a bug hit by every request must not flood the log."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def report(self, where: str) -> None:
        now = self._clock()
        with self._lock:
            count = self._count[where] = self._count.get(where, 0) + 1
            last = self._last.get(where)
            if last is not None and now - last < FAILURE_LOG_EVERY_S:
                return
            self._last[where] = now
        if count == 1:
            self._log.exception("event=request_failed where=%s", where)
        else:
            self._log.error("event=request_failed where=%s failures=%d (traceback logged once)", where, count)


class ScorerApp:
    """The WSGI callable; build it with `create_app`."""

    def __init__(
        self,
        *,
        results: Callable[[], Results | None],
        ready: Callable[[], bool],
        stale: Callable[[], bool],
        explain: Callable[[NodeInputs], Mapping[str, Any]],
        recorder: AdmissionRecorder,
        clock: Callable[[], float],
        now: Callable[[], datetime],
        log: logging.Logger,
    ):
        self._results = results
        self._ready = ready
        self._stale = stale
        self._explain = explain
        self._recorder = recorder
        self._clock = clock
        self._now = now
        self._failures = _FailureLog(log)
        get, post = ("GET", "HEAD"), ("POST",)
        self._routes: dict[str, tuple[tuple[str, ...], Callable[[dict], tuple[int, Body]]]] = {
            "/healthz": (get, self._healthz),
            "/readyz": (get, self._readyz),
            "/score": (get, self._score),
            "/validate": (post, self._validate),
            "/filter": (post, self._filter),
            "/prioritize": (post, self._prioritize),
        }

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        route = self._routes.get(path)
        if route is None:
            return _send(start_response, 404, _json({"error": "not found"}))
        methods, handler = route
        if environ.get("REQUEST_METHOD") not in methods:
            return _send(start_response, 405, _json({"error": "method not allowed"}), [("Allow", ", ".join(methods))])
        try:
            status, body = handler(environ)
            payload = _text(body) if isinstance(body, str) else _json(body)
        except _HttpError as exc:
            status, payload = exc.status, _json({"error": exc.message})
        except extender.BadArgs as exc:
            status, payload = 400, _json({"error": str(exc)})
        except Exception:
            self._failures.report(path)
            status, payload = 500, _json({"error": "internal error"})
        return _send(start_response, status, payload)

    # --- routes ---------------------------------------------------------------------------------
    def _healthz(self, environ: dict) -> tuple[int, Body]:
        return 200, "ok"

    def _readyz(self, environ: dict) -> tuple[int, Body]:
        return (200, "ok") if self._ready() else (503, NOT_READY)

    def _score(self, environ: dict) -> tuple[int, Body]:
        results = self._results()
        if results is None:
            return 503, NOT_READY
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        explain = query.get("explain", [""])[-1].lower() in ("1", "true")
        if "node" in query:
            node = query["node"][-1]
            report = results.reports.get(node)
            if report is None:
                return 404, {"error": "unknown node", "node": node}
            return 200, report_json(report, self._explain(report.inputs) if explain else None)
        explains = {name: self._explain(r.inputs) for name, r in results.reports.items()} if explain else None
        return 200, results_json(results, explains)

    def _validate(self, environ: dict) -> tuple[int, Body]:
        started = self._clock()
        status, body, outcome = self._review(environ)
        self._recorder.observe(outcome, self._clock() - started)
        return status, body

    def _filter(self, environ: dict) -> tuple[int, Body]:
        args = _json_body(environ, EXTENDER_MAX_BYTES)
        return 200, extender.filter(args, self._results(), stale=self._stale())

    def _prioritize(self, environ: dict) -> tuple[int, Body]:
        args = _json_body(environ, EXTENDER_MAX_BYTES)
        results = self._results()
        if results is None:
            return 503, NOT_READY
        return 200, extender.prioritize(args, results)

    # --- the webhook's never-5xx path --------------------------------------------------------
    def _review(self, environ: dict) -> tuple[int, Body, str]:
        try:
            doc = _json_body(environ, VALIDATE_MAX_BYTES)
        except _HttpError as exc:
            return exc.status, {"error": exc.message}, admission.OUTCOME_BAD_REQUEST
        except Exception:
            # Reading the body failed below us (the client went away mid-body, a socket timeout).
            self._failures.report("/validate read")
            return 400, {"error": "could not read the body"}, admission.OUTCOME_BAD_REQUEST
        try:
            answer = admission.review(doc, self._results(), now=self._now())
        except Exception:
            self._failures.report("/validate")
            answer = admission.fallback(doc)
        outcome = answer.outcome
        if answer.record is not None:
            try:
                outcome = self._recorder.record(answer.record)
            except Exception:
                # The pod is still allowed and its review still annotated; only the row is lost.
                self._failures.report("/validate record")
        return answer.status, answer.body, outcome


def create_app(
    *,
    results: Callable[[], Results | None],
    ready: Callable[[], bool],
    explain: Callable[[NodeInputs], Mapping[str, Any]],
    recorder: AdmissionRecorder,
    stale: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.perf_counter,
    now: Callable[[], datetime] = datetime.now,
    log: logging.Logger = _LOG,
) -> ScorerApp:
    """The WSGI app. `results` returns the evaluator's latest Results (None before the first
    evaluation); `ready` says whether a first evaluation succeeded and its results are not
    stale; `stale` whether the latest results are too old to act on (/filter then answers
    Error; /score still shows them, with their time); `explain` gives the inference trace of one
    node's inputs (CONTRACT §3.1); `recorder` records reviews and counts outcomes; `clock` times
    /validate; `now` stamps fuzzy_score.csv rows (local wall time)."""
    return ScorerApp(
        results=results, ready=ready, stale=stale, explain=explain, recorder=recorder, clock=clock, now=now, log=log
    )


# --- bodies ----------------------------------------------------------------------------------------
def _json_body(environ: dict, limit: int) -> object:
    """The request's JSON document, or _HttpError 415 / 413 / 400 (see the module docstring)."""
    media_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if media_type != JSON_TYPE:
        raise _HttpError(415, f"Content-Type must be {JSON_TYPE}")
    raw = _read_body(environ, limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _HttpError(400, "body is not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise _HttpError(400, "body is nested too deeply") from None
    except ValueError as exc:
        raise _HttpError(400, f"body is not valid JSON: {exc}") from None


def _read_body(environ: dict, limit: int) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        try:
            size = int(length)
        except ValueError:
            raise _HttpError(400, "invalid Content-Length") from None
        if size < 0:
            raise _HttpError(400, "invalid Content-Length")
        if size > limit:
            raise _HttpError(413, f"body larger than {limit} bytes")
        return _read(stream, size)
    if environ.get("wsgi.input_terminated"):
        # Chunked: the server ends the stream at the last chunk; read one byte past the limit.
        data = _read(stream, limit + 1)
        if len(data) > limit:
            raise _HttpError(413, f"body larger than {limit} bytes")
        return data
    return b""


def _read(stream: Any, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _json(body: object) -> tuple[bytes, str]:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode(), JSON_TYPE


def _text(body: str) -> tuple[bytes, str]:
    return body.encode(), "text/plain; charset=utf-8"


def _send(
    start_response: StartResponse, status: int, payload: tuple[bytes, str], extra: list | None = None
) -> list[bytes]:
    data, content_type = payload
    headers = [("Content-Type", content_type), ("Content-Length", str(len(data))), *(extra or [])]
    start_response(_STATUS[status], headers)
    return [data]

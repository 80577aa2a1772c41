"""The scorer's HTTP API as a Flask app (docs/api.md, docs/api.md).

Flask, as the design card says: routing, methods (405 with `Allow`), HEAD and the error pages
are Flask's; each route is a small method that returns (status, body). Everything it answers
comes from `results()` (the evaluator's latest immutable Results): no request calls Prometheus,
and GET /score changes nothing. It is served by scorer.server (gunicorn, a worker that reads
each request whole before a thread runs it); the figures against a plain WSGI dispatch of the
same handlers are bench/scorer_api.py's.

Routes: GET /healthz, GET /readyz, GET /score[?node=NAME][&explain=1], POST /validate,
POST /filter, POST /prioritize. /metrics is served by the separate plain-HTTP metrics server.

Request bodies (POST): `Content-Type` must be application/json (415); the route's BodyLimit
(scorer.config: /validate, /filter and /prioritize each state theirs and why) is applied
before a byte is parsed: a `Content-Length` beyond `max_bytes` is refused with 413 before a
byte is read, a body without a length (chunked) is read only up to max_bytes + 1, and a body
with more than `max_values` JSON values is refused with 413 before it is parsed. The body must
be strict UTF-8 JSON without NaN/Infinity and nested less deeply than the interpreter's
recursion limit (400). The body is read from `wsgi.input` here, not through Flask's
`request.get_data`: werkzeug takes a malformed Content-Length for 0, and this answers 400.

/score bodies are built once per evaluation and /score?explain=1 (every node's inference trace)
at most every EXPLAIN_ALL_EVERY_S (`_ScoreViews`): a client that polls them costs a dictionary
lookup, not one explanation per node per request.

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
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from scorer.config import BodyLimit, ScorerConfig
from scorer.core import admission, extender
from scorer.core.admission import ScoreRecord
from scorer.core.model import NodeInputs, Results
from scorer.core.reports import report_json, results_json

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
NOT_READY = {"error": "not ready"}
#: After the first traceback of a route, further failures there are logged at most this often.
FAILURE_LOG_EVERY_S = 60.0
#: /score?explain=1 (every node explained) is rebuilt at most this often: ~135 µs per node, so
#: with 5,000 nodes a client asking for it in a loop costs 7 % of a CPU, not 70 %.
EXPLAIN_ALL_EVERY_S = 10.0

_LOG = logging.getLogger("ksense.scorer.http")

Body = Mapping[str, Any] | list | str | bytes
Handler = Callable[[dict], tuple[int, Body]]


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


class _ScoreViews:
    """The /score bodies, serialised once per Results (the views of one node, or of every node
    without explanations: milliseconds each) and the view of every node with explanations,
    which costs ~135 µs per node (0.7 s for 5,000 nodes): that one is rebuilt at most every
    EXPLAIN_ALL_EVERY_S, by one thread at a time, and while it is rebuilt the previous one is
    served. It shows the evaluation it was built from (its `time`)."""

    def __init__(self, explain: Callable[[NodeInputs], Mapping[str, Any]], clock: Callable[[], float],
                 explain_all_every_s: float = EXPLAIN_ALL_EVERY_S):
        self._explain = explain
        self._clock = clock
        self._every_s = explain_all_every_s
        self._lock = threading.Lock()
        self._results: Results | None = None
        self._bodies: dict[tuple[str | None, bool], bytes] = {}
        self._traces: dict[str, Mapping[str, Any]] = {}
        self._building = threading.Lock()
        self._all: tuple[float, bytes] | None = None  # (built at, body)

    def body(self, results: Results, node: str | None, explain: bool) -> bytes:
        """JSON of every node (node None) or of one known node, with explanations or not."""
        if node is None and explain:
            return self._explained_all(results)
        key = (node, explain)
        with self._lock:
            self._follow(results)
            data = self._bodies.get(key)
            if data is None:
                report = results.reports[node] if node is not None else None
                view = results_json(results) if report is None else report_json(
                    report, self._trace(report.node, report.inputs) if explain else None)
                data = self._bodies[key] = _dumps(view)
            return data

    def _follow(self, results: Results) -> None:
        if results is not self._results:
            self._results, self._bodies, self._traces = results, {}, {}

    def _trace(self, node: str, inputs: NodeInputs) -> Mapping[str, Any]:
        trace = self._traces.get(node)
        if trace is None:
            trace = self._traces[node] = self._explain(inputs)
        return trace

    def _explained_all(self, results: Results) -> bytes:
        built = self._all
        if built is not None and self._clock() - built[0] < self._every_s:
            return built[1]
        if not self._building.acquire(blocking=built is None):
            assert built is not None
            return built[1]  # another thread is building it: the previous one meanwhile
        try:
            if self._all is not built and self._all is not None:
                return self._all[1]  # built while this thread waited
            with self._lock:
                self._follow(results)
                known = dict(self._traces)
            traces = {name: known.get(name) or self._explain(r.inputs) for name, r in results.reports.items()}
            with self._lock:
                if results is self._results:
                    self._traces.update(traces)
            data = _dumps(results_json(results, traces))
            self._all = (self._clock(), data)
            return data
        finally:
            self._building.release()


class ScorerApi:
    """The route handlers, each (environ) -> (status, body); `create_app` mounts them on Flask.
    Kept apart from Flask so bench/scorer_api.py can serve the very same handlers through a
    plain WSGI dispatch and measure what Flask costs.

    `results` returns the evaluator's latest Results (None before the first evaluation);
    `ready` says whether a first evaluation succeeded and its results are not stale; `stale`
    whether the latest results are too old to act on (/filter then answers Error; /score still
    shows them, with their time); `explain` gives the inference trace of one node's inputs
    (docs/api.md); `recorder` records reviews and counts outcomes; `clock` times /validate;
    `now` stamps fuzzy_score.csv rows (local wall time); the BodyLimits bound the request bodies
    (module docstring)."""

    def __init__(
        self,
        *,
        results: Callable[[], Results | None],
        ready: Callable[[], bool],
        explain: Callable[[NodeInputs], Mapping[str, Any]],
        recorder: AdmissionRecorder,
        stale: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = datetime.now,
        log: logging.Logger = _LOG,
        validate_body: BodyLimit = ScorerConfig.validate_body,
        extender_body: BodyLimit = ScorerConfig.extender_body,
    ):
        self._results = results
        self._ready = ready
        self._stale = stale
        self._recorder = recorder
        self._clock = clock
        self._now = now
        self._views = _ScoreViews(explain, time.monotonic)
        self._validate_body = validate_body
        self._extender_body = extender_body
        self.failures = _FailureLog(log)
        get, post = ("GET",), ("POST",)
        self.body_limits = body_limits(validate_body, extender_body)
        #: path -> (methods, handler); HEAD is answered wherever GET is.
        self.routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/healthz": (get, self.healthz),
            "/readyz": (get, self.readyz),
            "/score": (get, self.score),
            "/validate": (post, self.validate),
            "/filter": (post, self.filter),
            "/prioritize": (post, self.prioritize),
        }

    def answer(self, path: str, handler: Handler, environ: dict) -> tuple[int, bytes, str]:
        """Run one handler: (status, payload, content type); errors become their JSON bodies."""
        try:
            status, body = handler(environ)
            if isinstance(body, str):
                return status, body.encode(), TEXT_TYPE
            return status, body if isinstance(body, bytes) else _dumps(body), JSON_TYPE
        except _HttpError as exc:
            return exc.status, _dumps({"error": exc.message}), JSON_TYPE
        except extender.BadArgs as exc:
            return 400, _dumps({"error": str(exc)}), JSON_TYPE
        except Exception:
            self.failures.report(path)
            return 500, _dumps({"error": "internal error"}), JSON_TYPE

    # --- routes ---------------------------------------------------------------------------------
    def healthz(self, environ: dict) -> tuple[int, Body]:
        return 200, "ok"

    def readyz(self, environ: dict) -> tuple[int, Body]:
        return (200, "ok") if self._ready() else (503, NOT_READY)

    def score(self, environ: dict) -> tuple[int, Body]:
        results = self._results()
        if results is None:
            return 503, NOT_READY
        query = _query(environ)
        explain = query.get("explain", "").lower() in ("1", "true")
        node = query.get("node")
        if node is not None and node not in results.reports:
            return 404, {"error": "unknown node", "node": node}
        return 200, self._views.body(results, node, explain)

    def validate(self, environ: dict) -> tuple[int, Body]:
        started = self._clock()
        status, body, outcome = self._review(environ)
        self._recorder.observe(outcome, self._clock() - started)
        return status, body

    def filter(self, environ: dict) -> tuple[int, Body]:
        args = _json_body(environ, self._extender_body)
        return 200, extender.filter(args, self._results(), stale=self._stale())

    def prioritize(self, environ: dict) -> tuple[int, Body]:
        args = _json_body(environ, self._extender_body)
        results = self._results()
        if results is None:
            return 503, NOT_READY
        return 200, extender.prioritize(args, results)

    # --- the webhook's never-5xx path --------------------------------------------------------
    def _review(self, environ: dict) -> tuple[int, Body, str]:
        try:
            doc = _json_body(environ, self._validate_body)
        except _HttpError as exc:
            return exc.status, {"error": exc.message}, admission.OUTCOME_BAD_REQUEST
        try:
            answer = admission.review(doc, self._results(), now=self._now())
        except Exception:
            self.failures.report("/validate")
            answer = admission.fallback(doc)
        outcome = answer.outcome
        if answer.record is not None:
            try:
                outcome = self._recorder.record(answer.record)
            except Exception:
                # The pod is still allowed and its review still annotated; only the row is lost.
                self.failures.report("/validate record")
        return answer.status, answer.body, outcome


def body_limits(validate_body: BodyLimit, extender_body: BodyLimit) -> dict[str, int]:
    """Path -> the largest body the server reads for it (scorer.server; no body elsewhere)."""
    return {"/validate": validate_body.max_bytes, "/filter": extender_body.max_bytes,
            "/prioritize": extender_body.max_bytes}


def create_app(**handlers: Any) -> Flask:
    """The Flask app over ScorerApi(**handlers) (see ScorerApi for the arguments)."""
    return flask_app(ScorerApi(**handlers))


def flask_app(handlers: ScorerApi) -> Flask:
    """Mount the handlers on a Flask app: JSON error bodies, `Allow` in a stable order, no
    automatic OPTIONS, no slash merging or redirects (an unknown path is a 404)."""
    app = Flask(__name__)
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False

    def view(path: str, handler: Handler) -> Callable[[], Response]:
        def respond() -> Response:
            status, payload, content_type = handlers.answer(path, handler, request.environ)
            return Response(payload, status, content_type=content_type)

        return respond

    for path, (methods, handler) in handlers.routes.items():
        app.add_url_rule(path, endpoint=path, view_func=view(path, handler), methods=list(methods),
                         provide_automatic_options=False)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        message = {404: "not found", 405: "method not allowed"}.get(code, (exc.name or "error").lower())
        response = Response(_dumps({"error": message}), code, content_type=JSON_TYPE)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    return app


# --- bodies ----------------------------------------------------------------------------------------
def _query(environ: dict) -> dict[str, str]:
    """The query parameters, the last value of each (as parse_qs with blank values kept)."""
    return dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))


def _json_body(environ: dict, limit: BodyLimit) -> object:
    """The request's JSON document, or _HttpError 415 / 413 / 400 (see the module docstring)."""
    media_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if media_type != JSON_TYPE:
        raise _HttpError(415, f"Content-Type must be {JSON_TYPE}")
    raw = _read_body(environ, limit.max_bytes)
    values = raw.count(b",") + raw.count(b":") + raw.count(b"[") + raw.count(b"{") + 1
    if values > limit.max_values:
        raise _HttpError(413, f"body has more than {limit.max_values} JSON values")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _HttpError(400, "body is not UTF-8") from None
    del raw  # one copy of the body at a time
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
    try:
        while remaining > 0:
            chunk = stream.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError:
        # The client went away mid-body (gunicorn's NoMoreData is an OSError): its fault, not ours.
        raise _HttpError(400, "could not read the body") from None
    return b"".join(chunks)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _dumps(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()

"""Fixed results, an in-process WSGI caller, and a runnable scorer server over fakes.

The scorer's HTTP tests need Results that do not depend on the evaluator, and the TLS tests need
the real server (gunicorn, forked worker, real sockets) in a subprocess:

    python -m tests.scorer.fake_scorer_app --port P --state-dir D [--cert C --key K]

serves scorer.app over fixed Results with a real Recorder (fuzzy_score.csv in D) through
scorer.server.serve, plus test-only routes answered from the worker process:
GET /test/cert-expiry (TlsFiles.expiry), GET /test/pid and GET /test/explain-calls (how many
times the app asked for a node's explanation). `on_worker_start` writes
D/worker.pid; a thread it starts writes D/stopped when `stop` is set.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.csvfile import CsvSink
from common.names import FUZZY_SCORE_COLUMNS
from scorer.app import body_limits, create_app
from scorer.config import ScorerConfig
from scorer.core.model import NodeInputs, NodeReport, Results
from scorer.recorder import Recorder
from scorer.server import TlsFiles, serve

TIME = datetime(2026, 11, 28, 16, 0, 1, tzinfo=UTC)
NAN = math.nan


def report(node: str, decision: str, score: float, level: str, **kw: Any) -> NodeReport:
    fields = {
        "medium_band": None,
        "reason": None,
        "inputs": NodeInputs(node=node, friction=1.0, direction=1.0, energy=2.0, cpu_pct=3.0, psi_pct=4.0),
        "missing": (),
        "bad_count": 0,
        "good_count": 2,
    }
    fields.update(kw)
    return NodeReport(node=node, time=TIME, decision=decision, score=score, level=level, **fields)


def results(source: str = "prometheus") -> Results:
    """Four nodes: two allowed (worker-1 best), one denied by score, one denied for missing inputs."""
    reports = [
        report(
            "worker-1", "allow", 17.886, "low",
            inputs=NodeInputs(node="worker-1", friction=0.237792, direction=1.0, energy=0.0,
                              cpu_pct=2.413911, psi_pct=0.24796),
            good_count=4,
        ),
        report("worker-2", "allow", 50.2561, "medium", medium_band="medium-low"),
        report("worker-3", "deny", 73.2596, "high", bad_count=2, good_count=0),
        report(
            "worker-4", "deny", 100.0, "high", reason="missing metrics: friction, energy",
            inputs=NodeInputs(node="worker-4", cpu_pct=5.0, missing=("friction", "energy")),
            missing=("friction", "energy"), good_count=0,
        ),
    ]
    return Results(time=TIME, source=source, reports={r.node: r for r in reports})


def fake_explain(inputs: NodeInputs) -> dict:
    """Stands in for scorer.core.inference.explain: the shape of docs/api.md."""
    return {
        "memberships": {"cpu": {"normal": 1.0, "high": 0.0}},
        "rules": [{"cpu": "normal", "psi": "low", "friction": "under", "energy": "short", "output": "under",
                   "strength": 0.99}],
        "node": inputs.node,
    }


def call(
    app: Callable,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    content_type: str | None = "application/json",
    query: str = "",
    content_length: str | None = None,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """One request through a WSGI app in-process: (status code, headers, body)."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "test",
        "SERVER_PORT": "443",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body or b""),
        "wsgi.input_terminated": chunked,
    }
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    elif body is not None and not chunked:
        environ["CONTENT_LENGTH"] = str(len(body))
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    chunks: Iterable[bytes] = app(environ, start_response)
    data = b"".join(chunks)
    return int(seen["status"].split()[0]), seen["headers"], data


def _test_routes(app: Callable, tls: TlsFiles | None, explain_calls: list[int]) -> Callable:
    def wrapped(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/test/cert-expiry":
            data = json.dumps({"expiry": tls.expiry() if tls else None}).encode()
        elif path == "/test/pid":
            data = json.dumps({"pid": os.getpid()}).encode()
        elif path == "/test/explain-calls":
            data = json.dumps({"calls": explain_calls[0]}).encode()
        else:
            return app(environ, start_response)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    return wrapped


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--read-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    tls = TlsFiles(args.cert, args.key) if args.cert else None
    recorder = Recorder(CsvSink(args.state_dir / "fuzzy_score.csv", FUZZY_SCORE_COLUMNS))
    fixed = results()
    explain_calls = [0]

    def explain(inputs: NodeInputs) -> dict:
        explain_calls[0] += 1
        return fake_explain(inputs)

    app = create_app(results=lambda: fixed, ready=lambda: True, explain=explain, recorder=recorder)
    stop = threading.Event()

    def on_worker_start() -> None:
        (args.state_dir / "worker.pid").write_text(str(os.getpid()))

        def on_stop() -> None:
            stop.wait()
            recorder.close()
            (args.state_dir / "stopped").write_text(str(os.getpid()))

        threading.Thread(target=on_stop, name="on-stop").start()

    return serve(
        _test_routes(app, tls, explain_calls), host=args.host, port=args.port, tls=tls, threads=args.threads,
        on_worker_start=on_worker_start, stop=stop, read_timeout_s=args.read_timeout,
        body_limits=body_limits(ScorerConfig.validate_body, ScorerConfig.extender_body),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

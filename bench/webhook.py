"""How fast the scorer's HTTPS API answers: /validate and /score over TLS with keep-alive.

Starts the real server (scorer.server.serve: gunicorn, one ApiWorker, 8 threads) with the
Flask app in a subprocess on 127.0.0.1 with a trustme certificate, over fixed Results of 50 nodes and a real
Recorder writing fuzzy_score.csv to a temp dir (every review has a new uid, so every one is
recorded). The load generator is Python: client processes, each with one persistent
HTTPSConnection that trusts the test CA, so every request after the first reuses its TLS
session like the API server's webhook client does.

Two regimes per route:
- offered 200 req/s (2 connections at 100 req/s each, paced on a fixed schedule; latency is
  measured from the scheduled send time, so a stalled server cannot hide queueing);
- saturated (4 connections back to back): requests/s and latency at the limit.
The floor is GET /healthz on the same server with the same clients: TLS, HTTP parsing, Flask
and the client's own cost, without our handlers' work (it is answered on the probe thread).
The prototype reference (Flask dev server, a TLS handshake per request, CSV re-read per
request) is ~35 req/s saturated and p99 55 ms at 10 req/s.
Goals: /validate p99 ≤ 5 ms at 200 req/s, ≥ 1,500 req/s saturated.

Prints a table with ratios; exits 0 when a goal is missed, non-zero only when the harness fails.
Bounded: about 40 s (`--quick`: about 15 s). Loopback only.
Run: .venv/bin/python -m bench.webhook [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench._util import HarnessError, free_port, print_table

PROTOTYPE_RPS = 35.0
PROTOTYPE_P99_MS = 55.0
GOAL_P99_MS = 5.0
GOAL_RPS = 1500.0
NODES = 50
OFFERED_RPS = 200.0
PACED_CONNECTIONS = 2
SATURATING_CONNECTIONS = 4

REVIEW = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "feedback-inference-2",
        "namespace": "sa",
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:sa:loadtest", "groups": ["system:authenticated"]},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "feedback-inference-2", "namespace": "sa", "labels": {"app": "feedback"}},
            "spec": {
                "schedulerName": "fuzzy-scheduler",
                "nodeSelector": {"kubernetes.io/hostname": "node-007"},
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
                                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
            },
        },
        "dryRun": False,
    },
}


@dataclass(frozen=True)
class Route:
    label: str
    method: str
    path: str


HEALTHZ = Route("/healthz (floor)", "GET", "/healthz")
VALIDATE = Route("/validate", "POST", "/validate")
SCORE = Route("/score (50 nodes)", "GET", "/score")
SCORE_NODE = Route("/score?node=", "GET", "/score?node=node-007")
ROUTES = (HEALTHZ, VALIDATE, SCORE, SCORE_NODE)


# --- the server side (a subprocess: gunicorn needs its main thread) ------------------------------
def _serve(port: int, cert: str, key: str, state: Path, kind: str) -> int:
    """Serve the API over fixed Results: `kind` "flask" is the scorer's app, "plain" the same
    handlers through bench.scorer_api's plain WSGI dispatch."""
    from common.csvfile import CsvSink
    from common.names import FUZZY_SCORE_COLUMNS
    from scorer.app import ScorerApi, flask_app
    from scorer.core.model import NodeInputs, NodeReport, Results
    from scorer.recorder import Recorder
    from scorer.server import TlsFiles, serve

    now = datetime.now(UTC)
    reports = {}
    for i in range(NODES):
        node = f"node-{i:03d}"
        score = 17.5 + (i * 37 % 70)
        reports[node] = NodeReport(
            node=node, time=now, decision="allow" if score < 60 else "deny", score=score,
            level="low" if score < 45 else ("medium" if score < 70 else "high"),
            medium_band=None, reason=None,
            inputs=NodeInputs(node=node, friction=score / 2, direction=1.0, energy=10.0, cpu_pct=30.0, psi_pct=5.0),
            missing=(), bad_count=0, good_count=3,
        )
    results = Results(time=now, source="prometheus", reports=reports)
    recorder = Recorder(CsvSink(state / "fuzzy_score.csv", FUZZY_SCORE_COLUMNS))
    handlers = ScorerApi(results=lambda: results, ready=lambda: True, explain=lambda inputs: {}, recorder=recorder)
    if kind == "plain":
        from bench.scorer_api import plain_wsgi

        app = plain_wsgi(handlers)
    else:
        app = flask_app(handlers)
    return serve(app, host="127.0.0.1", port=port, tls=TlsFiles(cert, key), body_limits=handlers.body_limits,
                 log_level="warning")


# --- the client side ----------------------------------------------------------------------------------
def _connect(port: int, cafile: str) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=cafile)
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)


def _one(conn: http.client.HTTPSConnection, route: Route, uid: str) -> None:
    if route.method == "POST":
        body = json.dumps({**REVIEW, "request": {**REVIEW["request"], "uid": uid}})
        conn.request("POST", route.path, body=body, headers={"Content-Type": "application/json"})
    else:
        conn.request("GET", route.path)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise HarnessError(f"{route.path} answered {response.status}")


def _client(port: int, cafile: str, route: Route, rate: float | None, start_at: float, duration: float,
            tag: str) -> list[float]:
    """Latencies (ms) of one connection: paced at `rate` req/s from `start_at`, or back to back
    when `rate` is None. Runs in its own process."""
    conn = _connect(port, cafile)
    _one(conn, HEALTHZ, "")  # the handshake happens before the clock starts
    latencies = []
    i = 0
    while time.monotonic() < start_at:
        time.sleep(0.001)
    end = start_at + duration
    while True:
        if rate is None:
            sent = time.monotonic()
        else:
            sent = start_at + i / rate
            wait = sent - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if sent >= end:
            break
        _one(conn, route, f"{tag}-{i}")
        latencies.append((time.monotonic() - sent) * 1000.0)
        i += 1
    conn.close()
    return latencies


@dataclass(frozen=True)
class Measured:
    route: Route
    latencies_ms: list[float]
    seconds: float

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def measure(pool: ProcessPoolExecutor, port: int, cafile: str, route: Route, *, rate: float | None,
            connections: int, duration: float) -> Measured:
    start_at = time.monotonic() + 0.5
    per = rate / connections if rate is not None else None
    futures = [
        pool.submit(_client, port, cafile, route, per, start_at, duration, f"{route.path}-{rate}-{c}")
        for c in range(connections)
    ]
    latencies = [ms for f in futures for ms in f.result(timeout=duration + 30)]
    if not latencies:
        raise HarnessError(f"no request to {route.path} completed")
    return Measured(route, latencies, duration)


# --- orchestration ------------------------------------------------------------------------------------
def start_server(tmp: Path, kind: str = "flask") -> tuple[subprocess.Popen, int, str]:
    """The server (`kind` as in _serve) in a subprocess with its own certificate, CA file and
    fuzzy_score.csv under `tmp`: (process, port, CA file)."""
    import trustme

    tmp.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, cafile = tmp / "tls.crt", tmp / "tls.key", tmp / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(cafile))
    port = free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.webhook", "--serve", str(port), str(cert), str(key), str(tmp), kind],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise HarnessError(f"server exited {proc.returncode}: {(tmp / 'server.log').read_text()}")
        try:
            conn = _connect(port, str(cafile))
            _one(conn, HEALTHZ, "")
            conn.close()
            return proc, port, str(cafile)
        except (OSError, HarnessError):
            if time.monotonic() > deadline:
                raise HarnessError("server not up in 30 s") from None
            time.sleep(0.05)


def ratio(a: float, b: float) -> str:
    return "-" if b <= 0 else (f"{a / b:.2f}" if a / b < 100 else f"{a / b:.0f}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        port, cert, key, state, kind = argv[1:6]
        return _serve(int(port), cert, key, Path(state), kind)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per figure instead of 5 s")
    args = parser.parse_args(argv)
    duration = 2.0 if args.quick else 5.0

    with tempfile.TemporaryDirectory(prefix="ksense-bench-webhook-") as tmp_dir:
        tmp = Path(tmp_dir)
        proc, port, cafile = start_server(tmp)
        try:
            with ProcessPoolExecutor(max_workers=SATURATING_CONNECTIONS) as pool:
                measure(pool, port, cafile, VALIDATE, rate=None, connections=2, duration=1.0)  # warm-up
                paced = {r: measure(pool, port, cafile, r, rate=OFFERED_RPS, connections=PACED_CONNECTIONS,
                                    duration=duration) for r in ROUTES}
                saturated = {r: measure(pool, port, cafile, r, rate=None, connections=SATURATING_CONNECTIONS,
                                        duration=duration) for r in ROUTES}
        finally:
            stop_server(proc)
        recorded = len((tmp / "fuzzy_score.csv").read_text().splitlines()) - 1

    floor_p, floor_s = paced[HEALTHZ], saturated[HEALTHZ]
    print(f"webhook over TLS keep-alive, 127.0.0.1, {os.cpu_count()} CPUs; server: gunicorn, 1 ApiWorker, "
          f"8 threads, Flask app; {duration:.0f} s per figure; {recorded} reviews recorded to fuzzy_score.csv")
    rows = []
    for route in ROUTES:
        p, s = paced[route], saturated[route]
        goal = route is VALIDATE or route is SCORE_NODE
        rows.append([
            f"{route.label} p50 @200/s", f"{p.pct(0.5):.2f} ms", f"{floor_p.pct(0.5):.2f} ms",
            ratio(p.pct(0.5), floor_p.pct(0.5)), "", "", "", "",
        ])
        rows.append([
            f"{route.label} p99 @200/s", f"{p.pct(0.99):.2f} ms", f"{floor_p.pct(0.99):.2f} ms",
            ratio(p.pct(0.99), floor_p.pct(0.99)), f"{PROTOTYPE_P99_MS:.0f} ms @10/s",
            ratio(PROTOTYPE_P99_MS, p.pct(0.99)) + "× better",
            f"≤ {GOAL_P99_MS:.0f} ms" if goal else "",
            ("PASS" if p.pct(0.99) <= GOAL_P99_MS else "MISS") if goal else "",
        ])
        rows.append([
            f"{route.label} saturated", f"{s.rps:.0f} req/s", f"{floor_s.rps:.0f} req/s", ratio(s.rps, floor_s.rps),
            f"{PROTOTYPE_RPS:.0f} req/s", ratio(s.rps, PROTOTYPE_RPS) + "×",
            f"≥ {GOAL_RPS:.0f} req/s" if goal else "", ("PASS" if s.rps >= GOAL_RPS else "MISS") if goal else "",
        ])
        rows.append([
            f"{route.label} saturated p50/p99", f"{s.pct(0.5):.2f}/{s.pct(0.99):.2f} ms",
            f"{floor_s.pct(0.5):.2f}/{floor_s.pct(0.99):.2f} ms", "", "", "", "", "",
        ])
    print_table(["figure", "ksense", "floor", "×floor", "prototype", "vs proto", "goal", "result"], rows)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except HarnessError as exc:
        print(f"bench.webhook: {exc}", file=sys.stderr)
        sys.exit(2)

"""What Flask costs the scorer's API: /validate over TLS keep-alive, the Flask app against the
same handlers behind a plain WSGI dispatch, side by side in one run.

Both servers are the real one (scorer.server.serve: gunicorn, one ApiWorker, 8 threads, TLS
with a trustme certificate) over the same fixed Results of 50 nodes and a real Recorder
writing fuzzy_score.csv; they differ only in the WSGI callable:
- flask: scorer.app.flask_app(ScorerApi(...)), what `python -m scorer` serves;
- plain (the baseline, here and not in scorer/): `plain_wsgi` below, a dict lookup on the path,
  a method check and the handler, the way the scorer routed before it used Flask.
The load generator is bench.webhook's (client processes, one persistent HTTPSConnection each,
every review a new uid). Two regimes, as bench.webhook: offered 200 req/s (2 connections,
latency from the scheduled send time) for p50/p99, and saturated (4 connections back to back)
for requests/s. The machine is shared (other work, 2 CPUs): each figure is measured ROUNDS times,
alternating flask and plain, and the median is reported with every round.
Goals: p99 ≤ 5 ms at 200 req/s, ≥ 1,500 req/s saturated; Flask within 15 % of the baseline's
throughput.

Prints a table with ratios; exits 0 when a goal is missed, non-zero only when the harness fails.
Bounded: about 60 s (`--quick`: about 25 s). Loopback only.
Run: .venv/bin/python -m bench.scorer_api [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from http import HTTPStatus
from pathlib import Path

from bench._util import HarnessError, print_table, run_main
from bench.webhook import (
    GOAL_P99_MS,
    GOAL_RPS,
    OFFERED_RPS,
    PACED_CONNECTIONS,
    SATURATING_CONNECTIONS,
    VALIDATE,
    measure,
    ratio,
    start_server,
    stop_server,
)
from scorer.app import ScorerApi

KINDS = ("flask", "plain")
ROUNDS = 3
#: Flask may cost at most this share of the baseline's saturated throughput.
MAX_FLASK_COST = 0.15


def plain_wsgi(api: ScorerApi) -> Callable[[dict, Callable], Iterable[bytes]]:
    """The baseline: the handlers of `api` behind a minimal WSGI dispatch (404, 405, HEAD as
    GET), answering the same bodies as the Flask app."""
    routes = {path: ((*methods, "HEAD") if "GET" in methods else methods, handler)
              for path, (methods, handler) in api.routes.items()}

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        route = routes.get(path)
        if route is None:
            return _send(start_response, 404, b'{"error":"not found"}', "application/json")
        methods, handler = route
        if environ.get("REQUEST_METHOD") not in methods:
            return _send(start_response, 405, b'{"error":"method not allowed"}', "application/json",
                         [("Allow", ", ".join(sorted(methods)))])
        status, payload, content_type = api.answer(path, handler, environ)
        return _send(start_response, status, payload, content_type)

    return app


def _send(start_response: Callable, status: int, payload: bytes, content_type: str,
          extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(f"{status} {HTTPStatus(status).phrase}",
                   [("Content-Type", content_type), ("Content-Length", str(len(payload))), *(extra or [])])
    return [payload]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per figure and 2 rounds instead of 5 s and 3")
    args = parser.parse_args()
    duration, rounds = (2.0, 2) if args.quick else (5.0, ROUNDS)
    paced: dict[str, list] = {k: [] for k in KINDS}
    saturated: dict[str, list] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory(prefix="ksense-bench-api-") as tmp_dir:
        servers = {}
        try:
            for kind in KINDS:
                servers[kind] = start_server(Path(tmp_dir) / kind, kind)
            with ProcessPoolExecutor(max_workers=SATURATING_CONNECTIONS) as pool:
                for _, port, cafile in servers.values():  # warm-up
                    measure(pool, port, cafile, VALIDATE, rate=None, connections=2, duration=1.0)
                for _ in range(rounds):
                    for kind, (_, port, cafile) in servers.items():
                        paced[kind].append(measure(pool, port, cafile, VALIDATE, rate=OFFERED_RPS,
                                                   connections=PACED_CONNECTIONS, duration=duration))
                    for kind, (_, port, cafile) in servers.items():
                        saturated[kind].append(measure(pool, port, cafile, VALIDATE, rate=None,
                                                       connections=SATURATING_CONNECTIONS, duration=duration))
        finally:
            for proc, _, _ in servers.values():
                stop_server(proc)

    def p99(kind: str) -> list[float]:
        return [m.pct(0.99) for m in paced[kind]]

    def p50(kind: str) -> list[float]:
        return [m.pct(0.5) for m in paced[kind]]

    def rps(kind: str) -> list[float]:
        return [m.rps for m in saturated[kind]]

    med = statistics.median
    print(f"/validate over TLS keep-alive, 127.0.0.1, {os.cpu_count()} CPUs; server: gunicorn, 1 ApiWorker, 8 threads; "
          f"{duration:.0f} s per figure, {rounds} rounds alternating, median (rounds)")
    rows = []
    for label, figure, unit, fmt in (("p50 @200/s", p50, "ms", "{:.2f}"), ("p99 @200/s", p99, "ms", "{:.2f}"),
                                     ("saturated", rps, "req/s", "{:.0f}")):
        flask, plain = figure("flask"), figure("plain")
        goal = result = ""
        if label == "p99 @200/s":
            goal, result = f"≤ {GOAL_P99_MS:.0f} ms", "PASS" if med(flask) <= GOAL_P99_MS else "MISS"
        elif label == "saturated":
            goal, result = f"≥ {GOAL_RPS:.0f} req/s", "PASS" if med(flask) >= GOAL_RPS else "MISS"
        rows.append([f"/validate {label}", f"{fmt.format(med(flask))} {unit}", f"{fmt.format(med(plain))} {unit}",
                     ratio(med(flask), med(plain)), " ".join(fmt.format(v) for v in flask),
                     " ".join(fmt.format(v) for v in plain), goal, result])
    print_table(["figure", "flask", "plain", "×plain", "flask rounds", "plain rounds", "goal", "result"], rows)
    cost = 1.0 - med(rps("flask")) / med(rps("plain"))
    verdict = "within" if cost <= MAX_FLASK_COST else "MORE than"
    print(f"Flask costs {cost * 100:.1f} % of the plain dispatch's saturated throughput ({verdict} "
          f"{MAX_FLASK_COST * 100:.0f} %)")
    if not all(paced[k] and saturated[k] for k in KINDS):
        raise HarnessError("a regime measured nothing")
    return 0


if __name__ == "__main__":
    run_main("bench.scorer_api", main)

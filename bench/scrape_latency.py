"""How long a Prometheus scrape of the exporter takes, and how big it is.

Starts `python -m exporter --source ebpf` (CSV on, temp dir, free port, 127.0.0.1), waits until
/readyz answers 200, then makes ~500 sequential requests of each kind, interleaved round-robin
so drift and the exporter's own 1 Hz tick hit every kind alike:
- /metrics, plain text;
- /metrics with `Accept-Encoding: gzip` (what Prometheus sends);
- /healthz, the **floor**: same server, same threads, same client, a two-byte answer, so it is
  the cost of the TCP connection, the HTTP parsing and this client; /metrics ÷ /healthz is what
  building and encoding the exposition adds, independent of how fast this machine is today.
Every request uses a new connection (`Connection: close`, like a Prometheus scrape after an
idle interval) and is timed from connect to the last body byte (time.perf_counter). The first
10 of each kind are warm-up and not counted.

Prints n, p50, p99 and max latency, payload bytes, ratios to the floor, and the goal
(p99 ≤ 5 ms for /metrics) with PASS/MISS. There is no prototype reference for this figure.
Exits 0 when the goal is missed, non-zero only when the harness fails.
Run: .venv/bin/python -m bench.scrape_latency [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench._util import HarnessError, print_table, run_main
from bench.exporter_cost import Exporter, ratio, running, verdict

GOAL_P99_MS = 5.0
WARMUP = 10


@dataclass(frozen=True)
class Kind:
    label: str
    path: str
    gzip: bool = False


KINDS = (
    Kind("/healthz (floor)", "/healthz"),
    Kind("/metrics", "/metrics"),
    Kind("/metrics, gzip", "/metrics", gzip=True),
)


@dataclass
class Result:
    kind: Kind
    times_ms: list[float] = field(default_factory=list)
    wire_bytes: int = 0
    body_bytes: int = 0  # after decompression

    def pct(self, p: float) -> float:
        """Nearest-rank percentile."""
        s = sorted(self.times_ms)
        return s[max(math.ceil(p * len(s)) - 1, 0)]


def get(port: int, kind: Kind) -> tuple[float, int, bytes]:
    """One request on a fresh connection: (ms from connect to last byte, status, body as received)."""
    headers = {"Connection": "close"}
    if kind.gzip:
        headers["Accept-Encoding"] = "gzip"
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", kind.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        ms = (time.perf_counter() - t0) * 1000
        if kind.gzip and resp.getheader("Content-Encoding") != "gzip":
            raise HarnessError(
                f"{kind.path}: asked for gzip, got Content-Encoding {resp.getheader('Content-Encoding')}"
            )
        return ms, resp.status, body
    finally:
        conn.close()


def wait_ready(exp: Exporter, timeout: float = 20.0) -> float:
    """Seconds from start until /readyz answers 200."""
    deadline = exp.started + timeout
    ready = Kind("/readyz", "/readyz")
    while time.monotonic() < deadline:
        exp.check_alive()
        try:
            _, status, _ = get(exp.port, ready)
            if status == 200:
                return time.monotonic() - exp.started
        except OSError:
            pass  # not listening yet
        time.sleep(0.05)
    raise HarnessError(f"/readyz not 200 within {timeout:.0f} s")


def measure(n: int) -> tuple[dict[str, Result], float, str]:
    with tempfile.TemporaryDirectory(prefix="ksense-bench-") as tmp:
        exp = Exporter("ebpf", Path(tmp) / "ebpf")
        with running([], [exp]):
            exp.start()
            ready_s = wait_ready(exp)
            results = {k.label: Result(k) for k in KINDS}
            for i in range(WARMUP + n):
                for kind in KINDS:
                    ms, status, body = get(exp.port, kind)
                    if status != 200:
                        raise HarnessError(f"{kind.path} answered {status}")
                    if i >= WARMUP:
                        r = results[kind.label]
                        r.times_ms.append(ms)
                        r.wire_bytes = len(body)
                        r.body_bytes = len(gzip.decompress(body)) if kind.gzip else len(body)
                exp.check_alive()
            _, _, text = get(exp.port, Kind("/metrics", "/metrics"))
    metrics = text.decode()
    if 'source="ebpf"' not in metrics:
        raise HarnessError("the exporter does not report source=ebpf in ksense_exporter_source_info")
    return results, ready_s, metrics


def report(results: dict[str, Result], ready_s: float, metrics: str, n: int) -> None:
    lines = metrics.splitlines()
    samples = sum(1 for x in lines if x and not x.startswith("#"))
    families = sum(1 for x in lines if x.startswith("# TYPE "))
    print(f"ksense /metrics scrape latency — {os.cpu_count()} CPUs, source ebpf, every figure from this run")
    print(
        f"  {n} requests of each kind after {WARMUP} warm-up, interleaved, a new TCP connection each, "
        f"127.0.0.1; /readyz was 200 {ready_s:.2f} s after start"
    )
    print(f"  /metrics carries {families} metric families, {samples} samples")
    print()
    floor = results[KINDS[0].label]
    f50, f99 = floor.pct(0.50), floor.pct(0.99)
    header = ["endpoint", "p50 ms", "p99 ms", "max ms", "×floor p50", "×floor p99", "bytes", "goal p99", "result"]
    table = []
    for r in results.values():
        is_floor = r is floor
        p50, p99 = r.pct(0.50), r.pct(0.99)
        size = f"{r.wire_bytes}" if r.wire_bytes == r.body_bytes else f"{r.wire_bytes} ({r.body_bytes} raw)"
        table.append(
            [
                r.kind.label,
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{max(r.times_ms):.2f}",
                "1" if is_floor else ratio(p50, f50),
                "1" if is_floor else ratio(p99, f99),
                size,
                "-" if is_floor else f"≤ {GOAL_P99_MS:g}",
                "-" if is_floor else verdict(p99, GOAL_P99_MS),
            ]
        )
    print_table(header, table)
    plain = results[KINDS[1].label]
    zipped = results[KINDS[2].label]
    print()
    print(
        f"payload: {plain.wire_bytes} bytes plain, {zipped.wire_bytes} bytes gzip "
        f"(gzip ÷ plain {zipped.wire_bytes / plain.wire_bytes:.2f}); "
        f"/metrics − /healthz at p50 = {plain.pct(0.5) - f50:.2f} ms plain, {zipped.pct(0.5) - f50:.2f} ms gzip"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.scrape_latency", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 requests of each kind instead of 500")
    ap.add_argument("-n", type=int, help="requests of each kind (overrides --quick)")
    args = ap.parse_args(argv)
    n = args.n or (100 if args.quick else 500)
    if os.geteuid() != 0:
        print("bench.scrape_latency: needs root (the eBPF source)", file=sys.stderr)
        return 2
    results, ready_s, metrics = measure(n)
    report(results, ready_s, metrics, n)
    return 0


if __name__ == "__main__":
    run_main("bench.scrape_latency", main)

"""The reference tenant: a real Redis server and an open-loop client that times every request
from its *intended* send time (`python -m lab.tenant` runs the client).

Why Redis: a single-threaded event-loop server from Debian's packages, answering in tens of
microseconds when the node is healthy, so its latency is dominated by how soon the kernel runs
it — exactly the harm ksense should see (run-queue wait, reclaim, I/O stalls, softirq time).

Why open loop: a closed-loop client waits for each answer before sending the next, so a stall
delays the requests it would have sent and they are never measured (coordinated omission). Here
request i is due at t0 + i / rate whatever happened before; a late sender sends the overdue
requests at once, and each latency runs from its due time to its answer. One pipelined
connection keeps the client's own cost small. Per second of due time the client writes one
`client_latency.csv` row: `Time,requests,errors,p50_ms,p90_ms,p99_ms,max_ms` (Time = that
second's start, local wall time). Errors are requests lost with a dropped connection.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import math
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from lab.procs import Child

CLIENT_COLUMNS = ("Time", "requests", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms")
DEFAULT_RATE = 500
_PING, _PONG = b"PING\r\n", b"+PONG\r\n"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in (0, 100]) of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary_row(second: int, latencies_ms: list[float], errors: int) -> list[str]:
    """One client_latency.csv row for the requests due in `second` (epoch seconds)."""
    stamp = datetime.fromtimestamp(second).strftime("%Y-%m-%d %H:%M:%S")
    if not latencies_ms:
        return [stamp, str(errors), str(errors), "", "", "", ""]
    v = sorted(latencies_ms)
    return [stamp, str(len(v) + errors), str(errors),
            *(f"{percentile(v, q):.3f}" for q in (50, 90, 99)), f"{v[-1]:.3f}"]


class _Seconds:
    """Latencies and errors per second of due time, written once every request of a second is
    answered or lost."""

    def __init__(self, writer: csv.writer, flush) -> None:
        self.writer, self.flush = writer, flush
        self.lat: dict[int, list[float]] = collections.defaultdict(list)
        self.err: collections.Counter[int] = collections.Counter()

    def emit_before(self, second: int) -> None:
        done = sorted(s for s in set(self.lat) | set(self.err) if s < second)
        for s in done:
            self.writer.writerow(summary_row(s, self.lat.pop(s, []), self.err.pop(s, 0)))
        if done:
            self.flush()


async def _client(host: str, port: int, rate: float, out: Path, stop: asyncio.Event) -> None:
    step_ns = round(1e9 / rate)
    mono0, wall0 = time.monotonic_ns(), time.time_ns()

    def second_of(due_ns: int) -> int:
        return (wall0 + (due_ns - mono0)) // 1_000_000_000

    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CLIENT_COLUMNS)
        f.flush()
        seconds = _Seconds(w, f.flush)
        pending: collections.deque[int] = collections.deque()
        start = time.monotonic_ns()
        sent = 0
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.1)
                now = time.monotonic_ns()
                while start + sent * step_ns <= now:  # due while no connection: lost
                    seconds.err[second_of(start + sent * step_ns)] += 1
                    sent += 1
                continue

            async def receive(reader=reader) -> None:
                while True:
                    line = await reader.readline()
                    if line != _PONG:
                        raise ConnectionError(f"unexpected answer {line[:40]!r}")
                    due = pending.popleft()
                    seconds.lat[second_of(due)].append((time.monotonic_ns() - due) / 1e6)

            receiver = asyncio.create_task(receive())
            try:
                while not stop.is_set() and not receiver.done():
                    now = time.monotonic_ns()
                    burst = 0
                    while start + sent * step_ns <= now:
                        pending.append(start + sent * step_ns)
                        sent += 1
                        burst += 1
                    if burst:
                        writer.write(_PING * burst)
                    oldest = second_of(pending[0]) if pending else second_of(now)
                    seconds.emit_before(min(oldest, second_of(now)))
                    await asyncio.sleep(max(0.0, (start + sent * step_ns - time.monotonic_ns()) / 1e9))
            finally:
                receiver.cancel()
                writer.close()
                for due in pending:  # unanswered on a dropped connection (or at stop): lost
                    seconds.err[second_of(due)] += 1
                pending.clear()
        seconds.emit_before(second_of(time.monotonic_ns()) + 1)


class Tenant:
    """redis-server on 127.0.0.1:`port` and the open-loop client (a separate process, so the
    recorder's own work never delays a request)."""

    def __init__(self, port: int, rate: float, out: Path, log: Path, workdir: Path):
        self.server = Child(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
                             "--loglevel", "warning", "--dir", str(workdir)], log)
        try:
            _wait_port(port, 10.0, self.server)
            self.client = Child([sys.executable, "-m", "lab.tenant", "--port", str(port), "--rate", str(rate),
                                 "--out", str(out)], log)
        except BaseException:
            self.server.stop()
            raise

    def stop(self) -> None:
        self.client.stop()
        self.server.stop()


def _wait_port(port: int, deadline_s: float, server: Child) -> None:
    import socket

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not server.alive():
            raise RuntimeError(f"redis-server exited with status {server.proc.returncode} (see lab.log)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not accept connections on port {port} within {deadline_s:g} s")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.tenant",
                                description="Open-loop Redis PING client: per-second latency from intended send times.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, help=f"requests per second (default {DEFAULT_RATE})")
    p.add_argument("--out", type=Path, required=True, help="client_latency.csv to write")
    args = p.parse_args(argv)
    if args.rate <= 0:
        p.error("--rate must be > 0")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await _client(args.host, args.port, args.rate, args.out, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

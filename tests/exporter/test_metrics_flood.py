"""/metrics under hostile clients, against the real processes (issue #10).

The exporter (9860), the scorer (9861) and the scheduler (9862) serve /metrics with one server
(common/httpserver.py). 2,000 connections that never send a request must hold no
thread, must not grow memory without bound and must not keep a scrape out: scrapes still answer
in under a second. A request head that never ends is cut at the read deadline.
"""

from __future__ import annotations

import math
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.httpserver import Limits
from tests.support import REPO, free_port, wait_for

IDLE = 2000
#: What a scrape may take while the idle connections are held.
SCRAPE_S = 1.0
#: Growth of the serving process' RSS the flood may cause (2,000 threads would cost far more).
RSS_GROWTH_MIB = 24
#: How long the idle connections are held while scraping.
HOLD_S = 3.0


@dataclass(frozen=True)
class Usage:
    threads: int
    rss_mib: float


def usage(pid: int) -> Usage:
    status = Path(f"/proc/{pid}/status").read_text()
    return Usage(
        threads=int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1)),
        rss_mib=int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024,
    )


def raise_nofile(needed: int) -> None:
    """This process holds the idle connections: it needs that many descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 1024
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {want}: cannot hold {needed} connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def hold_idle(port: int, n: int, deadline_s: float = 20.0) -> tuple[list[socket.socket], int]:
    """`n` connections to port that send nothing; returns them and how many got established
    before the deadline (the rest are still in the kernel's SYN retries)."""
    socks, sel = [], selectors.DefaultSelector()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
    connected, end = 0, time.monotonic() + deadline_s
    while connected < n and time.monotonic() < end:
        for key, _ in sel.select(0.2):
            sel.unregister(key.fileobj)
            connected += 1
    sel.close()
    return socks, connected


def scrape_s(port: int, path: str = "/metrics") -> float:
    """Seconds one GET took on a fresh connection (inf when it failed or took over 5 s)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            r.read()
            if r.status != 200:
                return math.inf
    except OSError:
        return math.inf
    return time.monotonic() - started


def pid_listening_on(port: int, root: int) -> int:
    """The process of `root`'s tree holding the listening socket of `port` (the scorer serves
    /metrics from its gunicorn worker)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
    pending = [root]
    while pending:
        pid = pending.pop()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
        for task in Path(f"/proc/{pid}/task").iterdir():
            pending += [int(c) for c in (task / "children").read_text().split()]
    raise AssertionError(f"no process of {root}'s tree listens on {port}")


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    env.update(extra)
    return env


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def start_exporter(tmp_path: Path, request) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = spawn(["-m", "exporter", "--source", "procfs", "--host", "127.0.0.1", "--port", str(port), "--no-csv",
                  "--state-dir", str(tmp_path / "state")], clean_env({}), tmp_path / "exporter.log")
    return proc, port


def start_scorer(tmp_path: Path, request) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = spawn(["-m", "scorer", "--exporter-url", "http://127.0.0.1:9/metrics", "--host", "127.0.0.1",
                  "--port", str(free_port()), "--metrics-port", str(port), "--no-csv"], clean_env({}),
                 tmp_path / "scorer.log")
    return proc, port


def start_scheduler(tmp_path: Path, request) -> tuple[subprocess.Popen, int]:
    kube = request.getfixturevalue("kube_api")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        f"clusters:\n- name: t\n  cluster:\n    server: {kube.url}\n"
        "contexts:\n- name: t\n  context:\n    cluster: t\n    user: t\n"
        "users:\n- name: t\n  user:\n    token: test\n")
    port = free_port()
    env = clean_env({"KUBECONFIG": str(kubeconfig), "FUZZY_SCORE_SOURCE": "scorer",
                     "FUZZY_SCORER_URL": "http://127.0.0.1:9"})
    proc = spawn(["-m", "scheduler", "--metrics-host", "127.0.0.1", "--metrics-port", str(port)], env,
                 tmp_path / "scheduler.log")
    return proc, port


STARTERS = {"exporter": start_exporter, "scorer": start_scorer, "scheduler": start_scheduler}


@pytest.fixture
def served(request, tmp_path):
    """(pid serving /metrics, port) of the component named by the test's parameter."""
    proc, port = STARTERS[request.param](tmp_path, request)
    try:
        wait_for(lambda: proc.poll() is not None or scrape_s(port, "/healthz") < math.inf, 60,
                 f"{request.param} answering /healthz")
        assert proc.poll() is None, next(tmp_path.glob("*.log")).read_text()[-3000:]
        yield pid_listening_on(port, proc.pid), port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("served", list(STARTERS), indirect=True)
def test_idle_connections_hold_no_thread_and_keep_no_scrape_out(served, request):
    pid, port = served
    raise_nofile(IDLE)
    assert scrape_s(port) < math.inf  # the first scrape starts the first worker
    before = usage(pid)
    socks, connected = hold_idle(port, IDLE)
    try:
        # Scrape for a few seconds while the connections are held (a server that accepts
        # slowly shows its cost only after a while), then look at the process.
        latencies, end = [], time.monotonic() + HOLD_S
        while time.monotonic() < end:
            latencies.append(scrape_s(port))
        during = usage(pid)
    finally:
        for s in socks:
            s.close()
    print(f"\n{request.node.callspec.id}: {connected}/{IDLE} idle connections established; threads "
          f"{before.threads} -> {during.threads}, RSS {before.rss_mib:.1f} -> {during.rss_mib:.1f} MiB, "
          f"{len(latencies)} scrapes, slowest {max(latencies):.3f} s")
    assert connected == IDLE
    assert max(latencies) < SCRAPE_S, latencies
    assert during.threads <= before.threads + Limits.max_requests, (before, during)
    assert during.rss_mib - before.rss_mib < RSS_GROWTH_MIB, (before, during)


@pytest.mark.parametrize("served", ["exporter"], indirect=True)
def test_a_request_head_that_never_ends_is_cut_at_the_read_deadline(served):
    _, port = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        s.settimeout(Limits.read_timeout_s + 5)
        started = time.monotonic()
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
        took = time.monotonic() - started
    assert closed, f"still open after {took:.1f} s"
    assert took < Limits.read_timeout_s + 1
    assert scrape_s(port) < SCRAPE_S

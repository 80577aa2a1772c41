"""Helpers shared by the test suite, defined once: polling with a deadline (`wait_for`), free
ports, and starting and stopping the processes tests run (`start_module`, `Process`, `stop`).

Fixtures stay in conftest.py files; what a test imports lives here. Nothing sleeps for a fixed
time: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], T], deadline_s: float, what: str, *, poll_s: float = 0.05) -> T:
    """Poll `predicate` until it returns a truthy value (returned) or fail after `deadline_s`:
    servers and watches are waited for with a deadline, never with a bare sleep."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:g}s waiting for {what}")
        time.sleep(poll_s)


def _ports_below_the_ephemeral_range(span: int = 12000) -> range:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - span), low)


#: Where free_port looks: below the kernel's ephemeral range, which outgoing connections (scrapes,
#: API calls) take their local ports from, so none of them can take a port between free_port
#: and the server's bind.
PORT_RANGE = _ports_below_the_ephemeral_range()
_handed_out: set[int] = set()
_rng = random.Random()


def free_port() -> int:
    """A port of PORT_RANGE free right now on 127.0.0.1 and never handed out before by this
    process. (The kernel's bind(0) choice repeats ports: the e2e stack once started two servers
    on one.) The race with unrelated processes until the server binds it is accepted in tests."""
    for _ in range(10 * len(PORT_RANGE)):
        port = _rng.choice(PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def _get_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1.0).status_code == 200
    except requests.RequestException:
        return False


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; nothing when it already ended."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without its KSENSE_* / FUZZY_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    env.update(extra or {})
    return env


def start_module(workdir: Path, name: str, args: Sequence[str], port: int, ready: str,
                 env: Mapping[str, str] | None = None, deadline_s: float = 60.0) -> Process:
    """`python <args>` (e.g. ["-m", "scorer", ...]) logging to workdir/<name>.log; returns once
    `ready` (a path on `port`) answers 200."""
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=clean_env(env), stdout=out,
                                stderr=subprocess.STDOUT)
    server = Process(proc, port, log)
    server._wait_ready(ready, deadline_s, name)
    return server


@dataclass
class Process:
    """A server we started: stop it by its PID."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        stop(self.proc, grace_s)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def _wait_ready(self, path: str, deadline_s: float, what: str) -> None:
        end = time.monotonic() + deadline_s
        while not _get_ok(self.url + path):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise AssertionError(f"{what} not ready (exit {self.proc.poll()}):\n{self.log_text()[-3000:]}")
            time.sleep(0.05)


class TextServer:
    """A tiny HTTP(S) server answering every GET with `body()` (an exposition to scrape, a scorer's /score)."""

    def __init__(self, body: Callable[[], str], content_type: str = "text/plain; version=0.0.4",
                 ssl_context: ssl.SSLContext | None = None):
        self.body = body
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = outer.body().encode()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

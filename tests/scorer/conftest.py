"""Fixtures of the scorer tests: a scriptable fake HTTP server on a real socket, and real
Prometheus / exporter processes (tests/scorer/promserver.py) stopped by PID at teardown."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests import support
from tests.conftest import require
from tests.scorer import promserver


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "application/json"
    delay_s: float = 0.0


#: (path, query parameters) -> Reply
Handler = Callable[[str, dict[str, list[str]]], Reply]


class FakeServer:
    """A real HTTP server on 127.0.0.1 whose answers the test scripts with `handler`; `requests`
    lists every (path, params) received, so tests can count what a source asked for."""

    def __init__(self) -> None:
        self.handler: Handler = lambda path, params: Reply(404, b"no handler")
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.methods: list[str] = []  # each request's method, in order
        self._release = threading.Event()  # wakes sleeping handlers at teardown
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                fake.methods.append("GET")
                self._answer(parts.path, parse_qs(parts.query))

            def do_POST(self) -> None:  # the API's form POST: the same parameters in the body
                length = int(self.headers.get("Content-Length") or 0)
                fake.methods.append("POST")
                self._answer(urlsplit(self.path).path, parse_qs(self.rfile.read(length).decode()))

            def _answer(self, path: str, params: dict[str, list[str]]) -> None:
                fake.requests.append((path, params))
                reply = fake.handler(path, params)
                if reply.delay_s:
                    fake._release.wait(reply.delay_s)
                body = reply.body.encode() if isinstance(reply.body, str) else reply.body
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.close()


@pytest.fixture
def need_prometheus() -> str:
    binary = promserver.prometheus_binary()
    require(binary is not None, "needs /usr/bin/prometheus (Debian package prometheus)")
    return binary


class RealParts:
    """Starts real servers for one test; every one is stopped by PID at teardown."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[support.Process] = []

    def prometheus(self, jobs: list[dict], **kwargs) -> support.Process:
        server = promserver.start_prometheus(self.workdir / f"prometheus-{len(self.started)}", jobs, **kwargs)
        self.started.append(server)
        return server

    def exporter(self, replay_csv: Path, **kwargs) -> support.Process:
        exporter = promserver.start_exporter(self.workdir, replay_csv, **kwargs)
        self.started.append(exporter)
        return exporter

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture
def real_parts(tmp_path: Path) -> Iterator[RealParts]:
    parts = RealParts(tmp_path)
    yield parts
    parts.stop_all()

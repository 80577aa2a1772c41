"""Serve the scorer's WSGI (Flask) app in production: gunicorn with our gthread worker, TLS
files re-read when they rotate (docs/api.md, docs/operations.md#what-the-prototype-did-wrong).

Why gunicorn gthread (docs/development.md): it keeps connections alive under TLS (≈ 2,300 req/s here)
and parks idle kept-alive connections in its event loop, not in threads. Flask's dev server
and gunicorn's sync worker close every connection (a handshake per request, ≈ 18 ms), waitress
has no TLS, cheroot is not installed. Its worker still let a slow client hold a thread (a
stalled handshake, headers or body), so the worker is scorer.worker.ApiWorker: the event loop
reads each request whole, TLS handshake included, under one deadline (`read_timeout_s`) and a
memory bound (`held_bytes`), before a thread runs the app; the probes have their own thread.
Its docstring explains the design.

Embedded through gunicorn.app.base.BaseApplication: one arbiter process and ONE worker process
with `threads` threads. One worker, because the evaluator, its Results and the webhook's uid
de-duplication live in the serving process: `on_worker_start` runs there (gunicorn's
post_worker_init) to start them, and `stop` is set there when the worker exits, after the
in-flight requests were answered. SIGTERM to the arbiter stops the worker gracefully and exits 0.
The arbiter restarts a worker that dies, with a fresh evaluator.

Certificate rotation: gunicorn asks the `ssl_context` hook for a context on every new
connection (its default would re-read the files each time). `TlsFiles.context` returns a cached
context and stats both files at most once per `check_every_s`; when the (device, inode, mtime,
size) of either changed, it loads a new context and swaps it in. Connections keep the context
they started with; new connections get the new certificate. A load that fails (a rotation caught
half-way: new certificate, old key) keeps the previous context, is logged once, and is retried
when the files change again. Kubernetes Secret volumes rotate by swapping a symlink; os.stat
follows it, so the inode changes.

`TlsFiles.expiry()` (ksense_webhook_certificate_expiry_timestamp_seconds) is the notAfter of
the served certificate, from the same load. It is parsed with `cryptography` when installed (it
comes with trustme in the dev requirements; the scorer's run-time pins do not need it), else
with the stdlib's `ssl._ssl._test_decode_cert` (private, but in every CPython 3 and what
CPython's own ssl tests use). Both read the first certificate of the file: the leaf.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from scorer.config import ScorerConfig
from scorer.worker import ApiWorker

_LOG = logging.getLogger("ksense.scorer.tls")

#: Liveness and readiness: answered by the worker's own probe thread, never behind API requests.
PROBE_PATHS = ("/healthz", "/readyz")
#: Heap blocks this big or bigger get their own mapping, returned to the system at free().
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter

#: Longer than the API server's interval between webhook calls under load, so connections are
#: reused; idle ones are closed by gunicorn after this.
KEEPALIVE_S = 75
GRACEFUL_TIMEOUT_S = 10
#: The heartbeat file gunicorn's arbiter watches; tmpfs, since the scorer's image has a
#: read-only root file system (docs/operations.md).
_SHM = "/dev/shm"


def not_after_cryptography(certfile: str | os.PathLike[str]) -> float:
    """notAfter (Unix time) of the first certificate in a PEM file, with `cryptography`."""
    from cryptography import x509

    return x509.load_pem_x509_certificate(Path(certfile).read_bytes()).not_valid_after_utc.timestamp()


def not_after_stdlib(certfile: str | os.PathLike[str]) -> float:
    """notAfter (Unix time) of the first certificate in a PEM file, with the stdlib only."""
    decoded = ssl._ssl._test_decode_cert(os.fspath(certfile))  # type: ignore[attr-defined]
    return float(ssl.cert_time_to_seconds(decoded["notAfter"]))


not_after = not_after_cryptography if importlib.util.find_spec("cryptography") else not_after_stdlib


@dataclass(frozen=True)
class _Loaded:
    signature: tuple[int, ...]
    context: ssl.SSLContext
    not_after: float


class TlsFiles:
    """A certificate and key file pair, served through a context that follows their rotation.

    Build it in the main process, pass `expiry` to the metrics collector and the object to
    `serve`; both run in the worker process after the fork, each with its own reload state.
    """

    def __init__(
        self,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str],
        *,
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = _LOG,
    ):
        self.certfile = os.fspath(certfile)
        self.keyfile = os.fspath(keyfile)
        self._check_every_s = check_every_s
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._failed: tuple[int, ...] | str | None = None
        self._next_check = -float("inf")

    def load(self) -> None:
        """Load the files now; raises OSError / ssl.SSLError / ValueError when they are unusable.
        `serve` calls it first, so a bad certificate fails the start, not the first request."""
        signature = self._signature()
        if isinstance(signature, str):
            raise OSError(f"TLS files unreadable: {signature}")
        with self._lock:
            self._loaded = self._build(signature)
            self._next_check = self._clock() + self._check_every_s
        self._log.info(
            "event=tls_loaded cert=%s not_after=%s", self.certfile, _iso(self._loaded.not_after)
        )

    def context(self) -> ssl.SSLContext:
        """The context for a new connection (gunicorn's `ssl_context` hook)."""
        self._refresh()
        loaded = self._loaded
        if loaded is None:
            self.load()
            loaded = self._loaded
        return loaded.context

    def expiry(self) -> float | None:
        """notAfter (Unix time) of the certificate new connections get; None before a load."""
        self._refresh()
        loaded = self._loaded
        return loaded.not_after if loaded is not None else None

    def _refresh(self) -> None:
        now = self._clock()
        if now < self._next_check:
            return
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + self._check_every_s
            signature = self._signature()
            if (self._loaded is not None and signature == self._loaded.signature) or signature == self._failed:
                return
            if isinstance(signature, str):
                self._failed = signature
                self._log.warning("event=tls_reload_failed error=%r (serving the previous certificate)", signature)
                return
            try:
                loaded = self._build(signature)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._failed = signature
                self._log.warning(
                    "event=tls_reload_failed cert=%s key=%s error=%r (serving the previous certificate)",
                    self.certfile, self.keyfile, str(exc),
                )
                return
            self._loaded, self._failed = loaded, None
        self._log.info("event=tls_reloaded cert=%s not_after=%s", self.certfile, _iso(loaded.not_after))

    def _signature(self) -> tuple[int, ...] | str:
        """What identifies the files' current contents, or why they cannot be read."""
        try:
            cert, key = os.stat(self.certfile), os.stat(self.keyfile)
        except OSError as exc:
            return f"{exc.filename}: {exc.strerror}"
        return tuple(v for st in (cert, key) for v in (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))

    def _build(self, signature: tuple[int, ...]) -> _Loaded:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # TLS 1.2 renegotiation lets one connection make the server redo the expensive half
        # of a handshake again and again; TLS 1.3 has none. Nothing of ours needs it.
        context.options |= ssl.OP_NO_RENEGOTIATION
        context.load_cert_chain(self.certfile, self.keyfile)
        # Parsed after the load: if the files changed in between, the signature taken before
        # both differs from the new files', so the next check loads again and both agree.
        return _Loaded(signature, context, not_after(self.certfile))


class _Gunicorn(BaseApplication):
    def __init__(self, app: Callable, options: dict[str, Any]):
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable:
        return self._app


def serve(
    app: Callable,
    *,
    host: str,
    port: int,
    tls: TlsFiles | None = None,
    threads: int = 8,
    on_worker_start: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    keepalive_s: int = KEEPALIVE_S,
    graceful_timeout_s: int = GRACEFUL_TIMEOUT_S,
    read_timeout_s: float = ScorerConfig.read_timeout_s,
    body_limits: Mapping[str, int] | None = None,
    held_bytes: int = ScorerConfig.held_request_bytes,
    probe_paths: Iterable[str] = PROBE_PATHS,
    log_level: str = "info",
) -> int:
    """Serve `app` on host:port (HTTPS when `tls` is given) until SIGTERM or SIGINT; returns the
    exit status (0 after a clean stop). Must run in the main thread (gunicorn installs signal
    handlers). `on_worker_start` runs in the serving process once it is up; `stop` is set in the
    serving process when it stops, after in-flight requests were answered. A request must arrive
    whole within `read_timeout_s`; `body_limits` maps a path to the largest body read for it
    (the app's limits: ScorerApi.body_limits; other paths: none); `held_bytes` bounds the request
    bytes held at once; `probe_paths` are answered by their own thread (scorer.worker)."""
    if tls is not None:
        tls.load()
    _fixed_mmap_threshold()

    def post_worker_init(worker: Any) -> None:
        if on_worker_start is not None:
            on_worker_start()

    def worker_exit(server: Any, worker: Any) -> None:
        if stop is not None:
            stop.set()

    options: dict[str, Any] = {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": 1,
        "worker_class": type("ApiWorker", (ApiWorker,), {
            "read_timeout_s": read_timeout_s, "body_limits": dict(body_limits or {}), "held_bytes": held_bytes,
            "probe_paths": frozenset(probe_paths),
        }),
        "threads": threads,
        # What ApiWorker relies on: it runs the handshake in its loop and speaks HTTP/1.1 only.
        "do_handshake_on_connect": False,
        "http_protocols": "h1",
        "keepalive": keepalive_s,
        "graceful_timeout": graceful_timeout_s,
        "proc_name": "ksense-scorer",
        # gunicorn ≥ 25 opens a control socket under $HOME by default: not wanted in a pod.
        "control_socket_disable": True,
        "accesslog": None,
        "errorlog": "-",
        "logger_class": _GunicornLogs,
        "loglevel": log_level,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
    }
    if os.path.isdir(_SHM):
        options["worker_tmp_dir"] = _SHM
    if tls is not None:

        def ssl_context(config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return tls.context()

        options.update(certfile=tls.certfile, keyfile=tls.keyfile, ssl_context=ssl_context)
    try:
        _Gunicorn(app, options).run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


class _GunicornLogs(glogging.Logger):
    """gunicorn's own lines (worker boots and exits, timeouts, signals) in the one ksense log style:
    its error logger hands each line to the root handler common.logs set up, as
    `event=gunicorn message=...`, instead of gunicorn's `[date] [pid] [LEVEL]` format."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.handlers[:] = []
        self.error_log.propagate = True
        self.error_log.filters[:] = [_as_event]


def _as_event(record: logging.LogRecord) -> bool:
    record.msg, record.args = "event=gunicorn message=%r", (record.getMessage(),)
    return True


def _fixed_mmap_threshold() -> None:
    """Keep request-sized buffers out of the heap. glibc raises its mmap threshold each time a
    mapped block is freed (up to 32 MiB), after which buffers of a request body's size come from
    the heap and stay in the process after they are freed: rounds of maximum-size bodies
    ratcheted the worker from +15 to +86 MiB above idle. Setting the threshold stops the
    adjustment. The forked worker inherits it. glibc only; elsewhere nothing happens."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        _LOG.warning("event=mallopt_failed parameter=M_MMAP_THRESHOLD")


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

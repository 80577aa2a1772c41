"""Pod names and namespaces from the Kubernetes API: a list + watch of the pods on this node.

The kernel and the cgroup tree know a pod only by its UID; people know it as namespace/name.
A UID's namespace and name never change, so a cache uid -> (namespace, name) is never wrong,
only incomplete: when the API cannot be reached the exporter keeps what it learnt, new pods go
out UID-only, every metric keeps flowing, and `ksense_pod_names_available` is 0 (the log says
why).

Why a thin watch on the standard library (http.client, ssl, json) and not the official
`kubernetes` client the scheduler uses: the exporter runs on every node with a 60 MiB RSS budget
(docs/performance.md), and importing the client costs ~30 MiB of it (45 MiB against 16 MiB for
http.client + ssl + json, measured with ru_maxrss on this machine) and ten more packages in the
node image (requests, urllib3, google-auth, websocket-client, ...), for one list and one watch
of one resource. The API slice used here is small and stable: list with `fieldSelector`,
`limit`/`continue`; watch from a `resourceVersion` with bookmarks; `410 Expired` -> relist.

Bounded: pages of PAGE_LIMIT pods, answers of at most MAX_BODY_BYTES, watch lines of at most
MAX_LINE_BYTES, at most `max_pods` names (more are counted, not kept). In time too: a list page
has LIST_TIMEOUT_S and a watch WATCH_TIMEOUT_S + READ_SLACK_S for its whole answer, not per read
(a server trickling a byte at a time would otherwise hold the thread forever), and the API is
never asked again without a backoff delay unless the last watch made progress (delivered an event,
or ran for MIN_WATCH_S): a server refusing every request, answering 410 to the list itself, or
ending every watch at once gets a few requests a second at first, one a minute at most later.
The sample loop never waits on any of this: it reads `get` and `available`, one dict read each. The API server is asked
for metadata only (PartialObjectMetadata); a server that ignores the ask sends whole pods, which
are parsed the same way. Terminated pods (Succeeded, Failed) are filtered out by the server, so
finished Jobs do not fill the cache.

Credentials: in a pod, the service account's token and CA (automounted; the DaemonSet sets
fsGroup so that the token stays readable by the uid the exporter becomes,
exporter/privilege.py). `PodNames` reads both when it is made, before root is given up, and
re-reads the token before each connection (the kubelet rotates it), keeping the one it has when
the file cannot be read.
"""

from __future__ import annotations

import contextlib

# getaddrinfo() imports the idna codec on first use, and once root is given up the interpreter's
# own library may be out of reach (exporter/app.py _give_up_root): imported now.
import encodings.idna  # noqa: F401
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

log = logging.getLogger(__name__)

#: Where the kubelet mounts the service account's credentials.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PAGE_LIMIT = 100
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_LINE_BYTES = 4 * 1024 * 1024
#: A watch asks the server to end it after this long (then it resumes from its resourceVersion);
#: one still open after WATCH_TIMEOUT_S + READ_SLACK_S is cut (the server is trickling or dead).
WATCH_TIMEOUT_S = 300
READ_SLACK_S = 30.0
#: A watch that ends sooner than this without a single event made no progress: back off.
MIN_WATCH_S = 1.0
#: Deadline of one list page's whole answer.
LIST_TIMEOUT_S = 30.0
#: Retry delays after a failure: doubling from BACKOFF_MIN_S to BACKOFF_MAX_S, with jitter.
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
#: Metadata only when the server can (it can since 1.15), whole objects otherwise.
ACCEPT_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
ACCEPT_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
USER_AGENT = "ksense-exporter"


class ApiProblem(Exception):
    """A failed request: says what and, for an HTTP error, carries the status code."""

    def __init__(self, what: str, code: int | None = None):
        super().__init__(what)
        self.code = code


@dataclass(frozen=True)
class Endpoint:
    """Where the API is and how to authenticate: `token` is the one read at start (before root
    is given up), `token_file` is re-read before each connection when set and readable."""

    url: str
    token: str | None = None
    token_file: Path | None = None
    ssl_context: ssl.SSLContext | None = None


def endpoint(setting: str, environ: Mapping[str, str], token_file: Path | None = None) -> tuple[Endpoint | None, str]:
    """The endpoint KSENSE_KUBE_API asks for, and why there is none when there is none.

    `auto`: in a pod (KUBERNETES_SERVICE_HOST/PORT set), the in-cluster endpoint with the service
    account's token and CA; elsewhere none. `off`: none. An http(s) URL (kubectl proxy, tests):
    that URL, with the token of `token_file` (KSENSE_KUBE_TOKEN_FILE) when given, and the
    system's CAs for https.
    """
    if setting == "off":
        return None, "KSENSE_KUBE_API=off"
    if setting != "auto":
        token = _read_token(token_file) if token_file is not None else None
        if token_file is not None and token is None:
            return None, f"cannot read the token file {token_file}"
        ctx = ssl.create_default_context() if setting.startswith("https:") else None
        return Endpoint(setting.rstrip("/"), token, token_file, ctx), ""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None, "not in a Kubernetes pod (KUBERNETES_SERVICE_HOST unset)"
    token_path = SERVICE_ACCOUNT_DIR / "token"
    token = _read_token(token_path)
    if token is None:
        return None, f"no service account token at {token_path} (automountServiceAccountToken false?)"
    try:
        ctx = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT_DIR / "ca.crt"))
    except (OSError, ssl.SSLError) as exc:
        return None, f"cannot load the cluster CA: {exc}"
    shown = f"[{host}]" if ":" in host else host
    return Endpoint(f"https://{shown}:{port}", token, token_path, ctx), ""


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _meta(obj: object) -> tuple[str, str, str, str] | None:
    """(uid, namespace, name, resourceVersion) of a pod or its PartialObjectMetadata."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return None
    fields = tuple(meta.get(k) for k in ("uid", "namespace", "name", "resourceVersion"))
    if not all(isinstance(f, str) for f in fields):
        return None
    return fields  # type: ignore[return-value]


class PodNames:
    """uid -> (namespace, name) of this node's pods, kept up to date by a watch thread.

    `get` and `available` are safe from any thread (one dict read; a relist swaps in a new
    dict). `start` after root is given up (it starts a thread); `stop` ends the thread.
    """

    def __init__(self, api: Endpoint, node: str, *, max_pods: int,
                 backoff_s: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S)):
        self._api = api
        self._backoff = backoff_s
        self._node = node
        self._max = max_pods
        self._names: dict[str, tuple[str, str]] = {}
        self._token = api.token
        self._synced = False
        self._overflowed = False
        self._last_problem = ""
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self._timer: threading.Timer | None = None
        self._expired = threading.Event()  # the current request passed its deadline
        self._thread: threading.Thread | None = None
        self.relists = 0  # successful lists, for tests and the log

    def get(self, uid: str) -> tuple[str, str] | None:
        return self._names.get(uid)

    @property
    def available(self) -> bool:
        """True while the last list succeeded and its watch has not failed since."""
        return self._synced

    def __len__(self) -> int:
        return len(self._names)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ksense-pod-names", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            # Wakes a watch blocked in a read; close() alone would not (and http.client hands
            # the socket of a `Connection: close` answer to the response, out of conn.sock).
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        first, most = self._backoff
        delay = first
        rv = None
        relisted = False  # relisted at once after a 410, no watch progress since
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                rv, progressed = self._watch(rv)
                if not progressed:
                    raise ApiProblem("the watch ended at once without an event")
                delay, relisted = first, False
                continue  # the server ended the watch: resume from rv at once
            except ApiProblem as exc:
                if exc.code == 410 and rv is not None and not relisted:
                    # The watch's resourceVersion is too old: relist at once, once. A 410 on the
                    # list itself, or again on the next watch, backs off like any failure.
                    log.info("event=pod_names_relist reason=%r", str(exc))
                    rv, relisted = None, True
                    continue
                self._fail(exc)
            except Exception as exc:  # names are best effort: any failure backs off, relists
                self._fail(exc)
            finally:
                self._close()
            rv, relisted = None, False  # whatever happened meanwhile (deletions) is learnt by a relist
            self._stop.wait(delay * random.uniform(0.8, 1.2))
            delay = min(most, delay * 2)

    def _fail(self, exc: Exception) -> None:
        if self._stop.is_set():
            return
        hint = ""
        if isinstance(exc, ApiProblem) and exc.code in (401, 403):
            hint = (" hint='the exporter ServiceAccount needs get/list/watch on pods "
                    "(deploy/base/exporter-clusterrole.yaml)'")
        self._synced = False
        # Once per distinct reason: an API down for an hour is one line, not one a minute.
        level = logging.WARNING if str(exc) != self._last_problem else logging.DEBUG
        self._last_problem = str(exc)
        log.log(level, "event=pod_names_unavailable reason=%r effect='new pods are labelled by uid only'%s",
                str(exc), hint)

    def _close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        conn, self._conn = self._conn, None
        sock, self._sock = self._sock, None
        if conn is not None:
            conn.close()
        if sock is not None:
            sock.close()

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(self._api.url)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=timeout, context=self._api.ssl_context)
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        else:
            raise ApiProblem(f"unsupported API URL {self._api.url!r}")
        self._conn = conn
        return conn

    def _headers(self, accept: str) -> dict[str, str]:
        if self._api.token_file is not None:
            # The kubelet rotates the token; keep the last one read if the file is out of reach.
            self._token = _read_token(self._api.token_file) or self._token
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _request(self, query: dict[str, str], accept: str, timeout: float) -> http.client.HTTPResponse:
        """Send one GET; the whole exchange, answer included, must end within `timeout` seconds:
        past it the socket is shut down, which ends any read blocked on it (`_expired` says so)."""
        conn = self._connect(timeout)
        self._expired.clear()
        conn.connect()
        self._sock = sock = conn.sock
        self._timer = threading.Timer(timeout, self._expire, args=(sock,))
        self._timer.daemon = True
        self._timer.start()
        if self._stop.is_set():
            raise ApiProblem("stopping")
        path = urlsplit(self._api.url).path.rstrip("/") + "/api/v1/pods?" + urlencode(query)
        conn.request("GET", path, headers=self._headers(accept))
        resp = conn.getresponse()
        if resp.status != 200:
            body = resp.read(64 * 1024).decode("utf-8", "replace")
            try:
                message = json.loads(body).get("message", body)
            except (ValueError, AttributeError):
                message = body
            raise ApiProblem(f"HTTP {resp.status}: {str(message)[:300]}", resp.status)
        return resp

    def _expire(self, sock: socket.socket) -> None:
        self._expired.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _past_deadline(self, what: str, timeout: float) -> ApiProblem | None:
        return ApiProblem(f"{what} not done within its deadline of {timeout:g} s") if self._expired.is_set() else None

    def _selector(self) -> str:
        return f"spec.nodeName={self._node},status.phase!=Succeeded,status.phase!=Failed"

    def _list(self) -> str:
        """List every page; swap in the new names; return the list's resourceVersion."""
        names: dict[str, tuple[str, str]] = {}
        cont = ""
        while True:
            query = {"fieldSelector": self._selector(), "limit": str(PAGE_LIMIT)}
            if cont:
                query["continue"] = cont
            resp = self._request(query, ACCEPT_LIST, timeout=LIST_TIMEOUT_S)
            try:
                body = resp.read(MAX_BODY_BYTES + 1)
            except OSError:
                body = b""
            if (late := self._past_deadline("a page of the pod list", LIST_TIMEOUT_S)) is not None:
                raise late
            self._close()
            if len(body) > MAX_BODY_BYTES:
                raise ApiProblem(f"a page of the pod list exceeds {MAX_BODY_BYTES} bytes")
            doc = json.loads(body)
            for item in doc.get("items") or ():
                m = _meta(item)
                if m is not None:
                    self._keep(names, m)
            meta = doc.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                break
        self._names = names
        self._synced = True
        self._last_problem = ""
        self.relists += 1
        log.info("event=pod_names_listed node=%s pods=%d", self._node, len(names))
        return str(meta.get("resourceVersion") or "")

    def _keep(self, names: dict[str, tuple[str, str]], m: tuple[str, str, str, str]) -> None:
        uid, namespace, name, _ = m
        if uid in names or len(names) < self._max:
            names[uid] = (namespace, name)
        elif not self._overflowed:
            self._overflowed = True
            log.warning("event=pod_names_full max=%d effect='further pods are labelled by uid only'", self._max)

    def _watch(self, rv: str) -> tuple[str, bool]:
        """Follow the watch until the server ends it; returns the last resourceVersion seen and
        whether the watch made progress (an event, or MIN_WATCH_S without an error)."""
        query = {"watch": "1", "fieldSelector": self._selector(), "resourceVersion": rv,
                 "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_TIMEOUT_S)}
        deadline = WATCH_TIMEOUT_S + READ_SLACK_S
        started = time.monotonic()
        resp = self._request(query, ACCEPT_WATCH, timeout=deadline)
        self._synced = True
        events = 0
        while not self._stop.is_set():
            try:
                line = resp.readline(MAX_LINE_BYTES + 1)
            except OSError:
                line = b""
            if (late := self._past_deadline("the watch", deadline)) is not None:
                raise late
            if not line:
                break
            if len(line) > MAX_LINE_BYTES:
                raise ApiProblem(f"a watch event exceeds {MAX_LINE_BYTES} bytes")
            if not line.strip():
                continue
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object")
            events += 1
            if kind == "ERROR":
                code = obj.get("code") if isinstance(obj, dict) else None
                message = obj.get("message") if isinstance(obj, dict) else obj
                raise ApiProblem(f"watch error: {message}", code if isinstance(code, int) else None)
            if kind == "BOOKMARK":
                meta = obj.get("metadata") if isinstance(obj, dict) else None
                rv = str((meta or {}).get("resourceVersion") or rv)
                continue
            m = _meta(obj)
            if m is None:
                continue
            rv = m[3]
            if kind in ("ADDED", "MODIFIED"):
                self._keep(self._names, m)
            elif kind == "DELETED":
                self._names.pop(m[0], None)
        return rv, events > 0 or time.monotonic() - started >= MIN_WATCH_S

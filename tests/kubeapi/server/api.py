"""`KubeAPIServer`: the fake server itself — start/stop (and restart on the same port with the
same store), fault injection, request counts, and control of open watches.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping

from tests.kubeapi.server.faults import Fault, RequestRecord
from tests.kubeapi.server.handler import APIHTTPServer
from tests.kubeapi.server.store import Store
from tests.kubeapi.server.watch import WatchConn


class KubeAPIServer:
    """The fake API server. `start()` binds and serves in a thread; `stop()` closes everything.

    `store` holds the objects (read it directly in assertions; write through it to set up state
    without HTTP), `counts` counts requests by (verb, resource), `requests` keeps the last 10,000
    requests (recorded just before the answer is written; status 0 = no answer), `inject()`
    adds faults.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, history_limit: int = 1000,
                 default_tolerations: bool = True, watch_timeout_s: float = 1800.0,
                 bookmark_interval_s: float = 60.0, priority_classes: Mapping[str, int] | None = None):
        self.host, self.port = host, port
        self.store = Store(history_limit=history_limit, default_tolerations=default_tolerations,
                           priority_classes=priority_classes)
        self.watch_timeout_s = watch_timeout_s
        self.bookmark_interval_s = bookmark_interval_s
        self.counts: Counter[tuple[str, str]] = Counter()
        self.requests: deque[RequestRecord] = deque(maxlen=10_000)
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._watches: set[WatchConn] = set()
        self.watches_started = 0  # watch streams established so far (monotonic)
        self._stopping = threading.Event()
        self._httpd: APIHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> KubeAPIServer:
        """Bind and serve. After `stop()`, starts again on the same port with the same store:
        an API server restart (clients see refused connections in between, then reconnect)."""
        if self._httpd is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        with self.store.cond:
            self.store.closed = False
        self._httpd = APIHTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-kube-apiserver:{self.port}", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        with self.store.cond:
            self.store.closed = True
            self.store.cond.notify_all()
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with self._lock:
                if not self._conns:
                    break
            time.sleep(0.01)
        self._httpd = None

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults and measurements ----------------------------------------------------------

    def inject(self, *, method: str | None = None, path: str | None = None, verb: str | None = None,
               resource: str | None = None, status: int | None = None, delay_s: float = 0.0,
               reset: bool = False, times: int | None = 1, retry_after_s: int | None = None,
               message: str = "injected fault", query: str | None = None) -> Fault:
        """The next `times` requests matching all given criteria fail with `status`, hang `delay_s`
        (then fail, or proceed when no status), or are reset. `query` is a regular expression
        searched in the decoded query string (one watch among several on the same resource, by its
        fieldSelector). Returns the Fault (see `.hits`)."""
        f = Fault(method, path, verb, resource, status, delay_s, reset, times, retry_after_s, message, query)
        with self._lock:
            self._faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str, verb: str, res: str, query: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(method, path, verb, res, query):
                    f.hits += 1
                    if f.exhausted:
                        self._faults.remove(f)
                    return f
        return None

    def _count(self, verb: str, res: str) -> None:
        with self._lock:
            self.counts[(verb, res)] += 1

    def _record(self, rec: RequestRecord) -> None:
        self.requests.append(rec)

    def count(self, verb: str | None = None, resource: str | None = None) -> int:
        """Requests received (faulted ones included), filtered by verb and/or resource."""
        with self._lock:
            return sum(n for (v, r), n in self.counts.items()
                       if (verb is None or v == verb) and (resource is None or r == resource))

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
        self.requests.clear()

    # ---- watches -------------------------------------------------------------------------

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(sock)
            else:
                self._conns.discard(sock)

    def _watch_opened(self, w: WatchConn) -> None:
        with self._lock:
            self._watches.add(w)
            self.watches_started += 1

    def _watch_closed(self, w: WatchConn) -> None:
        with self._lock:
            self._watches.discard(w)
        with self.store.cond:
            self.store.cond.notify_all()  # wake wait_for_watches()

    @property
    def open_watches(self) -> int:
        with self._lock:
            return len(self._watches)

    def wait_for_watches(self, n: int, timeout_s: float = 10.0, *, exactly: bool = False) -> bool:
        """Block until at least (or `exactly`) `n` watches are open, e.g. until the scheduler is ready."""
        deadline = time.monotonic() + timeout_s
        while (self.open_watches != n) if exactly else (self.open_watches < n):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """End every open watch: cleanly (terminating chunk, as at a server-side timeout) or
        abruptly (socket shut down mid-stream, as on a connection loss). Returns how many."""
        with self._lock:
            watches = list(self._watches)
        for w in watches:
            w.stop, w.abrupt = True, abrupt
            if abrupt:
                with contextlib.suppress(OSError):
                    w.sock.shutdown(socket.SHUT_RDWR)
        with self.store.cond:
            self.store.cond.notify_all()
        return len(watches)

    def expire_watches(self) -> int:
        """Every open watch receives an ERROR event with a 410 Expired Status and ends."""
        with self.store.cond:
            self.store.watch_epoch += 1
            self.store.cond.notify_all()
        return self.open_watches

    def compact(self, *, expire_open_watches: bool = False) -> int:
        """Forget the history: watching from any older resourceVersion answers 410. Returns the current rv."""
        rv = self.store.compact()
        if expire_open_watches:
            self.expire_watches()
        return rv

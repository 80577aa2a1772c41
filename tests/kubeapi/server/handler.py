"""The HTTP side: one request handler that routes, applies injected faults, records the request
and answers from the store (lists, gets, writes, pods/binding, discovery), or streams a watch.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.kubeapi.server.errors import ApiError, not_found, status_details
from tests.kubeapi.server.faults import Fault, RequestRecord
from tests.kubeapi.server.resources import RESOURCES, ResourceType
from tests.kubeapi.server.routes import Route, route, route_verb
from tests.kubeapi.server.selectors import Selector, getter, parse_field_selector, parse_label_selector
from tests.kubeapi.server.timefmt import dumps
from tests.kubeapi.server.watch import WatchConn, stream

if TYPE_CHECKING:
    from tests.kubeapi.server.api import KubeAPIServer


def _list_body(rt: ResourceType, raw_meta: str, raw_items: list[str]) -> str:
    return ('{"kind":"' + rt.kind + 'List","apiVersion":"' + rt.api_version + '","metadata":' + raw_meta
            + ',"items":[' + ",".join(raw_items) + "]}")



class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ksense-fake-apiserver/1"
    server: APIHTTPServer

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.api._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.api._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass  # one line per request would drown the test output (house rule 14)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ---- plumbing -------------------------------------------------------------------------

    def _send(self, code: int, body: bytes | str, headers: Iterable[tuple[str, str]] = (),
              content_type: str = "application/json") -> None:
        if isinstance(body, str):
            body = body.encode()
        lines = [f"HTTP/1.1 {code} {HTTPStatus(code).phrase}", f"Content-Type: {content_type}",
                 f"Content-Length: {len(body)}", "Cache-Control: no-cache, private"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        self._done(code)  # before the write: a client that got the answer finds the record
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _done(self, code: int) -> None:
        self._status = code
        r, url = self._req
        self.server.api._record(RequestRecord(
            self.command, url.path, url.query, self._verb, self._res, r.namespace if r else None,
            r.name if r else None, code, time.monotonic() - self._t0, self.headers.get("User-Agent") or "",
            self._t0))

    def _send_error(self, err: ApiError, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(err.code, dumps(err.status()), headers)

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        t0 = time.monotonic()
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._read_body()
        self._status = 0
        r = route(url.path)
        watch = method == "GET" and query.get("watch", "").lower() in ("1", "true")
        verb = route_verb(method, r, watch) if r and r.rt else method.lower()
        res = ""
        if r and r.rt:
            res = "bindings" if r.special == "bindings" else r.rt.name + (f"/{r.sub}" if r.sub else "")
        api._count(verb, res)
        self._req, self._verb, self._res, self._t0 = (r, url), verb, res, t0
        try:
            fault = api._take_fault(method, url.path, verb, res, unquote(url.query))
            if fault is not None and not self._apply_fault(fault):
                return
            if r is None:
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
            if "dryRun" in query:
                raise ApiError(400, "dryRun is not supported by the fake API server")
            if r.special:
                self._special(r, method, body)
            elif watch:
                self._watch(r, query)
            else:
                self._resource(r, method, verb, query, body)
        except ApiError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in the fake: answer 500 and show it, never hang the client
            traceback.print_exc()
            self.close_connection = True
            if not self._status:
                self._send_error(ApiError(500, f"fake API server bug: {exc!r}"))
        finally:
            if not self._status:  # reset, or the client went away before an answer
                self._done(0)

    def _apply_fault(self, fault: Fault) -> bool:
        """-> True when the request should then be served normally."""
        api = self.server.api
        if fault.delay_s and api._stopping.wait(fault.delay_s):
            self.close_connection = True
            return False
        if fault.reset:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return False
        if fault.status:
            headers = [("Retry-After", str(fault.retry_after_s))] if fault.retry_after_s is not None else []
            self._send_error(ApiError(fault.status, fault.message), headers)
            return False
        return True

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except ValueError as exc:
            raise ApiError(400, f"the body of the request was in an unknown format: {exc}") from exc

    def _special(self, r: Route, method: str, body: bytes) -> None:
        if r.special == "healthz":
            self._send(200, "ok", content_type="text/plain; charset=utf-8")
        elif r.special == "version":
            self._send(200, dumps({"major": "1", "minor": "33", "gitVersion": "v1.33.0-ksense-fake",
                                    "platform": "linux/amd64"}))
        elif r.special == "api":
            self._send(200, dumps({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}))
        elif r.special == "apis":
            groups = sorted({rt.group for rt in RESOURCES if rt.group})
            self._send(200, dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in groups]}))
        elif r.special == "bindings":
            if method != "POST":
                raise ApiError(405, f"{method} is not supported on bindings")
            b = self._json(body)
            self._bind(r.namespace or "", ((b or {}).get("metadata") or {}).get("name") or "", b)

    def _bind(self, namespace: str, name: str, b: Any) -> None:
        if not isinstance(b, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        meta = b.get("metadata") or {}
        if meta.get("name") != name:
            raise ApiError(400, "name in URL does not match name in Binding object")
        target = b.get("target") or {}
        if target.get("kind") not in (None, "", "Node"):
            raise ApiError(422, f'Binding "{name}" is invalid: target.kind: Invalid value: "{target.get("kind")}": '
                                'must be empty or Node', "Invalid", {"name": name, "kind": "Binding"})
        self.server.api.store.bind(namespace, name, target.get("name") or "", uid=meta.get("uid"),
                                   resource_version=meta.get("resourceVersion"), annotations=meta.get("annotations"))
        self._send(201, dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                "code": 201}))

    def _selector(self, r: Route, query: Mapping[str, str]) -> Selector:
        fields = parse_field_selector(query.get("fieldSelector", ""), r.rt.fields) if r.rt else ()
        labels = parse_label_selector(query.get("labelSelector", ""))
        if r.name is not None:  # a watch on one object
            fields = (*fields, (getter("metadata", "name"), True, r.name))
        return Selector(fields, labels, r.namespace)

    def _resource(self, r: Route, method: str, verb: str, query: Mapping[str, str], body: bytes) -> None:
        store = self.server.api.store
        rt = r.rt
        assert rt is not None
        if verb == "list":
            try:
                limit = int(query.get("limit") or 0)
            except ValueError as exc:
                raise ApiError(400, f"invalid limit: {exc}") from exc
            rv, items, token, remaining = store.list(rt, self._selector(r, query), limit=limit,
                                                     cont=query.get("continue", ""))
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if token:
                meta["continue"], meta["remainingItemCount"] = token, remaining
            self._send(200, _list_body(rt, dumps(meta), items))
        elif verb == "get":
            obj = store.get(rt, r.namespace, r.name or "")
            if obj is None:
                raise not_found(rt, r.name or "")
            self._send(200, dumps(obj))
        elif verb == "create" and r.sub == "binding":
            self._bind(r.namespace or "", r.name or "", self._json(body))
        elif verb == "create":
            if r.name is not None:
                raise ApiError(405, f"the server does not allow this method on the requested resource ({rt.plural})")
            self._send(201, store.create_raw(rt, self._json(body), r.namespace).raw)
        elif verb == "update":
            self._send(200, store.update_raw(rt, r.namespace, r.name or "", self._json(body), r.sub).raw)
        elif verb == "patch":
            ctype = self.headers.get("Content-Type") or "application/strategic-merge-patch+json"
            self._send(200, store.patch_raw(rt, r.namespace, r.name or "", self._json(body), ctype, r.sub).raw)
        elif verb == "delete":
            if r.sub:
                raise ApiError(405, f"DELETE is not supported on {rt.plural}/{r.sub}")
            opts = self._json(body)
            opts = opts if isinstance(opts, dict) else {}
            entry = store.delete_raw(rt, r.namespace, r.name or "", (opts.get("preconditions") or {}))
            if rt.delete_returns_object:
                self._send(200, entry.raw)
            else:
                d = {**status_details(rt, r.name or ""), "uid": entry.obj["metadata"]["uid"]}
                self._send(200, dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                        "details": d}))
        elif verb == "deletecollection":
            raws = store.delete_collection(rt, self._selector(r, query))
            self._send(200, _list_body(rt, "{}", raws))
        else:
            raise ApiError(405, f"{method} is not supported")

    # ---- watch ---------------------------------------------------------------------------

    def _write_chunk(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _watch(self, r: Route, query: Mapping[str, str]) -> None:
        api = self.server.api
        store = api.store
        rt = r.rt
        assert rt is not None
        sel = self._selector(r, query)
        rv_param = query.get("resourceVersion", "")
        try:
            since = int(rv_param) if rv_param not in ("", "0") else None
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else api.watch_timeout_s
        except ValueError as exc:
            raise ApiError(400, f"invalid watch parameter: {exc}") from exc
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        self.close_connection = True
        self._done(200)
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                         b"Cache-Control: no-cache, private\r\nConnection: close\r\n\r\n")
        conn = WatchConn(self.connection, store.watch_epoch)
        api._watch_opened(conn)
        try:
            if stream(api, rt, sel, since, timeout, bookmarks, conn, self._write_chunk):
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client went away, or drop_watches(abrupt=True) shut the socket
        finally:
            api._watch_closed(conn)


class APIHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], api: KubeAPIServer):
        self.api = api
        super().__init__(addr, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client hung up or stop() shut the socket: expected, not worth a traceback
        super().handle_error(request, client_address)

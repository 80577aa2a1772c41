"""Watch streams: events after a resourceVersion (or the current state), converted per
selector (an object that stops matching is sent as DELETED, as the watch cache does), bookmarks,
and `410 Expired` when the history no longer reaches back.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.kubeapi.server.errors import status_object
from tests.kubeapi.server.resources import ResourceType
from tests.kubeapi.server.selectors import Selector
from tests.kubeapi.server.store import WatchEvent
from tests.kubeapi.server.timefmt import dumps

if TYPE_CHECKING:
    from tests.kubeapi.server.api import KubeAPIServer


def event_line(etype: str, raw_object: str) -> str:
    return '{"type":"' + etype + '","object":' + raw_object + "}\n"



def peer_closed(sock: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class WatchConn:
    def __init__(self, sock: socket.socket, epoch: int):
        self.sock = sock
        self.epoch = epoch
        self.stop = False
        self.abrupt = False



def stream(api: KubeAPIServer, rt: ResourceType, sel: Selector, since: int | None, timeout: float,
           bookmarks: bool, conn: WatchConn, write_chunk: Callable[[str], None]) -> bool:
    """Send the watch's events through `write_chunk` until its deadline, a stop or a 410; False
    when it ended abruptly (no terminating chunk is to be written)."""
    store = api.store
    deadline = time.monotonic() + timeout
    next_bookmark = time.monotonic() + api.bookmark_interval_s
    if since is None:  # "start at most recent": synthetic ADDED for the current state
        cursor, entries = store.current(rt)
        lines = [event_line("ADDED", e.raw) for e in entries if sel.matches(e.obj)]
        if lines:
            write_chunk("".join(lines))
    else:
        cursor = since
    while True:
        with store.cond:
            while True:
                now = time.monotonic()
                if conn.stop or api._stopping.is_set() or conn.epoch != store.watch_epoch:
                    break
                if store.too_old(cursor) or store.events_after(cursor) or now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    break
                if peer_closed(conn.sock):
                    return False  # the client stopped watching: no need to wait for a write to fail
                store.cond.wait(min(deadline, next_bookmark if bookmarks else deadline, now + 0.25) - now)
            if conn.abrupt or api._stopping.is_set():
                return False
            if conn.stop:
                break
            if conn.epoch != store.watch_epoch or store.too_old(cursor):
                err = status_object(410, "Expired", f"too old resource version: {cursor} ({store._rv})")
                write_chunk(event_line("ERROR", dumps(err)))
                break
            events = store.events_after(cursor)
            latest = store._rv
        out = []
        for ev in events:
            line = convert(rt, sel, ev)
            if line:
                out.append(line)
        cursor = events[-1].rv if events else cursor
        if out:
            write_chunk("".join(out))
        now = time.monotonic()
        if bookmarks and (now >= next_bookmark or now >= deadline):
            cursor = max(cursor, latest)
            mark = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(cursor)}}
            write_chunk(event_line("BOOKMARK", dumps(mark)))
            next_bookmark = now + api.bookmark_interval_s
        if now >= deadline:
            break
    return True

def convert(rt: ResourceType, sel: Selector, ev: WatchEvent) -> str | None:
    if ev.resource != rt.name:
        return None
    if ev.type == "MODIFIED":
        now_in, was_in = sel.matches(ev.obj), ev.old is not None and sel.matches(ev.old)
        if now_in:
            return event_line("MODIFIED" if was_in else "ADDED", ev.raw)
        if was_in:
            return event_line("DELETED", ev.old_as_deleted())
        return None
    if sel.matches(ev.obj):
        return event_line(ev.type, ev.raw)
    return None

"""Where interval readings come from: ebpf, procfs or replay, behind one `Source` protocol."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

from exporter.core.model import Reading


class SourceUnavailable(RuntimeError):
    """The source cannot run here (not root, bcc missing, file unreadable); says why."""


class Source(Protocol):
    """An opened source. Construction happens in each module's `open(...)` factory, which
    raises SourceUnavailable with the reason; `readings` yields one Reading per interval until
    `stop` is set or the source ends (replay), paced by the source itself; `close` releases
    kernel and file resources and is idempotent."""

    name: str
    #: kernel_metrics.csv columns this source leaves empty, for the start-up message.
    missing_columns: tuple[str, ...]

    def readings(self, stop: threading.Event) -> Iterator[Reading]: ...

    def close(self) -> None: ...

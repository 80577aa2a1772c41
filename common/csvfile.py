"""A durable, size-rotated CSV file that never takes its writer down (docs/metrics.md#csv-files).

Why here: every ksense CSV is written through it, whichever component writes it, so the
guarantees below hold for all of them. Generic over its columns: the exporter writes
kernel_metrics.csv with it, the scorer fuzzy_monitor.csv and fuzzy_score.csv; `open_text`
reads a recording back (plain or gzip). What durable means here:

- whole lines only: a row is encoded first and handed to the kernel in one unbuffered write,
  so there is no user-space buffer that a crash could leave half-flushed; a partial last line
  (a kill during a write, a full disk) is cut off when the file is opened again;
- one header, first: an existing file is appended to only when it starts with exactly our
  header line; any other file is renamed aside, never appended to and never deleted;
- bounded: before a row would push the file past `max_bytes` the file is rotated by renames
  (path -> path.1 -> ... -> path.<keep>, the oldest dropped), each file with its own header;
- safe to open in a spreadsheet: the scorer's file holds client-chosen names, so every control
  and line-separator character becomes a space, a cell that would start a formula (`=`, `+`,
  `-`, `@` and is not a number) gets a leading `'`, and a cell longer than MAX_CELL_CHARS is cut;
- never through a symbolic link at the file's path (ELOOP: counted like any OSError);
- never fatal: an OSError (disk full, read-only file system, permission, a parent that is a
  file) is counted per reason, logged at most once a minute per reason, and the file is
  reopened on the next write; the failed row is lost, the process keeps going.

Rows are flushed per row (each is in the kernel when `write` returns) but not fsynced: a killed
process loses nothing it wrote, a power loss may lose the last seconds, and the repair at open
copes with both.

One thread writes (`write`, `close`); `stats` may be called from any thread (the scrape).

`QueuedCsvWriter` puts a sink on a thread of its own behind a small bounded queue, for a caller
that must never wait on the disk (the exporter's sampler: a write stuck on a hung disk would
otherwise stall every interval). A row that finds the queue full is dropped and counted under
the reason `queue_full` (or, with `drop_when_full=False`, for a replay whose every row must land,
the caller waits); nothing else changes, so the guarantees above still hold for every row that
is written.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import io
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TextIO

MIB = 1 << 20

_LOG = logging.getLogger(__name__)

# Values of the `reason` label of ksense_csv_write_errors_total: short and stable, because
# dashboards and alerts select on them.
REASON_ENOSPC = "enospc"
REASON_READ_ONLY = "read_only"
REASON_PERMISSION = "permission"
REASON_OSERROR = "oserror"
#: Every reason, so that each error counter exists (at 0) before its first error.
REASONS = (REASON_ENOSPC, REASON_READ_ONLY, REASON_PERMISSION, REASON_OSERROR)
#: A row QueuedCsvWriter dropped because the writer thread was this far behind.
REASON_QUEUE_FULL = "queue_full"

_REASON_BY_ERRNO = {
    errno.ENOSPC: REASON_ENOSPC,
    errno.EDQUOT: REASON_ENOSPC,
    errno.EROFS: REASON_READ_ONLY,
    errno.EACCES: REASON_PERMISSION,
    errno.EPERM: REASON_PERMISSION,
}

#: Longest cell written: a Kubernetes object name has at most 253 characters and a uid 36, so
#: only a hostile value is cut (ending in "…"); it cannot fill a file and rotate real rows out.
MAX_CELL_CHARS = 256
#: C0 and C1 controls (tab, CR, LF, vertical tab, NEL, …), DEL and the Unicode line/paragraph
#: separators: each would break "one row = one line" or hide text in a viewer.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: How a spreadsheet recognises a formula (CWE-1236, "CSV injection").
_FORMULA_LEAD = ("=", "+", "-", "@")

#: A failing disk fails every row (once a second); one log line per reason per minute is enough.
LOG_EVERY_S = 60.0

# Big enough to hold many rows, so finding the last newline at open is one read.
_TAIL_CHUNK = 64 * 1024


@dataclass(frozen=True)
class CsvStats:
    """Sink health for the metrics: rows that reached the file, failures per reason."""

    rows_written: int
    errors: Mapping[str, int]


class CsvSink:
    """Append rows of `columns` to `path`; see the module docstring for the guarantees.

    The file is opened lazily by the first `write` (and again after a failure), so building
    the sink never fails. `max_bytes` bounds each file except that a file holding only its
    header always takes one row, however long.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str],
        *,
        max_bytes: int = 64 * MIB,
        keep: int = 5,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = _LOG,
    ):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.path = Path(path)
        self.columns = tuple(columns)
        self.max_bytes = max_bytes
        self.keep = keep
        self._clock = clock
        self._log = log
        self._buf = io.StringIO()
        # QUOTE_MINIMAL is RFC 4180: quotes only cells with a comma, a quote or a line break.
        self._csv = csv.writer(self._buf, lineterminator="\n")
        self._header = self._encode(self.columns)
        self._file: io.FileIO | None = None
        self._size = 0
        self._closed = False
        self._failing = False
        self._last_logged: dict[str, float] = {}
        self._suppressed = dict.fromkeys(REASONS, 0)
        # Guards only the counters: the scrape thread must never wait on disk I/O.
        self._lock = threading.Lock()
        self._rows = 0
        self._errors = dict.fromkeys(REASONS, 0)

    # --- the writer thread --------------------------------------------------------------------
    def write(self, row: Sequence[object]) -> bool:
        """Append one row; True when it reached the file. I/O errors are counted, logged
        (rate-limited) and swallowed. None is written as an empty cell. A row of the wrong
        length, or a write after `close`, is a bug of the caller and raises ValueError."""
        if self._closed:
            raise ValueError(f"write to closed CSV sink {self.path}")
        if len(row) != len(self.columns):
            raise ValueError(f"{self.path}: row has {len(row)} cells, expected {len(self.columns)}")
        line = self._encode(row)
        try:
            if self._file is None:
                self._open()
            if self._size + len(line) > self.max_bytes and self._size > len(self._header):
                self._rotate()
            self._append(line)
        except OSError as exc:
            self._fail(exc)
            return False
        with self._lock:
            self._rows += 1
        if self._failing:
            self._failing = False
            self._log.info("event=csv_write_recovered path=%s", self.path)
        return True

    def close(self) -> None:
        """Close the file; idempotent. Nothing is buffered, so nothing can be lost here."""
        self._closed = True
        self._close_file()

    def __enter__(self) -> CsvSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- any thread ---------------------------------------------------------------------------
    def stats(self) -> CsvStats:
        with self._lock:
            return CsvStats(self._rows, MappingProxyType(dict(self._errors)))

    # --- internals ----------------------------------------------------------------------------
    def _encode(self, row: Sequence[object]) -> bytes:
        cells = ["" if c is None else safe_cell(str(c)) for c in row]
        self._buf.seek(0)
        self._buf.truncate()
        self._csv.writerow(cells)
        return self._buf.getvalue().encode()

    @staticmethod
    def _write_all(f: io.FileIO, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[f.write(view) :]

    def _append(self, line: bytes) -> None:
        try:
            self._write_all(self._file, line)
        except OSError:
            # A full disk takes what fits in its last page and then fails: undo that short
            # write at once (shrinking needs no space), so the file keeps whole lines and the
            # repair at the next open has nothing to cut or to log.
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._size)
            raise
        self._size += len(line)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self._adopt_existing()
        f = open(self.path, "ab", buffering=0, opener=_no_follow)  # noqa: SIM115 - kept open across writes
        try:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                self._write_all(f, self._header)
                size = len(self._header)
        except OSError:
            f.close()
            raise
        self._file, self._size = f, size

    def _adopt_existing(self) -> None:
        """Make an existing file safe to append to: ours -> cut a partial last line; a header
        torn by a crash -> empty it; anything else -> rename it aside."""
        with open(self.path, "r+b", opener=_no_follow) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(len(self._header))
            if head == self._header:
                end = _end_of_last_line(f, size)
                if end < size:
                    f.truncate(end)
                    self._log.warning("event=csv_partial_line_cut path=%s bytes=%d", self.path, size - end)
                return
            if size < len(self._header) and self._header.startswith(head):
                f.truncate(0)
                return
        self._rename_aside()

    def _rename_aside(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(self.path.stat().st_mtime))
        target = self.path.with_name(f"{self.path.name}.mismatch-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.mismatch-{stamp}-{n}")
            n += 1
        os.rename(self.path, target)
        self._log.warning("event=csv_renamed_aside reason=header_differs path=%s moved_to=%s", self.path, target)

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _rotate(self) -> None:
        self._close_file()
        for i in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._rotated(i), self._rotated(i + 1))
        os.replace(self.path, self._rotated(1))
        self._log.info("event=csv_rotated path=%s keep=%d", self.path, self.keep)
        self._open()

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            # An unbuffered file has nothing left to flush: a failing close loses nothing.
            with contextlib.suppress(OSError):
                f.close()

    def _fail(self, exc: OSError) -> None:
        reason = _REASON_BY_ERRNO.get(exc.errno, REASON_OSERROR)
        with self._lock:
            self._errors[reason] += 1
        self._failing = True
        # Reopen on the next write: that also cuts whatever part of this row reached the disk.
        self._close_file()
        now = self._clock()
        last = self._last_logged.get(reason)
        if last is not None and now - last < LOG_EVERY_S:
            self._suppressed[reason] += 1
            return
        self._log.warning(
            "event=csv_write_failed path=%s reason=%s error=%r suppressed=%d",
            self.path,
            reason,
            str(exc.strerror or exc),
            self._suppressed[reason],
        )
        self._last_logged[reason] = now
        self._suppressed[reason] = 0


class QueuedCsvWriter:
    """`sink.write` on a writer thread of its own; see the module docstring.

    `max_rows` bounds the queue: 60 rows is a minute of kernel_metrics.csv, long enough to ride
    out a slow disk, short enough that a hung one costs little memory. Nothing starts in the
    constructor: `start()` starts the thread, `close()` writes what is queued and closes the sink.
    `write` and `close` belong to one thread; `stats` may be called from any thread.
    """

    _STOP = object()

    def __init__(self, sink: CsvSink, *, max_rows: int = 60, drop_when_full: bool = True):
        self._sink = sink
        self._queue: queue.Queue = queue.Queue(max_rows)
        self._block = not drop_when_full
        self._lock = threading.Lock()
        self._dropped = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="csv-writer", daemon=True)
        self._thread.start()

    def write(self, row: Sequence[object]) -> bool:
        """Queue one row; when the queue is full, False (and counted) or wait (see the class)."""
        try:
            self._queue.put(row, block=self._block)
        except queue.Full:
            with self._lock:
                self._dropped += 1
            return False
        return True

    def stats(self) -> CsvStats:
        """The sink's stats plus the rows dropped here, under REASON_QUEUE_FULL."""
        stats = self._sink.stats()
        with self._lock:
            dropped = self._dropped
        return CsvStats(stats.rows_written, MappingProxyType({**stats.errors, REASON_QUEUE_FULL: dropped}))

    def close(self, timeout_s: float = 5.0) -> None:
        """Write the queued rows and close the sink. A writer still stuck in the disk after
        `timeout_s` is left behind (a daemon thread, it holds no process up) with the sink open."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(self._STOP, timeout=timeout_s)
            thread.join(timeout_s)
            if thread.is_alive():
                _LOG.warning("event=csv_writer_stuck path=%s queued=%d", self._sink.path, self._queue.qsize())
                return
        self._sink.close()

    def _run(self) -> None:
        while (row := self._queue.get()) is not self._STOP:
            self._sink.write(row)


def safe_cell(text: str) -> str:
    """`text` as a cell that is one line, bounded, and never a spreadsheet formula. A line break
    inside a cell would be legal RFC 4180 but would break "one row = one line", which the crash
    repair and every line-oriented reader rely on. Numbers (`-0.25`) are left alone."""
    text = _CONTROL.sub(" ", text)
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    if text.lstrip().startswith(_FORMULA_LEAD) and not _is_number(text):
        text = "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _no_follow(path: str, flags: int) -> int:
    """open()'s opener: never through a symbolic link. The directory may be writable by another
    user (the exporter, once it gave root up, shares /tmp/ksense with a scorer that may still be
    root): a link planted there must not make us append to the file it points at."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o666)


def _end_of_last_line(f: io.BufferedRandom, size: int) -> int:
    """Offset just past the last `\\n` of the file (0 if none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        f.seek(start)
        chunk = f.read(pos - start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def open_text(path: Path) -> TextIO:
    """A recording opened as text; `.gz` files are decompressed on the fly (the repository's
    recordings are stored so)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")

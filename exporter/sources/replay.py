"""The replay source: re-emit a recorded kernel_metrics.csv as if it were live (docs/design.md#sources).

For demos, tests and offline analysis. Only the raw columns are replayed; the derived ones
(baseline, friction, energy) are recomputed downstream by derive.step, so a recording made
by an older or broken collector is re-scored with today's maths. Each reading carries the
recorded Time, and `t` is that time in seconds: warm-up, Δt and dF/dt follow recorded time
whatever the speed, so speed 1 and speed 2000 give the same rows.
"""

from __future__ import annotations

import csv
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from common.core.csvrow import RowError, check_header, parse_row
from common.core.model import RawInterval
from common.csvfile import open_text
from common.names import SOURCE_REPLAY
from exporter.core.model import Reading
from exporter.sources import SourceUnavailable


class ReplayError(SourceUnavailable, ValueError):
    """A recording that cannot be replayed; the message names the file, line and column, and
    is meant to be shown to the user as is (no traceback)."""


def _wait(stop: threading.Event, seconds: float) -> bool:
    return stop.wait(seconds)


class ReplaySource:
    """An opened recording; make it with `open(...)`. `readings` is single-use: it reads the
    file once, from the row after the header, and closes it at the end."""

    name = SOURCE_REPLAY
    missing_columns: tuple[str, ...] = ()

    def __init__(
        self,
        path: Path,
        file: TextIO,
        *,
        speed: float,
        sleep: Callable[[threading.Event, float], bool],
        wall: Callable[[], float],
    ):
        self.path = path
        self._file = file
        # speed 0 or inf: as fast as the consumer takes the rows.
        self._paced = 0 < speed < math.inf
        self._speed = speed
        self._sleep = sleep
        self._wall = wall
        self._unterminated = False
        self._reader = csv.reader(self._lines())

    def _check_header(self) -> None:
        try:
            header = next(self._reader, None)
        except (csv.Error, UnicodeDecodeError) as e:
            raise self._error(1, f"unreadable ({e})") from None
        if header is None:
            raise self._error(1, "empty file, expected the kernel_metrics.csv header")
        try:
            check_header(header)
        except RowError as e:
            raise ReplayError(f"replay file {self.path}: {e}") from None

    def readings(self, stop: threading.Event) -> Iterator[Reading]:
        """One Reading per data row, paced by the recorded Δt / speed on a drift-free schedule
        (row i is due at the first row's wall time + Σ max(Δt, 0) / speed, so a slow
        consumer does not stretch the replay, and a recording whose clock stepped back
        does not stall it). Returns when `stop` is set or the file ends."""
        due = t_prev = None
        try:
            for raw in self._rows():
                if stop.is_set():
                    return
                if self._paced:
                    if due is None:
                        due = self._wall()
                    else:
                        due += max(raw.t - t_prev, 0.0) / self._speed
                        delay = due - self._wall()
                        if delay > 0 and self._sleep(stop, delay):
                            return
                t_prev = raw.t
                yield Reading(raw=raw)
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()

    def _error(self, line: int, problem: str) -> ReplayError:
        return ReplayError(f"replay file {self.path}: line {line}: {problem}")

    def _lines(self) -> Iterator[str]:
        # Tracks a last line without a line end: a recording cut off mid-write.
        for line in self._file:
            self._unterminated = not line.endswith(("\n", "\r"))
            yield line

    def _rows(self) -> Iterator[RawInterval]:
        reader = self._reader
        line = reader.line_num
        try:
            for fields in reader:
                line = reader.line_num
                if self._unterminated:
                    raise self._error(line, "truncated last line (no line end): the recording was cut off")
                raw, _recorded = parse_row(fields, line)
                yield raw
        except RowError as e:
            raise ReplayError(f"replay file {self.path}: {e}") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise self._error(line + 1, f"unreadable ({e})") from None



# Named like every source's factory (sources/<name>.open); shadows the builtin only here.
def open(
    path: str | Path,
    *,
    speed: float = 1.0,
    sleep: Callable[[threading.Event, float], bool] = _wait,
    wall: Callable[[], float] | None = None,
) -> ReplaySource:
    """Open a kernel_metrics.csv for replay and check its header now, so a wrong file fails
    before anything starts. `speed`: 1 = recorded cadence, N = N times faster, 0 or inf =
    no pacing. `sleep(stop, seconds)` waits and returns True when stop was set (default
    `stop.wait`); `wall` is the monotonic clock pacing is measured on (default
    time.monotonic). Raises SourceUnavailable (file missing or unreadable) or ReplayError."""
    if not speed >= 0:
        raise ValueError(f"replay speed must be >= 0 (0 = as fast as possible), got {speed!r}")
    path = Path(path)
    try:
        file = open_text(path)
    except OSError as e:
        raise SourceUnavailable(f"replay file {path}: {e.strerror or e}") from None
    source = ReplaySource(
        path, file, speed=speed, sleep=sleep, wall=wall if wall is not None else time.monotonic
    )
    try:
        source._check_header()
    except ReplayError:
        source.close()
        raise
    return source

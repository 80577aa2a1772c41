"""Persist the frozen baseline so a restart does not cost a new 10-minute warm-up (docs/design.md#baseline).

One JSON file under the state directory, replaced atomically (temp file + fsync + rename +
directory fsync), so a crash leaves the old file or the new one, never half of either. A file
that is unreadable, corrupt, made with other parameters or older than max_age_s is ignored
with one warning for the caller to log: losing a baseline costs a warm-up, refusing to start
would cost the node its metrics.

A baseline decides how the node is judged, so only one this process' uid wrote is trusted: the
directory and the file must be ours alone (exporter/statedir.py), nothing is written into a
directory that is not, and the content must have the shape and ranges a real one has
(durations are not negative, k is positive, Fcal is a distance).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from exporter import statedir
from exporter.core.baseline import FrozenBaseline, freeze
from exporter.core.derive import Calibration, DeriveParams
from exporter.core.features import FEATURES, D

FILE_NAME = "baseline.json"
FORMAT = "ksense-baseline"
FORMAT_VERSION = 1
#: A file stamped this far in the future is not trusted (a small NTP step back is fine).
_CLOCK_SKEW_S = 60.0
#: A real file is ~40 KiB (300 rows of 4 numbers, with μ, Σ and L); anything far larger is not one.
MAX_FILE_BYTES = 1 << 20


class _Invalid(Exception):
    """Why a saved file cannot be used; becomes the warning text."""


class BaselineStore:
    """Load at start, save on every calibration change (derive.calibration_changed).

    `params` (and the optional `context`, e.g. the source name and the interval) identify
    what produced a baseline; a file made with anything else is not restored. `now` is the
    wall clock the file's age is measured with (injected for tests).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        params: DeriveParams,
        *,
        context: Mapping[str, Any] | None = None,
        max_age_s: float = 86400.0,
        now: Callable[[], float] = time.time,
    ):
        self.path = Path(state_dir) / FILE_NAME
        self._identity = {"params": asdict(params), "context": dict(context or {})}
        self._params = params
        self._max_age_s = max_age_s
        self._now = now
        # created = when this baseline was frozen; re-saving it with k / Fcal keeps its age.
        self._baseline: FrozenBaseline | None = None
        self._created = math.nan

    def load(self) -> tuple[Calibration | None, str | None]:
        """(calibration, None) when a usable file exists; (None, warning) when a file exists
        but is ignored; (None, None) when there is none. Never raises."""
        us = os.geteuid()
        if not os.path.lexists(self.path.parent):
            return None, None
        if why := statedir.problem(self.path.parent, us=us):
            return None, f"ignoring saved baseline {self.path}: the state directory {why}"
        try:
            text = statedir.read_private(self.path, us=us, max_bytes=MAX_FILE_BYTES).decode("utf-8")
        except FileNotFoundError:
            return None, None
        except statedir.Untrusted as e:
            return None, f"ignoring saved baseline {self.path}: it is {e}"
        except (OSError, UnicodeDecodeError) as e:
            return None, f"ignoring saved baseline {self.path}: cannot read it ({e})"
        try:
            doc = json.loads(text)
            created, calibration = self._check(doc)
        except json.JSONDecodeError as e:
            return None, f"ignoring saved baseline {self.path}: not valid JSON ({e})"
        except _Invalid as e:
            return None, f"ignoring saved baseline {self.path}: {e}"
        self._baseline, self._created = calibration.baseline, created
        return calibration, None

    def save(self, calibration: Calibration) -> str | None:
        """Write the calibration atomically; returns a warning instead of raising on I/O
        errors (a full disk must not stop the exporter)."""
        now = self._now()
        if calibration.baseline is not self._baseline:
            self._baseline, self._created = calibration.baseline, now
        b = calibration.baseline
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created": self._created,
            "saved": now,
            **self._identity,
            "features": list(FEATURES),
            "X": b.X.tolist(),
            "mu": b.mu.tolist(),
            "cov": b.cov.tolist(),
            "reg": b.reg,
            "chol": None if b.chol is None else b.chol.tolist(),
            "k": calibration.k,
            "fcal": calibration.fcal,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=statedir.DIR_MODE)
        except OSError as e:
            return f"cannot save baseline to {self.path}: {e}"
        if why := statedir.problem(self.path.parent, us=os.geteuid()):
            return f"not saving the baseline to {self.path}: the state directory {why}"
        try:
            _write_atomically(self.path, json.dumps(doc, indent=1) + "\n")
        except OSError as e:
            return f"cannot save baseline to {self.path}: {e}"
        return None

    def _check(self, doc: Any) -> tuple[float, Calibration]:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise _Invalid("not a ksense baseline file")
        if doc.get("version") != FORMAT_VERSION:
            raise _Invalid(f"format version {doc.get('version')!r}, this exporter reads {FORMAT_VERSION}")
        created = doc.get("created")
        if not _is_number(created):
            raise _Invalid("no creation time")
        age = self._now() - created
        if age > self._max_age_s:
            raise _Invalid(f"{age:.0f} s old, older than the {self._max_age_s:.0f} s limit")
        if age < -_CLOCK_SKEW_S:
            raise _Invalid(f"created {-age:.0f} s in the future")
        for key in ("params", "context"):
            if doc.get(key) != self._identity[key]:
                raise _Invalid(f"made with other {key}: {doc.get(key)!r}, now {self._identity[key]!r}")
        X = doc.get("X")
        p = self._params
        if not (
            isinstance(X, list)
            and p.min_samples <= len(X) <= p.baseline_win
            and all(isinstance(r, list) and len(r) == D and all(_is_number(v) and v >= 0 for v in r) for r in X)
        ):
            raise _Invalid(
                f"X is not a list of {p.min_samples}..{p.baseline_win} rows of {D} finite durations (>= 0 ms)"
            )
        baseline = freeze(X, p.min_samples)
        # μ, Σ and L are saved for people reading the file; rebuilt from X they must agree,
        # or the file was edited or damaged.
        for key, value in (("mu", baseline.mu), ("cov", baseline.cov), ("chol", baseline.chol)):
            if not _same(doc.get(key), value):
                raise _Invalid(f"{key} does not match X")
        k, fcal = doc.get("k"), doc.get("fcal")
        if k is not None and not (_is_number(k) and k > 0):
            raise _Invalid(f"k is not a positive number: {k!r}")
        if fcal is not None and not (_is_number(fcal) and fcal >= 0):
            raise _Invalid(f"fcal is not a friction (a number >= 0): {fcal!r}")
        return float(created), Calibration(baseline=baseline, k=k, fcal=fcal)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _same(saved: Any, value: np.ndarray | None) -> bool:
    if value is None or saved is None:
        return value is None and saved is None
    try:
        arr = np.asarray(saved, dtype=float)
    except (TypeError, ValueError):
        return False
    return arr.shape == value.shape and bool(np.allclose(arr, value, rtol=1e-9, atol=0, equal_nan=True))


def _write_atomically(path: Path, text: str) -> None:
    """temp file in the same directory + fsync + rename + fsync of the directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

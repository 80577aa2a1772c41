"""One log line per event that matters, as key=value text or JSON (KSENSE_LOG_FORMAT)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(fmt: str = "text", level: int = logging.INFO) -> None:
    """Configure the root logger once, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def summary_wanted(environ: Mapping[str, str]) -> bool:
    """The live one-line summary: on a terminal by default; KSENSE_SUMMARY=1 / 0 forces it."""
    forced = environ.get("KSENSE_SUMMARY")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()

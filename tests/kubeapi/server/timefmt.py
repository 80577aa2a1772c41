"""Serialisation shared by the store and the HTTP handler: compact JSON and RFC 3339 stamps.
"""

from __future__ import annotations

import json
import time
from typing import Any


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

"""Where the scorer's inputs come from: Prometheus (the cluster default) or one local exporter
(the embedded single-machine default), behind one `InputSource` protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from scorer.core.model import Inputs


class InputSource(Protocol):
    """`fetch(now)` returns every node's inputs as of `now`; it never raises for a failing
    backend (errors are counted in Inputs.errors and the affected inputs are missing)."""

    name: str  # "prometheus" | "local"

    def fetch(self, now: datetime) -> Inputs: ...

"""Where the scorer's inputs come from: Prometheus (the cluster default) or one local exporter
(the embedded single-machine default), behind one `InputSource` protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from common.http_reason import UNREACHABLE
from scorer.core.model import Inputs


def shown(reason: str, peer: str) -> str:
    """The readable form of a source's short error reason (its counter label), shown per input
    (NodeInputs.why, /score, the CSV): `unreachable` -> `<peer> down` ("prometheus down",
    "exporter down"), any other label with spaces (`http_503` -> `http 503`)."""
    return f"{peer} down" if reason == UNREACHABLE else reason.replace("_", " ")


class InputSource(Protocol):
    """`fetch(now)` returns every node's inputs as of `now`; it never raises for a failing
    backend (errors are counted in Inputs.errors and the affected inputs are missing)."""

    name: str  # "prometheus" | "local"

    def fetch(self, now: datetime) -> Inputs: ...

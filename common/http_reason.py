"""One HTTP failure -> one short reason, the same in every component.

Why here: the scorer's two input sources (Prometheus, one exporter) and the scheduler's two
score sources each turned a failed request into a short, stable label (`timeout`,
`unreachable`, `http_503`, `bad_response`) for their error counters, their logs and the reasons
they show per node; three copies had begun to differ in which exception won. Dashboards and
alerts select on these values, so they are stated once, here.
"""

from __future__ import annotations

import requests

#: No complete answer within the deadline (connect or whole answer, common/deadline_http.py).
TIMEOUT = "timeout"
#: No answer at all: refused, reset, DNS, TLS.
UNREACHABLE = "unreachable"
#: An answer that is not what was asked for (not JSON, not the expected shape).
BAD_RESPONSE = "bad_response"


def status_reason(status: int) -> str:
    """The reason of an HTTP error status: `http_503`."""
    return f"http_{status}"


def failure_reason(exc: BaseException) -> str:
    """The reason of a failed request: what `requests` raised, or anything raised while reading
    the answer (ValueError, KeyError, TypeError: a bad response)."""
    if isinstance(exc, requests.JSONDecodeError):  # also a RequestException: check it first
        return BAD_RESPONSE
    if isinstance(exc, requests.Timeout):  # ConnectTimeout is also a ConnectionError
        return TIMEOUT
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return status_reason(exc.response.status_code)
    if isinstance(exc, requests.RequestException):
        return UNREACHABLE
    return BAD_RESPONSE

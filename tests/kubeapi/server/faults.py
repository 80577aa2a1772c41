"""Fault injection (fail, hang or reset the next N matching requests) and the record kept of
each request served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Fault:
    """Make matching requests fail (`status`), hang (`delay_s`, then proceed or fail) or reset."""

    method: str | None = None
    path: str | None = None  # regular expression searched in the URL path
    verb: str | None = None  # get, list, watch, create, update, patch, delete, deletecollection
    resource: str | None = None  # pods, pods/binding, pods/status, nodes, events, leases, ...
    status: int | None = None
    delay_s: float = 0.0
    reset: bool = False  # close the connection without answering
    times: int | None = 1  # None: until removed
    retry_after_s: int | None = None
    message: str = "injected fault"
    query: str | None = None  # regular expression searched in the decoded query, e.g. a fieldSelector
    hits: int = 0
    _re: re.Pattern | None = field(default=None, repr=False)

    def matches(self, method: str, path: str, verb: str, res: str, query: str = "") -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method.upper() != method:
            return False
        if self.verb and self.verb != verb:
            return False
        if self.resource and self.resource != res:
            return False
        if self.path:
            if self._re is None:
                self._re = re.compile(self.path)
            if not self._re.search(path):
                return False
        return not self.query or re.search(self.query, query) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    verb: str
    resource: str
    namespace: str | None
    name: str | None
    status: int
    duration_s: float
    user_agent: str = ""  # the caller (which scheduler replica sent a binding)
    received: float = 0.0  # monotonic time the request arrived: when the client sent it, give or take

"""Errors as the real API server answers them: `ApiError` carries a `kind: Status` body
(NotFound, AlreadyExists, Conflict, Invalid, …), and the helpers build the common ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.kubeapi.server.resources import ResourceType


class ApiError(Exception):
    """An error the server answers with a `kind: Status` body."""

    REASONS: Mapping[int, str] = {
        400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
        409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
        429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
    }

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }
    if details:
        body["details"] = details
    return body


def status_details(rt: ResourceType, name: str, kind: str | None = None) -> dict:
    d = {"name": name, "kind": kind or rt.plural}
    if rt.group:
        d["group"] = rt.group
    return d


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.qualified} "{name}" not found', "NotFound", status_details(rt, name))


def conflict(rt: ResourceType, name: str, why: str, qualified: str | None = None, kind: str | None = None) -> ApiError:
    what = qualified or rt.qualified
    return ApiError(409, f'Operation cannot be fulfilled on {what} "{name}": {why}', "Conflict",
                    status_details(rt, name, kind))


def invalid(rt: ResourceType, name: str, causes: str) -> ApiError:
    return ApiError(422, f'{rt.kind} "{name}" is invalid: {causes}', "Invalid", status_details(rt, name, rt.kind))


MODIFIED_MSG = "the object has been modified; please apply your changes to the latest version and try again"

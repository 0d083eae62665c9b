"""Error codes and domain errors (DESIGN.md §5): every API error is
``{"error": CODE, "data": {"message": ..., ...}}``.

``ERROR_CODES`` is the one list of codes: the error classes below, the app's error handlers
and the OpenAPI document all read it.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

#: Every code the API answers with and its HTTP status, in the order the OpenAPI document
#: lists them. Two codes may share a status (RATE_LIMITED and LIMIT_REACHED are both 429).
ERROR_CODES: dict[str, int] = {
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "RATE_LIMITED": 429,
    "LIMIT_REACHED": 429,
    "INTERNAL_ERROR": 500,
    "SERVICE_UNAVAILABLE": 503,
}


def code_for_status(status: int) -> str:
    """Return the code of a framework HTTP error (unknown route, wrong method, …) by status.

    Any 5xx is INTERNAL_ERROR; below that, the first code listed with the status, or
    BAD_REQUEST when none is.
    """
    if status >= 500:
        return "INTERNAL_ERROR"
    return next((code for code, listed in ERROR_CODES.items() if listed == status), "BAD_REQUEST")


def error_response(code: str, http_status: int, message: str, **data: Any) -> Response:
    """Build the JSON error response ``{"error": code, "data": {"message": ..., **data}}``."""
    response = jsonify({"error": code, "data": {"message": message, **data}})
    response.status_code = http_status
    return response


class ServiceError(Exception):
    """Base class: carries the API error code, HTTP status and extra ``data`` fields.

    A subclass names its ``code``; its ``status`` comes from ``ERROR_CODES``.
    """

    code = "INTERNAL_ERROR"
    status = ERROR_CODES[code]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code not in ERROR_CODES:
            raise TypeError(f"{cls.__name__}.code {cls.code!r} is not one of ERROR_CODES")
        cls.status = ERROR_CODES[cls.code]

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        self.headers: dict[str, str] = {}


class BadRequest(ServiceError):
    code = "BAD_REQUEST"


class UnsupportedMediaType(BadRequest):
    code = "UNSUPPORTED_MEDIA_TYPE"


class Forbidden(ServiceError):
    """The API key lacks the scope the route needs (``keys.SCOPES``)."""

    code = "FORBIDDEN"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class Conflict(ServiceError):
    code = "CONFLICT"


class PayloadTooLarge(ServiceError):
    code = "PAYLOAD_TOO_LARGE"


class LimitReached(ServiceError):
    code = "LIMIT_REACHED"


class ServiceUnavailable(ServiceError):
    code = "SERVICE_UNAVAILABLE"


class TransportUnavailable(Exception):
    """The transport (Redis) could not be reached; the DB still holds the job."""

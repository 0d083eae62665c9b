"""Exceptions: API errors carry the API's ``code``, HTTP status and message (DESIGN.md §5)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any


class DispatchedError(Exception):
    """Base class of every error this SDK raises."""


class APIConnectionError(DispatchedError):
    """The request did not get an HTTP answer (connection refused, timeout, TLS error)."""


class APIError(DispatchedError):
    """The API answered with an error: ``{"error": CODE, "data": {"message": ...}}``."""

    #: The code this class stands for (subclasses); an unknown code gets the base class.
    CODE: str | None = None

    def __init__(
        self,
        code: str,
        status: int,
        message: str,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.code = code
        self.status = status
        self.message = message
        self.data: dict[str, Any] = dict(data or {})
        self.headers: dict[str, str] = dict(headers or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.status, self.message, self.data, self.headers))


class BadRequest(APIError):
    CODE = "BAD_REQUEST"


class Unauthorized(APIError):
    CODE = "UNAUTHORIZED"


class Forbidden(APIError):
    CODE = "FORBIDDEN"


class NotFound(APIError):
    CODE = "NOT_FOUND"


class MethodNotAllowed(APIError):
    CODE = "METHOD_NOT_ALLOWED"


class Conflict(APIError):
    CODE = "CONFLICT"


class PayloadTooLarge(APIError):
    CODE = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(APIError):
    CODE = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(APIError):
    """429 RATE_LIMITED: ``retry_after`` is the server's Retry-After in seconds (or None)."""

    CODE = "RATE_LIMITED"

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class LimitReached(APIError):
    """429 LIMIT_REACHED: the team's monthly quota is spent (retrying will not help)."""

    CODE = "LIMIT_REACHED"


class InternalError(APIError):
    CODE = "INTERNAL_ERROR"


class ServiceUnavailable(APIError):
    CODE = "SERVICE_UNAVAILABLE"


class InvalidSignature(DispatchedError):
    """A webhook request does not verify; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


ERROR_CLASSES: dict[str, type[APIError]] = {
    cls.CODE: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        RateLimited,
        LimitReached,
        InternalError,
        ServiceUnavailable,
    )
    if cls.CODE
}

#: The code assumed when an error body is not the API's JSON shape (e.g. a proxy's 502 page).
STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


def error_for(
    status: int, body: Any, headers: Mapping[str, str] | None = None, text: str = ""
) -> APIError:
    """Build the exception of an error answer (the API's JSON shape, or anything else)."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        code = body["error"]
        message = str(data.get("message") or code)
    else:
        data = {}
        code = STATUS_CODES.get(status, f"HTTP_{status}")
        message = text.strip()[:200] or f"HTTP {status}"
    cls = ERROR_CLASSES.get(code, APIError)
    return cls(code, status, message, data, {k.lower(): v for k, v in (headers or {}).items()})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())

"""Domain errors raised by services; the API maps each to its JSON error (DESIGN.md §5)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base class: carries the API error code, HTTP status and extra ``data`` fields."""

    code = "INTERNAL_ERROR"
    status = 500

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        self.headers: dict[str, str] = {}


class BadRequest(ServiceError):
    code, status = "BAD_REQUEST", 400


class NotFound(ServiceError):
    code, status = "NOT_FOUND", 404


class Conflict(ServiceError):
    code, status = "CONFLICT", 409


class PayloadTooLarge(ServiceError):
    code, status = "PAYLOAD_TOO_LARGE", 413


class LimitReached(ServiceError):
    code, status = "LIMIT_REACHED", 429

"""Error responses: every API error is ``{"error": CODE, "data": {"message": ...}}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from flask_limiter.errors import RateLimitExceeded
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..errors import ServiceError
from ..extensions import db
from .auth import Unauthorized

logger = logging.getLogger(__name__)

CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def error_response(code: str, http_status: int, message: str, **data: Any) -> Response:
    response = jsonify({"error": code, "data": {"message": message, **data}})
    response.status_code = http_status
    return response


def register_errorhandlers(app: Flask) -> None:
    """Answer every error with the JSON error shape (HTML pages may override for their paths)."""

    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError) -> Response:
        response = error_response(exc.code, exc.status, exc.message, **exc.data)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(Unauthorized)
    def unauthorized(_: Unauthorized) -> Response:
        response = error_response("UNAUTHORIZED", 401, "Unauthorized")
        response.headers["WWW-Authenticate"] = 'Bearer realm="dispatched"'
        return response

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded) -> Response:
        # Flask-Limiter adds Retry-After and X-RateLimit-* in its after_request hook.
        return error_response(
            "RATE_LIMITED", 429, f"Rate limit exceeded: {exc.description} for your team"
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
        message = {
            404: f"No route {request.path!r}",
            405: f"Method {request.method} is not allowed on {request.path!r}",
            413: "Request body is too large",
        }.get(status, exc.description or exc.name)
        response = error_response(code, status, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        db.session.rollback()
        return error_response("INTERNAL_ERROR", 500, "Internal server error")

"""Error responses: every API error is ``{"error": CODE, "data": {"message": ...}}``."""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, Response, make_response, render_template, request
from flask_limiter.errors import RateLimitExceeded
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..errors import ERROR_CODES, ServiceError, code_for_status, error_response
from ..extensions import db, limiter
from .auth import Unauthorized

logger = logging.getLogger(__name__)

#: Blueprints whose errors are HTML pages; everything else answers JSON.
HTML_BLUEPRINTS = {"dashboard"}


def _html_error(status: int, title: str, message: str) -> Response | None:
    if request.blueprint not in HTML_BLUEPRINTS:
        return None
    response = make_response(
        render_template("error.html", status=status, title=title, message=message), status
    )
    return response


def _retry_message(exc: RateLimitExceeded) -> str:
    """Say which dashboard limit was hit and when to try again."""
    current = limiter.current_limit
    wait = max(1, math.ceil(current.reset_at - time.time())) if current else 60
    return f"Too many attempts: {exc.description} ({exc.limit.limit}). Try again in {wait} s."


def register_errorhandlers(app: Flask) -> None:
    """Answer every error with the JSON error shape (dashboard pages get an HTML page)."""

    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError) -> Response:
        html = _html_error(exc.status, exc.code.replace("_", " ").title(), exc.message)
        if html is not None:
            return html
        response = error_response(exc.code, exc.status, exc.message, **exc.data)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(Unauthorized)
    def unauthorized(_: Unauthorized) -> Response:
        response = error_response("UNAUTHORIZED", ERROR_CODES["UNAUTHORIZED"], "Unauthorized")
        response.headers["WWW-Authenticate"] = 'Bearer realm="dispatched"'
        return response

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded) -> Response:
        # Flask-Limiter adds Retry-After and X-RateLimit-* in its after_request hook.
        dashboard = request.blueprint in HTML_BLUEPRINTS  # the message costs a storage read
        html = _html_error(429, "Too many attempts", _retry_message(exc)) if dashboard else None
        if html is not None:
            return html
        return error_response(
            "RATE_LIMITED",
            ERROR_CODES["RATE_LIMITED"],
            f"Rate limit exceeded: {exc.description} for your team",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = code_for_status(status)
        message = {
            404: f"No route {request.path!r}",
            405: f"Method {request.method} is not allowed on {request.path!r}",
            413: "Request body is too large",
        }.get(status, exc.description or exc.name)
        html = _html_error(status, exc.name, exc.description or exc.name)
        if html is not None:
            return html
        response = error_response(code, status, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        # Framework-level, not a transaction decision (services own those): the request died
        # half-way, perhaps in a failed flush, and the error page's own queries (the dashboard
        # navigation) need a usable session. A teardown hook would run too late for that.
        db.session.rollback()
        html = _html_error(500, "Internal error", "Something went wrong on our side; it is logged.")
        if html is not None:
            return html
        return error_response(
            "INTERNAL_ERROR", ERROR_CODES["INTERNAL_ERROR"], "Internal server error"
        )

"""API-key authentication, key scopes, and the per-team rate limit of every authenticated
route."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from .. import keys, plans
from ..errors import Forbidden
from ..extensions import limiter
from . import bp

F = TypeVar("F", bound=Callable[..., Any])

#: Endpoints readable without a key (the API description itself).
PUBLIC_ENDPOINTS = {"api.openapi"}


class Unauthorized(Exception):
    """Missing, unknown or revoked key; always answered with the same 401 body."""


@bp.before_request
def require_api_key() -> None:
    """Resolve ``Authorization: Bearer <key>`` to a principal on ``g``, or answer 401."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    principal = keys.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if principal is None:
        raise Unauthorized()
    g.principal = principal
    g.team_id = principal.team_id


def _plan_rate_limit() -> str:
    return plans.get(g.principal.plan).rate_limit


#: One budget per team across all its keys and routes (key function: the team id on ``g``).
team_rate_limit = limiter.shared_limit(_plan_rate_limit, scope="api")


def require_scope(scope: str) -> Callable[[F], F]:
    """Refuse a key without ``scope`` with 403 FORBIDDEN, before the body is read (so a bad
    body from such a key is a 403, not a 400)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if not g.principal.allows(scope):
                raise Forbidden(
                    f"this route needs an API key with the {scope!r} scope; this key has "
                    f"{g.principal.scope!r}",
                    requiredScope=scope,
                )
            return view(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return decorator

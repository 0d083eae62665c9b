"""API-key authentication and the per-team rate limit of every authenticated route."""

from __future__ import annotations

from flask import g, request

from .. import keys, plans
from ..extensions import limiter
from . import bp

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

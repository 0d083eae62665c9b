"""Usage route: this month's jobs against the plan."""

from __future__ import annotations

from typing import Any

from flask import g

from .. import plans, usage
from . import bp
from .auth import team_rate_limit


@bp.get("/usage")
@team_rate_limit
def get_usage() -> dict[str, Any]:
    return usage.summary(g.principal.team_id, plans.get(g.principal.plan))

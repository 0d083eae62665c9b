"""Project routes: read the project, change its settings (admin keys), resume its endpoint."""

from __future__ import annotations

from typing import Any

from flask import g

from .. import keys, project_settings
from . import bp, serialize
from .auth import require_scope, team_rate_limit
from .jobs import json_object_body


@bp.get("/project")
@team_rate_limit
def get_project() -> dict[str, Any]:
    return serialize.project(*project_settings.view(g.principal.project_id))


@bp.patch("/project")
@team_rate_limit
@require_scope(keys.ADMIN)
def patch_project() -> dict[str, Any]:
    body = json_object_body()
    return serialize.project(*project_settings.update(g.principal.project_id, body))


@bp.post("/project/resume")
@team_rate_limit
@require_scope(keys.ADMIN)
def resume_project() -> dict[str, Any]:
    return serialize.project(*project_settings.resume(g.principal.project_id))

"""The paused-endpoint banner's Resume button (DESIGN.md §12)."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for
from flask_login import login_required

from .. import flow_settings
from . import bp
from .context import project_or_404
from .forms import ActionForm


@bp.post("/p/<int:project_id>/endpoint/resume")
@login_required
def resume_endpoint(project_id: int) -> Any:
    """Resume the project's paused endpoint, then go back to the page the banner was on."""
    project = project_or_404(project_id)
    if not ActionForm().validate_on_submit():
        flash("The form expired; try again.", "error")
    elif flow_settings.resume_endpoint(project.id):
        flash(
            "Deliveries resumed: held jobs are sent again, starting one at a time and doubling "
            "with each success.",
            "ok",
        )
    else:
        flash("The endpoint was not paused.", "ok")
    back = request.form.get("next", "")
    # Only a page of this project: never an open redirect.
    if not (back.startswith(f"/p/{project.id}/") and "//" not in back and "\\" not in back):
        back = url_for("dashboard.overview", project_id=project.id)
    return redirect(back)

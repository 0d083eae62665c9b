"""The team page: who has access; the owner invites (single-use links) and removes members."""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from .. import members, teams
from . import bp


def _require_owner() -> None:
    """Answer 403 unless the current user owns their team."""
    if current_user.role != teams.OWNER:
        abort(403, "Only the team's owner can invite or remove members.")


def _team_page(invite_link: str | None = None, status: int = 200) -> Any:
    return render_template(
        "dashboard/team.html",
        members=members.members_of(current_user.team_id),
        invites=members.pending_invites(current_user.team_id),
        is_owner=current_user.role == teams.OWNER,
        invite_link=invite_link,
        invite_days=members.INVITE_LIFETIME.days,
    ), status


@bp.get("/team")
@login_required
def team_page() -> Any:
    return _team_page()


@bp.post("/team/invites")
@login_required
def create_invite() -> Any:
    _require_owner()
    _, token = members.create_invite(current_user)
    link = current_app.config["PUBLIC_URL"].rstrip("/") + url_for(
        "dashboard.accept_invite", token=token
    )
    return _team_page(invite_link=link, status=201)


@bp.post("/team/invites/<int:invite_id>/revoke")
@login_required
def revoke_invite(invite_id: int) -> Any:
    _require_owner()
    members.revoke_invite(current_user.team_id, invite_id)
    flash("Invite withdrawn: its link no longer works.", "ok")
    return redirect(url_for("dashboard.team_page"))


@bp.post("/team/members/<int:member_id>/remove")
@login_required
def remove_member(member_id: int) -> Any:
    _require_owner()
    email = members.remove_member(current_user, member_id)
    flash(f"{email} removed: their sessions ended and they can no longer log in.", "ok")
    return redirect(url_for("dashboard.team_page"))

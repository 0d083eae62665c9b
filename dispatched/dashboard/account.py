"""The account page: change the password, see and end one's login sessions."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from .. import accounts
from ..errors import ServiceError
from . import bp, limits
from .forms import PasswordForm


def _account_page(form: PasswordForm, status: int = 200) -> Any:
    return render_template(
        "dashboard/account.html",
        form=form,
        sessions=accounts.sessions_of(current_user),
        current_session_id=accounts.current_session_id(current_user),
    ), status


@bp.get("/account")
@login_required
def account() -> Any:
    return _account_page(PasswordForm())


@bp.post("/account/password")
@login_required
@limits.password_change
def change_password() -> Any:
    form = PasswordForm()
    if form.validate_on_submit():
        try:
            ended = accounts.change_password(current_user, form.current.data, form.new.data)
        except ServiceError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Password changed. Other sessions logged out: {ended}.", "ok")
            return redirect(url_for("dashboard.account"))
    return _account_page(form, 400)


@bp.post("/account/sessions/revoke-others")
@login_required
def revoke_other_sessions() -> Any:
    ended = accounts.revoke_other_sessions(current_user)
    flash(f"Other sessions logged out: {ended}.", "ok")
    return redirect(url_for("dashboard.account"))


@bp.post("/account/sessions/<int:session_id>/revoke")
@login_required
def revoke_session(session_id: int) -> Any:
    accounts.revoke_session(current_user, session_id)
    flash("Session logged out.", "ok")
    return redirect(url_for("dashboard.account"))

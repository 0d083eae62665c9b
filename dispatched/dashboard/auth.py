"""Sign-up, login, logout and invite links (revocable sessions; argon2 password hashes)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import (
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user

from .. import accounts, members, teams
from ..errors import ServiceError
from ..extensions import login_manager
from ..models import User
from . import bp, limits
from .forms import InviteAcceptForm, LoginForm, SignupForm

#: One answer whether or not the email already had an account (no account enumeration).
SIGNUP_ANSWER = (
    "If {email} could be used, your team is ready and you are logged in. If it already has "
    "an account, log in with it, or ask your team's owner for an invite."
)
INVITE_ANSWER = (
    "If {email} could be used, you have joined {team} and are logged in. If it already has "
    "an account, log in with it, or accept the invite with another address."
)


@login_manager.user_loader
def load_user(token: str) -> User | None:
    """Return the user of a live login session (the cookies carry its token), or None."""
    found = accounts.user_for_token(token)
    return found[0] if found else None


def log_in(user: User) -> None:
    """Start a revocable session for ``user``, set the cookies and rotate the CSRF token."""
    if current_user.is_authenticated:  # switching accounts ends the previous login
        accounts.end_session(current_user.get_session_token())
    accounts.start_session(user, request.headers.get("User-Agent"))
    login_user(user, remember=True)
    field = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    session.pop(field, None)  # a CSRF token seen before the login is worthless after it
    g.pop(field, None)


def _safe_next(target: str | None) -> str | None:
    """Only follow same-site path-only ``next`` links (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return None  # browsers read "/\\evil" or "/\t/evil" as "//evil"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


@bp.route("/login", methods=["GET", "POST"])
@limits.login_per_address
@limits.login_per_email
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.home"))
    form = LoginForm()
    if form.validate_on_submit():
        user = teams.authenticate_user(form.email.data, form.password.data)
        if user is not None:
            log_in(user)
            return redirect(_safe_next(request.args.get("next")) or url_for("dashboard.home"))
        flash("Wrong email or password.", "error")
    status = 400 if form.errors or request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


@bp.route("/signup", methods=["GET", "POST"])
@limits.account_creation
def signup() -> Any:
    if not current_app.config["SIGNUP_ENABLED"]:
        abort(404)
    form = SignupForm()
    if form.validate_on_submit():
        try:
            user = teams.sign_up(form.email.data, form.password.data, form.team.data)
        except ServiceError as exc:
            flash(exc.message, "error")
        else:
            if user is not None:
                log_in(user)
            flash(SIGNUP_ANSWER.format(email=teams.valid_email(form.email.data)), "ok")
            return redirect(url_for("dashboard.home"))
    status = 400 if request.method == "POST" else 200
    return render_template("auth/signup.html", form=form), status


@bp.post("/logout")
@login_required
def logout() -> Any:
    accounts.end_session(current_user.get_session_token())
    logout_user()
    return redirect(url_for("dashboard.login"))


@bp.route("/invite/<token>", methods=["GET", "POST"])
@limits.account_creation
def accept_invite(token: str) -> Any:
    form = InviteAcceptForm()
    try:
        invite = members.invite_for_token(token)
        if form.validate_on_submit():
            user = members.accept_invite(token, form.email.data, form.password.data)
            if user is not None:
                log_in(user)
            email = teams.valid_email(form.email.data)
            flash(INVITE_ANSWER.format(email=email, team=invite.team.name), "ok")
            return redirect(url_for("dashboard.home"))
    except members.InviteUnusable as exc:
        page = render_template(
            "error.html", status=410, title="Invite link unusable", message=exc.message
        )
        return page, 410
    except ServiceError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "error")
    status = 400 if request.method == "POST" else 200
    return render_template("auth/invite.html", form=form, invite=invite), status

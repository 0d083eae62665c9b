"""Sign-up, login and logout (Flask-Login sessions; argon2 password hashes)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from .. import teams
from ..errors import ServiceError
from ..extensions import login_manager
from ..models import User
from . import bp
from .forms import LoginForm, SignupForm


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return teams.get_user(user_id)


def _safe_next(target: str | None) -> str | None:
    """Only follow same-site path-only ``next`` links (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return None  # browsers read "/\\evil" or "/\t/evil" as "//evil"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.home"))
    form = LoginForm()
    if form.validate_on_submit():
        user = teams.authenticate_user(form.email.data, form.password.data)
        if user is not None:
            login_user(user, remember=True)
            return redirect(_safe_next(request.args.get("next")) or url_for("dashboard.home"))
        flash("Wrong email or password.", "error")
    status = 400 if form.errors or request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


@bp.route("/signup", methods=["GET", "POST"])
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
            login_user(user, remember=True)
            flash("Welcome! Create an API key and set your webhook to get started.", "ok")
            return redirect(url_for("dashboard.home"))
    status = 400 if request.method == "POST" else 200
    return render_template("auth/signup.html", form=form), status


@bp.post("/logout")
@login_required
def logout() -> Any:
    logout_user()
    return redirect(url_for("dashboard.login"))

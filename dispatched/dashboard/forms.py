"""WTForms forms of the dashboard (CSRF-protected by Flask-WTF)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from ..keys import JOBS, SCOPE_DESCRIPTIONS, SCOPES
from ..teams import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH

#: A new password: the service checks the same bounds (``teams.check_new_password``).
NEW_PASSWORD = [DataRequired(), Length(min=PASSWORD_MIN_LENGTH, max=PASSWORD_MAX_LENGTH)]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class SignupForm(FlaskForm):
    team = StringField("Team name", validators=[DataRequired(), Length(max=120)])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=NEW_PASSWORD)


class InviteAcceptForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=NEW_PASSWORD)


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=200)])
    new = PasswordField("New password", validators=NEW_PASSWORD)
    confirm = PasswordField(
        "New password again",
        validators=[DataRequired(), EqualTo("new", "the new passwords differ")],
    )


class KeyForm(FlaskForm):
    label = StringField("Label", validators=[DataRequired(), Length(max=120)])
    scope = SelectField(
        "Scope",
        choices=[(scope, f"{scope}: {SCOPE_DESCRIPTIONS[scope]}") for scope in SCOPES],
        default=JOBS,
    )


class ProjectForm(FlaskForm):
    name = StringField("Project name", validators=[DataRequired(), Length(max=80)])


class WebhookForm(FlaskForm):
    url = StringField("Webhook URL", validators=[Optional(), Length(max=2048)])


class BearerForm(FlaskForm):
    send_bearer = BooleanField("Send Authorization: Bearer <bearer token>")


class FlowForm(FlaskForm):
    """Flow control; the values are checked by ``flow_settings`` (messages repeat the input)."""

    parallelism = StringField("Parallelism")
    rate = StringField("Rate per second")


class RescheduleForm(FlaskForm):
    when = StringField("New time (UTC)", validators=[Optional(), Length(max=64)])


class ActionForm(FlaskForm):
    """A bare form: buttons that only need the CSRF token."""


class ScheduleForm(FlaskForm):
    """A new schedule; the values are checked by ``schedules`` (messages name the field)."""

    name = StringField("Name", validators=[Optional(), Length(max=200)])
    cron = StringField("Cron", validators=[Length(max=120)], default="0 9 * * MON-FRI")
    timezone = StringField("Time zone", validators=[Length(max=64)], default="UTC")
    payload = TextAreaField("Payload (JSON object)", default="{}")
    max_retries = StringField("Max retries", validators=[Optional(), Length(max=10)])
    catch_up = SelectField(
        "Missed fires",
        choices=[("none", "skip them (none)"), ("latest", "make up the latest (latest)")],
        default="none",
    )

"""The signature doctor on the job page: paste what the receiver got, read why it refuses it."""

from __future__ import annotations

from typing import Any

from flask import render_template
from flask_login import login_required
from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length

from .. import jobs, signature_doctor
from ..extensions import htmx
from . import bp
from .context import project_or_404
from .jobs import _job_context


class DoctorForm(FlaskForm):
    headers = TextAreaField(
        "Headers", validators=[DataRequired(), Length(max=signature_doctor.MAX_HEADERS)]
    )
    body = TextAreaField("Body", validators=[DataRequired(), Length(max=signature_doctor.MAX_BODY)])


@bp.post("/p/<int:project_id>/jobs/<job_id>/doctor")
@login_required
def job_doctor(project_id: int, job_id: str) -> Any:
    project = project_or_404(project_id)
    job = jobs.get(project.id, job_id)
    form = DoctorForm()
    report = None
    if form.validate_on_submit():
        report = signature_doctor.diagnose_pasted(project, job, form.headers.data, form.body.data)
    context = {"job": job, "doctor_form": form, "report": report}
    if htmx:  # htmx swaps no 4xx: the form shows its own errors
        return render_template("dashboard/_doctor.html", **context)
    page = render_template("dashboard/job.html", **{**_job_context(project.id, job), **context})
    return page, 200 if report else 400

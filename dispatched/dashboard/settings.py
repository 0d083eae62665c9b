"""API keys and webhook settings of a project."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_login import login_required

from .. import echo_store, flow_settings, keys, test_events, webhooks
from ..errors import NotFound, ServiceError
from ..extensions import htmx
from . import bp
from .context import project_or_404
from .forms import ActionForm, BearerForm, FlowForm, KeyForm, WebhookForm

ROTATED_BEARER = (
    "Bearer token replaced: deliveries carry the new one from now on and the old one is no "
    "longer sent. Update your receiver; deliveries it refuses meanwhile are retried."
)


@bp.get("/p/<int:project_id>/keys")
@login_required
def keys_page(project_id: int) -> Any:
    project = project_or_404(project_id)
    return render_template(
        "dashboard/keys.html",
        keys=keys.list_keys(project.id),
        form=KeyForm(),
        action_form=ActionForm(),
        new_token=None,
    )


@bp.post("/p/<int:project_id>/keys")
@login_required
def create_key(project_id: int) -> Any:
    project = project_or_404(project_id)
    form = KeyForm()
    new_token = None
    if form.validate_on_submit():
        _, new_token = keys.issue_key(project, form.label.data, form.scope.data)
    else:
        flash(
            "Give the key a label (up to 120 characters) and a scope "
            f"({' or '.join(keys.SCOPES)}).",
            "error",
        )
    status = 201 if new_token else 400
    return render_template(
        "dashboard/keys.html",
        keys=keys.list_keys(project.id),
        form=KeyForm(formdata=None),
        action_form=ActionForm(),
        new_token=new_token,
    ), status


@bp.post("/p/<int:project_id>/keys/<int:key_id>/revoke")
@login_required
def revoke_key(project_id: int, key_id: int) -> Any:
    project = project_or_404(project_id)
    revoked = keys.revoke(key_id, [project.id])
    if not revoked and key_id not in {key.id for key in keys.list_keys(project.id)}:
        raise NotFound(f"API key {key_id} not found")
    flash("Key revoked: requests with it now get 401.", "ok")
    if htmx:
        return render_template(
            "dashboard/_keys_table.html", keys=keys.list_keys(project.id), action_form=ActionForm()
        )
    return redirect(url_for("dashboard.keys_page", project_id=project.id))


def _flow_form(flow: flow_settings.FlowStatus) -> FlowForm:
    """The flow-control form showing what the project chose (blank = the default)."""
    return FlowForm(
        formdata=None,
        parallelism=str(flow.parallelism) if flow.parallelism_is_set else "",
        rate=format(flow.rate, ".15g") if flow.rate is not None else "",
    )


def _webhook_page(project: Any, status: int = 200, **extra: Any) -> Any:
    flow = flow_settings.flow_status(project)
    context = {
        "form": WebhookForm(formdata=None, url=project.webhook_url),
        "bearer_form": BearerForm(formdata=None, send_bearer=project.send_bearer),
        "flow": flow,
        "flow_form": _flow_form(flow),
        "flow_error": None,
        "action_form": ActionForm(),
        "echo_deliveries": echo_store.shown_for(project),
        "test_event": None,
        "test_error": None,
        "secret": None,
        "bearer_token": None,
        **extra,
    }
    return render_template("dashboard/webhook.html", **context), status


@bp.get("/p/<int:project_id>/webhook")
@login_required
def webhook(project_id: int) -> Any:
    project = project_or_404(project_id)
    event_id = request.args.get("test")
    if not event_id:
        return _webhook_page(project)
    event = test_events.get(project.id, event_id)
    expired = None if event else "That test event's answer has expired; send another."
    return _webhook_page(project, test_event=event, test_error=expired)


@bp.post("/p/<int:project_id>/webhook")
@login_required
def save_webhook(project_id: int) -> Any:
    project = project_or_404(project_id)
    form = WebhookForm()
    if not form.validate_on_submit():
        flash("The form expired or is invalid; try again.", "error")
        return _webhook_page(project, 400)
    try:
        webhooks.set_url(project, form.url.data)
    except ServiceError as exc:
        flash(exc.message, "error")
        return _webhook_page(project, 400)
    flash("Webhook URL saved." if project.webhook_url else "Webhook URL cleared.", "ok")
    return redirect(url_for("dashboard.webhook", project_id=project.id))


@bp.post("/p/<int:project_id>/webhook/flow")
@login_required
def save_flow(project_id: int) -> Any:
    project = project_or_404(project_id)
    form = FlowForm()
    if not form.validate_on_submit():
        flash("The form expired or is invalid; try again.", "error")
        return _webhook_page(project, 400)
    try:
        flow_settings.set_from_form(project, form.parallelism.data or "", form.rate.data or "")
    except ServiceError as exc:
        return _webhook_page(project, 400, flow_form=form, flow_error=exc.message)
    flash("Flow control saved.", "ok")
    return redirect(url_for("dashboard.webhook", project_id=project.id, _anchor="flow"))


@bp.post("/p/<int:project_id>/webhook/test")
@login_required
def test_webhook(project_id: int) -> Any:
    """Queue a test event; the answer comes later (htmx polls ``test_event_status``)."""
    project = project_or_404(project_id)
    try:
        event = test_events.start(project)
    except ServiceError as exc:
        if htmx:
            page = render_template("dashboard/_test_result.html", test_error=exc.message)
        else:
            page, _ = _webhook_page(project, test_error=exc.message)
        return page, exc.status, exc.headers
    if htmx:
        return render_template("dashboard/_test_result.html", test_event=event), 202
    return redirect(
        url_for("dashboard.webhook", project_id=project.id, test=event.id, _anchor="test-result")
    )


@bp.get("/p/<int:project_id>/webhook/test/<event_id>")
@login_required
def test_event_status(project_id: int, event_id: str) -> Any:
    """The test event's state: polled every second until the receiver's answer is in."""
    project = project_or_404(project_id)
    event = test_events.get(project.id, event_id)
    if event is None:
        raise NotFound(f"test event {event_id!r} not found (its answer is kept 10 minutes)")
    return render_template("dashboard/_test_result.html", test_event=event)


@bp.post("/p/<int:project_id>/webhook/secret")
@login_required
def reveal_secret(project_id: int) -> Any:
    project = project_or_404(project_id)
    if htmx:
        return render_template("dashboard/_secret.html", secret=project.webhook_secret)
    return _webhook_page(project, secret=project.webhook_secret)


@bp.post("/p/<int:project_id>/webhook/rotate")
@login_required
def rotate_secret(project_id: int) -> Any:
    project = project_or_404(project_id)
    secret = webhooks.rotate_secret(project)
    flash("Secret rotated. The previous secret keeps working for 24 hours.", "ok")
    if htmx:
        return render_template("dashboard/_secret.html", secret=secret, rotated=True)
    return _webhook_page(project, secret=secret)


@bp.post("/p/<int:project_id>/webhook/bearer")
@login_required
def set_bearer(project_id: int) -> Any:
    project = project_or_404(project_id)
    form = BearerForm()
    if form.validate_on_submit():
        webhooks.set_bearer(project, bool(form.send_bearer.data))
        flash("Bearer header " + ("on." if project.send_bearer else "off."), "ok")
    return redirect(url_for("dashboard.webhook", project_id=project.id))


@bp.post("/p/<int:project_id>/webhook/bearer-token")
@login_required
def reveal_bearer_token(project_id: int) -> Any:
    project = project_or_404(project_id)
    token = project.webhook_bearer_token
    if htmx:
        return render_template("dashboard/_bearer_token.html", bearer_token=token)
    return _webhook_page(project, bearer_token=token)


@bp.post("/p/<int:project_id>/webhook/bearer-token/rotate")
@login_required
def rotate_bearer_token(project_id: int) -> Any:
    project = project_or_404(project_id)
    token = webhooks.rotate_bearer_token(project)
    if htmx:
        return render_template("dashboard/_bearer_token.html", bearer_token=token, rotated=True)
    flash(ROTATED_BEARER, "ok")
    return _webhook_page(project, bearer_token=token)

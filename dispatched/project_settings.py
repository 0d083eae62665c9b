"""The project as the API shows and changes it (DESIGN.md §5: ``GET``/``PATCH /api/project``,
``POST /api/project/resume``).

``PATCH`` is a JSON merge patch of the two settings a key may change: ``webhookUrl`` (``null``
clears it) and ``flowControl`` (``{parallelism, ratePerSecond}``, merged; ``null`` resets a
field, or the whole object, to the plan's default). Every other field is refused with 400 and
nothing is saved: unknown ones, and the read-only ones ``GET`` shows. Both settings are checked
before either is saved. The rules themselves live where the dashboard and the CLI use them too:
``webhooks.validate_url`` and ``flow.validate``.
"""

from __future__ import annotations

import logging
from typing import Any

from . import flow, flow_settings, plans, webhooks
from .errors import BadRequest, NotFound
from .extensions import db
from .flow_settings import KEEP, EndpointState, FlowStatus
from .models import Project

logger = logging.getLogger(__name__)

#: What ``PATCH /api/project`` may change, and what ``GET`` shows that it may not.
EDITABLE = ("webhookUrl", "flowControl")
READ_ONLY = ("projectId", "name", "endpoint")
FLOW_EDITABLE = ("parallelism", "ratePerSecond")
FLOW_READ_ONLY = ("effectiveParallelism",)


def view(project_id: int) -> tuple[Project, FlowStatus, EndpointState]:
    """The project, its flow control in force and its endpoint's state."""
    project = db.session.get(Project, project_id)
    if project is None:  # the key's project is gone (deleted in between)
        raise NotFound(f"project {project_id} does not exist")
    return project, flow_settings.flow_status(project), flow_settings.endpoint_state(project_id)


def update(project_id: int, body: dict[str, Any]) -> tuple[Project, FlowStatus, EndpointState]:
    """Apply a ``PATCH /api/project`` body; raise BadRequest (nothing saved) if any of it is
    invalid. Returns the project's new view."""
    _check_fields(body, EDITABLE, READ_ONLY, "PATCH /api/project")
    project, _, _ = view(project_id)
    parallelism: object = KEEP
    rate: object = KEEP
    if "flowControl" in body:
        parallelism, rate = _parse_flow(body["flowControl"])
        flow.validate(
            None if parallelism is KEEP else parallelism,
            None if rate is KEEP else rate,
            plans.get(project.team.plan),
        )
    if "webhookUrl" in body:
        url = body["webhookUrl"]
        if url is not None and (not isinstance(url, str) or not url.strip()):
            raise BadRequest(
                f"webhookUrl must be an http(s) URL, or null to clear it; got {url!r}",
                field="webhookUrl",
            )
        webhooks.set_url(project, url)
    if parallelism is not KEEP or rate is not KEEP:
        flow_settings.set_flow_control(project, parallelism, rate)
    logger.info("project %s settings changed through the API: %s", project_id, sorted(body))
    return view(project_id)


def resume(project_id: int) -> tuple[Project, FlowStatus, EndpointState]:
    """Resume the project's endpoint (a no-op when it is active); return the project's view."""
    flow_settings.resume_endpoint(project_id)
    return view(project_id)


def _parse_flow(value: object) -> tuple[object, object]:
    """``flowControl`` of a PATCH: (parallelism, rate), each KEEP when absent, None to reset."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise BadRequest(
            f"flowControl must be an object {{parallelism, ratePerSecond}} or null, got {value!r}",
            field="flowControl",
        )
    _check_fields(value, FLOW_EDITABLE, FLOW_READ_ONLY, "flowControl")
    return value.get("parallelism", KEEP), value.get("ratePerSecond", KEEP)


def _check_fields(
    body: dict[str, Any], editable: tuple[str, ...], read_only: tuple[str, ...], where: str
) -> None:
    for name in body:
        if name in read_only:
            raise BadRequest(f"{name} is read-only; {where} takes {', '.join(editable)}")
        if name not in editable:
            raise BadRequest(f"unknown field {name[:50]!r}; {where} takes {', '.join(editable)}")

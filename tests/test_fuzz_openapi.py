"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis).

Valid and invalid requests generated from ``/api/openapi.json`` must never get a 5xx, and
every response must match the document (status code, content type, schema).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from dispatched import keys
from dispatched.api.openapi import PATHS
from dispatched.extensions import db
from dispatched.models import Project

CASES = [
    (mode, method.upper(), path)
    for path, ops in PATHS.items()
    for method, op in ops.items()
    if method != "parameters"
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Negative cases need an input to break: a path, query parameter, header or body.
    if mode == GenerationMode.POSITIVE
    or "parameters" in ops
    or "parameters" in op
    or "requestBody" in op
]


@pytest.mark.parametrize(("mode", "method", "path"), CASES)
def test_api_conforms_to_its_openapi_document(app, client, make_team, method, path, mode):
    team = make_team("unlimited")
    # An admin-scope key, so the project's settings are fuzzed too (a jobs key gets 403 there,
    # tested in test_project_api.py).
    with app.app_context():
        _, team.token = keys.issue_key(db.session.get(Project, team.project_id), "fuzz", keys.ADMIN)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for body in [{"payload": {}}, {"payload": {"a": 1}, "scheduleFor": later}]:
        assert client.post("/api/jobs/dispatch", json=body, headers=team.headers).status_code == 201
    schedule = {"cron": "*/5 * * * *", "timezone": "Europe/Berlin", "payload": {}}
    assert client.post("/api/schedules", json=schedule, headers=team.headers).status_code == 201
    spec = client.get("/api/openapi.json").json
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    assert schema.raw_schema == spec
    operation = schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case):
        # Schema-valid is not always acceptable: a time more than 365 days ahead or a payload
        # over the plan's size are 400/413 by rule, which JSON Schema cannot express. So the
        # "positive data must be accepted" check is left out; every other check applies.
        case.call_and_validate(headers=team.headers, excluded_checks=[positive_data_acceptance])

    check()

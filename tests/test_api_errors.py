"""Validation rules of DESIGN.md §5, auth, tenancy and JSON errors for every failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatched.extensions import db

UNAUTHORIZED = {"error": "UNAUTHORIZED", "data": {"message": "Unauthorized"}}


def post(client, team, body, **kwargs):
    return client.post("/api/jobs/dispatch", json=body, headers=team.headers, **kwargs)


def assert_error(response, status: int, code: str, mentions: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.json
    assert set(body) == {"error", "data"} and body["error"] == code
    assert isinstance(body["data"]["message"], str) and body["data"]["message"]
    if mentions:
        assert mentions in body["data"]["message"]


def job_count(app) -> int:
    from dispatched.models import Job

    with app.app_context():
        return db.session.query(Job).count()


# --- body and payload ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "payload is required"),
        ({"payload": None}, "payload is required"),
        ({"payload": "text"}, "payload must be a JSON object, got str"),
        ({"payload": [1, 2]}, "payload must be a JSON object, got list"),
        ({"payload": 5}, "payload must be a JSON object, got int"),
    ],
)
def test_payload_must_be_an_object(app, client, team, body, mentions):
    assert_error(post(client, team, body), 400, "BAD_REQUEST", mentions)
    assert job_count(app) == 0


@pytest.mark.parametrize("body", [[{"payload": {}}], "payload", 1, None, True])
def test_body_must_be_a_json_object(client, team, body):
    r = client.post(
        "/api/jobs/dispatch",
        data=__import__("json").dumps(body),
        headers={**team.headers, "Content-Type": "application/json"},
    )
    assert_error(r, 400, "BAD_REQUEST", "request body must be a JSON object")


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b'{"payload": {"x": NaN}}',
        b'{"payload": {"x": 1e999}}',
        b'{"payload": {"x": "\\ud800"}}',
        b"\xff\xfe{}",
        b"[" * 100_000,
    ],
)
def test_malformed_json_is_400(app, client, team, raw):
    r = client.post(
        "/api/jobs/dispatch",
        data=raw,
        headers={**team.headers, "Content-Type": "application/json"},
    )
    assert_error(r, 400, "BAD_REQUEST")
    assert job_count(app) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(client, team, content_type):
    headers = dict(team.headers)
    if content_type:
        headers["Content-Type"] = content_type
    r = client.post("/api/jobs/dispatch", data=b'{"payload": {}}', headers=headers)
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")


def test_json_with_charset_is_accepted(client, team):
    r = client.post(
        "/api/jobs/dispatch",
        data=b'{"payload": {}}',
        headers={**team.headers, "Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201


def test_payload_over_plan_size_is_413(app, client, make_team):
    free, scale = make_team("free"), make_team("scale")
    exactly = {"k": "x" * (10 * 1024 - len('{"k":""}'))}
    assert post(client, free, {"payload": exactly}).status_code == 201
    over = {"k": "x" * (10 * 1024)}
    r = post(client, free, {"payload": over})
    assert_error(r, 413, "PAYLOAD_TOO_LARGE", "the free plan allows 10240")
    assert r.json["data"]["limit"] == 10240
    assert post(client, scale, {"payload": over}).status_code == 201  # scale allows 64 KB
    assert job_count(app) == 2


def test_request_body_over_hard_cap_is_413_json(client, team):
    r = client.post(
        "/api/jobs/dispatch",
        data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={**team.headers, "Content-Type": "application/json"},
    )
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")


# --- scheduleFor ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "tomorrow",
        "2026-13-01T00:00:00Z",
        "2026-01-01",
        "",
        12345,
        True,
        {"at": 1},
        "9999-12-31T23:59:59-23:59",
        "2026-01-01T00:00:00+25:00",
    ],
)
def test_bad_schedule_for_is_400(app, client, team, value):
    r = post(client, team, {"payload": {}, "scheduleFor": value})
    assert_error(r, 400, "BAD_REQUEST", "scheduleFor")
    assert job_count(app) == 0


def test_schedule_for_more_than_365_days_ahead_is_400(client, team):
    too_far = (datetime.now(UTC) + timedelta(days=366)).isoformat()
    assert_error(
        post(client, team, {"payload": {}, "scheduleFor": too_far}),
        400,
        "BAD_REQUEST",
        "more than 365 days",
    )
    fine = (datetime.now(UTC) + timedelta(days=364)).isoformat()
    assert post(client, team, {"payload": {}, "scheduleFor": fine}).status_code == 201


def test_past_and_now_dispatch_immediately(client, team, pull_pass):
    for value in ["2001-01-01T00:00:00Z", datetime.now(UTC).isoformat(), None]:
        r = post(client, team, {"payload": {}, "scheduleFor": value})
        assert r.status_code == 201
        [delivery] = pull_pass()  # a worker pulls it at once
        assert delivery.job_id == r.json["jobId"]
        job = client.get(f"/api/jobs/{r.json['jobId']}", headers=team.headers).json
        assert job["status"] == "STARTED"


def test_both_schedule_fields_is_400(client, team):
    r = post(client, team, {"payload": {}, "scheduleFor": None, "scheduledFor": None})
    assert_error(r, 400, "BAD_REQUEST", "not both")


# --- maxRetries ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, 1.5, 2.0, "3", -1, [3], {"n": 3}])
def test_bad_max_retries_is_400(app, client, team, value):
    r = post(client, team, {"payload": {}, "maxRetries": value})
    assert_error(r, 400, "BAD_REQUEST", "maxRetries")
    assert job_count(app) == 0


# --- Idempotency-Key -----------------------------------------------------------------------


def test_idempotency_key_too_long_is_400(client, team):
    r = client.post(
        "/api/jobs/dispatch",
        json={"payload": {}},
        headers={**team.headers, "Idempotency-Key": "k" * 256},
    )
    assert_error(r, 400, "BAD_REQUEST", "Idempotency-Key")
    ok = client.post(
        "/api/jobs/dispatch",
        json={"payload": {}},
        headers={**team.headers, "Idempotency-Key": "k" * 255},
    )
    assert ok.status_code == 201


# --- PATCH and list parameters -------------------------------------------------------------


def test_patch_validation(client, team):
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = post(client, team, {"payload": {}, "scheduleFor": later}).json["jobId"]
    url = f"/api/jobs/{job_id}"
    assert_error(
        client.patch(url, json={}, headers=team.headers),
        400,
        "BAD_REQUEST",
        "scheduledFor is required",
    )
    assert_error(
        client.patch(url, json={"scheduledFor": "soon"}, headers=team.headers),
        400,
        "BAD_REQUEST",
        "scheduledFor",
    )
    assert_error(client.patch(url, json=[1], headers=team.headers), 400, "BAD_REQUEST")
    assert_error(client.patch(url, data="x", headers=team.headers), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert client.get(url, headers=team.headers).json["status"] == "QUEUED"


@pytest.mark.parametrize(
    ("query", "mentions"),
    [
        ("status=DONE", "status must be one of"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=²", "limit"),
        ("cursor=!!!", "cursor"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
    ],
)
def test_bad_list_parameters_are_400(client, team, query, mentions):
    assert_error(
        client.get(f"/api/jobs?{query}", headers=team.headers), 400, "BAD_REQUEST", mentions
    )


# --- routing errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/nope",
        "/api/jobs/job_doesnotexist",
        "/api/jobs/not-a-job-id",
        "/api/jobs/job_%00x",
        "/api/jobs/job_doesnotexist/attempts",
        "/nowhere",
    ],
)
def test_unknown_paths_are_json_404(client, team, path):
    assert_error(client.get(path, headers=team.headers), 404, "NOT_FOUND")


def test_method_not_allowed_is_json_405(client, team):
    r = client.put("/api/jobs/dispatch", headers=team.headers)
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in r.headers["Allow"]
    assert_error(client.get("/api/jobs/dispatch/x", headers=team.headers), 404, "NOT_FOUND")


# --- auth and tenancy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer disp_k1_unknownunknownunknownunknown12",
        "Bearer not-a-key",
        "disp_k1_x",
    ],
)
def test_missing_or_unknown_key_is_401(client, header):
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [
        ("post", "/api/jobs/dispatch"),
        ("get", "/api/jobs"),
        ("get", "/api/usage"),
        ("delete", "/api/jobs/job_x"),
    ]:
        r = getattr(client, method)(path, headers=headers, json={"payload": {}})
        assert r.status_code == 401 and r.json == UNAUTHORIZED


def test_revoked_key_is_401(app, client, team):
    from dispatched import keys

    assert client.get("/api/usage", headers=team.headers).status_code == 200
    with app.app_context():
        principal = keys.authenticate(team.token)
        assert keys.revoke(principal.key_id, [team.project_id])
    r = client.get("/api/usage", headers=team.headers)
    assert r.status_code == 401 and r.json == UNAUTHORIZED


def test_bearer_scheme_is_case_insensitive(client, team):
    r = client.get("/api/usage", headers={"Authorization": f"bearer {team.token}"})
    assert r.status_code == 200


def test_another_teams_job_is_404(client, make_team):
    owner, other = make_team(), make_team()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = post(client, owner, {"payload": {}, "scheduleFor": later}).json["jobId"]
    for method, path, body in [
        ("get", f"/api/jobs/{job_id}", None),
        ("get", f"/api/jobs/{job_id}/attempts", None),
        ("delete", f"/api/jobs/{job_id}", None),
        ("patch", f"/api/jobs/{job_id}", {"scheduledFor": None}),
        ("post", f"/api/jobs/{job_id}/replay", None),
    ]:
        r = getattr(client, method)(path, headers=other.headers, json=body)
        assert_error(r, 404, "NOT_FOUND")
    assert client.get("/api/jobs", headers=other.headers).json["jobs"] == []
    # The owner's job was not touched by any of that.
    assert client.get(f"/api/jobs/{job_id}", headers=owner.headers).json["status"] == "QUEUED"


def test_unhandled_error_is_json_500(app, client, team, monkeypatch):
    from dispatched import usage

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(usage, "summary", explode)
    assert_error(client.get("/api/usage", headers=team.headers), 500, "INTERNAL_ERROR")


# --- one list of error codes ---------------------------------------------------------------


def test_error_classes_and_openapi_read_the_one_code_table(client):
    from dispatched import errors

    enum = client.get("/api/openapi.json").json["components"]["schemas"]["Error"]
    assert enum["properties"]["error"]["enum"] == list(errors.ERROR_CODES)
    classes = [errors.ServiceError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
        assert cls.status == errors.ERROR_CODES[cls.code], cls
    with pytest.raises(TypeError, match="not one of ERROR_CODES"):
        type("Teapot", (errors.ServiceError,), {"code": "TEAPOT"})


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "BAD_REQUEST"),
        (404, "NOT_FOUND"),
        (405, "METHOD_NOT_ALLOWED"),
        (413, "PAYLOAD_TOO_LARGE"),
        (429, "RATE_LIMITED"),
        (418, "BAD_REQUEST"),
        (500, "INTERNAL_ERROR"),
        (503, "INTERNAL_ERROR"),
    ],
)
def test_framework_http_errors_map_to_codes(status, code):
    from dispatched.errors import code_for_status

    assert code_for_status(status) == code

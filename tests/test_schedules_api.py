"""The schedule routes (DESIGN.md §13): every route's success path, every validation rule with
its status and error code, plan caps (also under a race), tenancy."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from dispatched.clock import parse_iso

BODY = {"cron": "*/15 * * * *", "timezone": "America/New_York", "payload": {"report": "daily"}}


def create(client, team, **fields):
    body = {**BODY, **fields}
    return client.post("/api/schedules", json=body, headers=team.headers)


def test_create_answers_201_with_next_fire_in_utc_and_local(client, team):
    before = datetime.now(UTC)
    r = create(client, team, name="reports", maxRetries=2)
    assert r.status_code == 201, r.json
    body = r.json
    assert set(body) == {
        "scheduleId",
        "name",
        "cron",
        "timezone",
        "payload",
        "maxRetries",
        "catchUp",
        "paused",
        "nextFireAt",
        "nextFireAtLocal",
        "nextFireDst",
        "lastFireAt",
        "createdAt",
        "updatedAt",
    }
    assert body["scheduleId"].startswith("sch_")
    assert body["name"] == "reports" and body["cron"] == "*/15 * * * *"
    assert body["timezone"] == "America/New_York" and body["payload"] == {"report": "daily"}
    assert body["maxRetries"] == 2 and body["catchUp"] == "none" and body["paused"] is False
    assert body["lastFireAt"] is None
    nxt = parse_iso(body["nextFireAt"])
    assert before < nxt <= before + timedelta(minutes=15)
    assert nxt.minute % 15 == 0 and nxt.second == 0
    local = datetime.fromisoformat(body["nextFireAtLocal"])
    assert local == nxt and local.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))


def test_defaults_utc_plan_retry_cap_and_aliases(client, make_team):
    team = make_team("free")
    body = client.post(
        "/api/schedules", json={"cron": "@hourly", "payload": {}}, headers=team.headers
    ).json
    assert body["timezone"] == "UTC" and body["cron"] == "0 * * * *"
    assert body["maxRetries"] == 3  # the free plan's cap
    assert body["nextFireAtLocal"].endswith("+00:00")
    capped = create(client, team, maxRetries=50).json
    assert capped["maxRetries"] == 3


def test_get_list_patch_pause_resume_delete(client, team):
    ids = [create(client, team, name=f"s{i}").json["scheduleId"] for i in range(3)]
    r = client.get(f"/api/schedules/{ids[0]}", headers=team.headers)
    assert r.status_code == 200 and r.json["scheduleId"] == ids[0]

    page = client.get("/api/schedules?limit=2", headers=team.headers).json
    assert [s["scheduleId"] for s in page["schedules"]] == ids[::-1][:2]
    rest = client.get(f"/api/schedules?cursor={page['nextCursor']}", headers=team.headers).json
    assert [s["scheduleId"] for s in rest["schedules"]] == [ids[0]]
    assert rest["nextCursor"] is None

    r = client.patch(
        f"/api/schedules/{ids[0]}",
        json={"cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin", "name": None},
        headers=team.headers,
    )
    assert r.status_code == 200, r.json
    assert r.json["cron"] == "0 9 * * MON-FRI" and r.json["name"] is None
    local = datetime.fromisoformat(r.json["nextFireAtLocal"])
    assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5
    r = client.patch(f"/api/schedules/{ids[0]}", json={"catchUp": "latest"}, headers=team.headers)
    assert r.json["catchUp"] == "latest" and r.json["cron"] == "0 9 * * MON-FRI"

    paused = client.post(f"/api/schedules/{ids[0]}/pause", headers=team.headers)
    assert paused.status_code == 200
    assert paused.json["paused"] is True and paused.json["nextFireAt"] is None
    again = client.post(f"/api/schedules/{ids[0]}/pause", headers=team.headers)
    assert again.status_code == 200 and again.json["paused"] is True
    resumed = client.post(f"/api/schedules/{ids[0]}/resume", headers=team.headers).json
    assert resumed["paused"] is False and parse_iso(resumed["nextFireAt"]) > datetime.now(UTC)

    r = client.delete(f"/api/schedules/{ids[1]}", headers=team.headers)
    assert r.status_code == 200 and r.json == {"scheduleId": ids[1], "deleted": True}
    for method, path in [
        ("get", ""),
        ("delete", ""),
        ("patch", ""),
        ("post", "/pause"),
        ("post", "/resume"),
        ("get", "/preview"),
        ("get", "/jobs"),
        ("get", "/fires"),
    ]:
        kwargs = {"json": {"name": "x"}} if method == "patch" else {}
        r = getattr(client, method)(
            f"/api/schedules/{ids[1]}{path}", headers=team.headers, **kwargs
        )
        assert r.status_code == 404, (method, path)
        assert r.json["error"] == "NOT_FOUND"
    listed = client.get("/api/schedules", headers=team.headers).json["schedules"]
    assert ids[1] not in [s["scheduleId"] for s in listed]


def test_preview_of_a_schedule_and_of_an_expression(client, team):
    sid = create(client, team).json["scheduleId"]
    r = client.get(
        f"/api/schedules/{sid}/preview?count=6&from=2026-03-08T06:20:00Z", headers=team.headers
    )
    assert r.status_code == 200, r.json
    fires = r.json["fires"]
    assert [f["at"] for f in fires] == [
        "2026-03-08T06:30:00.000Z",
        "2026-03-08T06:45:00.000Z",
        "2026-03-08T07:00:00.000Z",
        "2026-03-08T07:15:00.000Z",
        "2026-03-08T07:30:00.000Z",
        "2026-03-08T07:45:00.000Z",
    ]
    assert fires[2] == {
        "at": "2026-03-08T07:00:00.000Z",
        "local": "2026-03-08T03:00:00-04:00",
        "dst": "shifted",
    }
    assert [f["dst"] for f in fires] == [None, None, "shifted", None, None, None]
    default = client.get(f"/api/schedules/{sid}/preview", headers=team.headers).json["fires"]
    assert len(default) == 5 and parse_iso(default[0]["at"]) > datetime.now(UTC)

    r = client.get(
        "/api/schedules/preview",
        query_string={
            "cron": "30 1 * * *",
            "timezone": "America/New_York",
            "count": "2",
            "from": "2026-10-31T12:00:00Z",
        },
        headers=team.headers,
    )
    assert r.status_code == 200, r.json
    assert r.json["fires"] == [
        {
            "at": "2026-11-01T05:30:00.000Z",
            "local": "2026-11-01T01:30:00-04:00",
            "dst": "deduplicated",
        },
        {"at": "2026-11-02T06:30:00.000Z", "local": "2026-11-02T01:30:00-05:00", "dst": None},
    ]
    hundred = client.get("/api/schedules/preview?cron=*+*+*+*+*&count=100", headers=team.headers)
    assert len(hundred.json["fires"]) == 100


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        ({"payload": {}}, 400, "BAD_REQUEST", "cron is required"),
        ({**BODY, "cron": 5}, 400, "BAD_REQUEST", "cron must be a string"),
        ({**BODY, "cron": "0 0 30 2 *"}, 400, "BAD_REQUEST", "never fires: the day-of-month"),
        ({**BODY, "cron": "61 * * * *"}, 400, "BAD_REQUEST", "the minute field '61'"),
        ({**BODY, "cron": "* * * * * *"}, 400, "BAD_REQUEST", "fires at most once a minute"),
        ({**BODY, "cron": "*/30 * * * * *"}, 400, "BAD_REQUEST", "seconds field"),
        ({**BODY, "cron": "* * * *"}, 400, "BAD_REQUEST", "expected 5"),
        ({**BODY, "cron": "@reboot"}, 400, "BAD_REQUEST", "not a known shorthand"),
        ({**BODY, "cron": "0 0 * JANUARY *"}, 400, "BAD_REQUEST", "the month field"),
        ({**BODY, "timezone": "Mars/Base"}, 400, "BAD_REQUEST", "not an IANA time zone"),
        ({**BODY, "timezone": "EST5EDT "}, 400, "BAD_REQUEST", "not an IANA time zone"),
        ({**BODY, "timezone": None}, 400, "BAD_REQUEST", "timezone must be an IANA zone name"),
        ({"cron": "@daily"}, 400, "BAD_REQUEST", "payload is required"),
        ({**BODY, "payload": [1]}, 400, "BAD_REQUEST", "payload must be a JSON object"),
        ({**BODY, "payload": {"x": "y" * 11_000}}, 413, "PAYLOAD_TOO_LARGE", "bytes"),
        ({**BODY, "maxRetries": -1}, 400, "BAD_REQUEST", "maxRetries must be 0 or more"),
        ({**BODY, "maxRetries": "3"}, 400, "BAD_REQUEST", "maxRetries must be an integer"),
        ({**BODY, "maxRetries": True}, 400, "BAD_REQUEST", "maxRetries must be an integer"),
        ({**BODY, "name": ""}, 400, "BAD_REQUEST", "name must be a string of 1-200"),
        ({**BODY, "name": "x" * 201}, 400, "BAD_REQUEST", "name must be a string of 1-200"),
        ({**BODY, "name": "a\nb"}, 400, "BAD_REQUEST", "name must be printable"),
        ({**BODY, "catchUp": "all"}, 400, "BAD_REQUEST", "catchUp must be one of none, latest"),
        ({**BODY, "catchup": "latest"}, 400, "BAD_REQUEST", "unknown field 'catchup'"),
        ([BODY], 400, "BAD_REQUEST", "must be a JSON object"),
    ],
)
def test_create_validation(client, team, body, status, code, fragment):
    r = client.post("/api/schedules", json=body, headers=team.headers)
    assert (r.status_code, r.json["error"]) == (status, code), r.json
    assert fragment in r.json["data"]["message"]
    assert client.get("/api/schedules", headers=team.headers).json["schedules"] == []


def test_the_never_firing_message_names_the_field(client, team):
    r = create(client, team, cron="0 12 31 4,6 *")
    assert r.status_code == 400
    assert r.json["data"] == {
        "message": "cron '0 12 31 4,6 *' never fires: the day-of-month field '31' names no "
        "day that the month field '4,6' has",
        "field": "cron",
        "cronField": "day-of-month",
    }


def test_wrong_content_type_and_malformed_json(client, team):
    r = client.post("/api/schedules", data="cron=x", headers=team.headers)
    assert (r.status_code, r.json["error"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    r = client.post(
        "/api/schedules",
        data="{not json",
        headers={**team.headers, "Content-Type": "application/json"},
    )
    assert (r.status_code, r.json["error"]) == (400, "BAD_REQUEST")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"timezone": "Nowhere/Land"}, "not an IANA time zone"),
        ({"paused": True}, "unknown field 'paused'"),
        ({"catchUp": None}, "catchUp must be one of"),
        ({"payload": None}, "payload is required"),
    ],
)
def test_patch_validation(client, team, body, fragment):
    sid = create(client, team).json["scheduleId"]
    r = client.patch(f"/api/schedules/{sid}", json=body, headers=team.headers)
    assert (r.status_code, r.json["error"]) == (400, "BAD_REQUEST"), r.json
    assert fragment in r.json["data"]["message"]
    assert client.get(f"/api/schedules/{sid}", headers=team.headers).json["cron"] == BODY["cron"]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("count=0", "count must be an integer from 1 to 100"),
        ("count=101", "count must be an integer from 1 to 100"),
        ("count=abc", "count must be an integer from 1 to 100"),
        ("from=yesterday", "from: expected an ISO-8601 timestamp"),
        ("from=9999-12-31T23:59:59Z", "from must be in the years 1970-2999"),
        ("limit=5", "unknown query parameter 'limit'"),
    ],
)
def test_preview_validation(client, team, query, fragment):
    sid = create(client, team).json["scheduleId"]
    r = client.get(f"/api/schedules/{sid}/preview?{query}", headers=team.headers)
    assert (r.status_code, r.json["error"]) == (400, "BAD_REQUEST"), r.json
    assert fragment in r.json["data"]["message"]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("timezone=UTC", "cron must be 1-120 characters"),
        ("cron=0+0+30+2+*", "never fires"),
        ("cron=@hourly&timezone=Atlantis", "not an IANA time zone"),
        ("cron=@hourly&count=1000", "count must be an integer"),
    ],
)
def test_expression_preview_validation(client, team, query, fragment):
    r = client.get(f"/api/schedules/preview?{query}", headers=team.headers)
    assert (r.status_code, r.json["error"]) == (400, "BAD_REQUEST"), r.json
    assert fragment in r.json["data"]["message"]


def test_plan_cap_on_the_number_of_schedules(client, make_team):
    team = make_team("free")  # 5 schedules
    ids = [create(client, team).json["scheduleId"] for _ in range(5)]
    r = create(client, team)
    assert (r.status_code, r.json["error"]) == (409, "CONFLICT")
    assert r.json["data"]["limit"] == 5 and r.json["data"]["plan"] == "free"
    assert "the free plan allows 5 schedules" in r.json["data"]["message"]
    # Paused schedules count; a deleted one frees its slot.
    client.post(f"/api/schedules/{ids[0]}/pause", headers=team.headers)
    assert create(client, team).status_code == 409
    client.delete(f"/api/schedules/{ids[0]}", headers=team.headers)
    assert create(client, team).status_code == 201
    assert create(client, team).status_code == 409


def test_plan_caps_pro_100_scale_unlimited(app):
    from dispatched import plans

    with app.app_context():
        assert plans.get("free").max_schedules == 5
        assert plans.get("pro").max_schedules == 100
        assert plans.get("scale").max_schedules is None


def test_scale_plan_has_no_cap(client, make_team):
    team = make_team("unlimited")  # the scale plan's limits
    assert all(create(client, team).status_code == 201 for _ in range(12))


def test_cap_holds_under_concurrent_creates(live_server, make_team):
    team = make_team("free")

    def post(_):
        return requests.post(
            f"{live_server}/api/schedules", json=BODY, headers=team.headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(post, range(10)))
    assert sorted(codes) == [201] * 5 + [409] * 5


def test_another_projects_schedule_is_404(client, make_team):
    owner, other = make_team("free"), make_team("free")
    sid = create(client, owner).json["scheduleId"]
    for method, path in [("get", ""), ("delete", ""), ("post", "/pause"), ("get", "/jobs")]:
        r = getattr(client, method)(f"/api/schedules/{sid}{path}", headers=other.headers)
        assert (r.status_code, r.json["error"]) == (404, "NOT_FOUND")
    assert client.get("/api/schedules", headers=other.headers).json["schedules"] == []
    assert client.get(f"/api/schedules/{sid}", headers=owner.headers).status_code == 200
    r = client.get("/api/schedules/job_nope", headers=owner.headers)
    assert (r.status_code, r.json["error"]) == (404, "NOT_FOUND")


def test_routes_need_a_key(client):
    for method, path in [("get", "/api/schedules"), ("post", "/api/schedules")]:
        r = getattr(client, method)(path)
        assert r.status_code == 401
        assert r.json == {"error": "UNAUTHORIZED", "data": {"message": "Unauthorized"}}


def test_directly_dispatched_jobs_show_schedule_id_null(client, team):
    job_id = client.post("/api/jobs/dispatch", json={"payload": {}}, headers=team.headers).json[
        "jobId"
    ]
    job = client.get(f"/api/jobs/{job_id}", headers=team.headers).json
    assert "scheduleId" in job and job["scheduleId"] is None
    listed = client.get("/api/jobs", headers=team.headers).json["jobs"]
    assert listed[0]["scheduleId"] is None

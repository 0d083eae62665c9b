"""The SDK and CLI on the routes other work adds (DESIGN.md §5, §13): batch dispatch, the
project API and recurring schedules, against a live server (real HTTP, DB and Redis).

Each group runs as soon as the served OpenAPI document has its path, i.e. once the route is
merged; until then it is skipped with that reason (the SDK side is written from the contract).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from dispatched_sdk import BadRequest, Dispatched, Forbidden, NotFound, Schedule

from dispatched.api.openapi import PATHS
from dispatched.extensions import db
from dispatched.models import Team


def needs(path: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        path not in PATHS, reason=f"the served OpenAPI document has no {path} yet"
    )


batch = needs("/api/jobs/dispatch/batch")
project_api = needs("/api/project")
schedules = needs("/api/schedules")


@pytest.fixture()
def sdk(live_server, team) -> Iterator[Dispatched]:
    with Dispatched(team.token, base_url=live_server) as client:
        yield client


def cli(live_server: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISPATCHED_API_KEY": token, "DISPATCHED_BASE_URL": live_server}
    return subprocess.run(
        [sys.executable, "-m", "dispatched_sdk", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


# --- POST /api/jobs/dispatch/batch ---------------------------------------------------------


@batch
def test_batch_dispatch_results_in_order(sdk):
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    items = sdk.jobs.dispatch_batch(
        [
            {"payload": {"n": 1}, "schedule_for": later},
            {"payload": {"n": 2}, "max_retries": -1},  # bad: it gets its error, alone
            {"payload": {"n": 3}, "idempotency_key": "batch-3"},
        ]
    )
    assert [i.index for i in items] == [0, 1, 2] and [i.ok for i in items] == [True, False, True]
    assert items[0].job.scheduled_for == later and items[0].job.job_id.startswith("job_")
    assert isinstance(items[1].error, BadRequest) and items[1].error.code == "BAD_REQUEST"
    assert "maxRetries" in items[1].error.message
    assert sdk.jobs.get(items[2].job.job_id).payload == {"n": 3}
    again = sdk.jobs.dispatch_batch([{"payload": {"n": 4}, "idempotencyKey": "batch-3"}])
    assert again[0].job.job_id == items[2].job.job_id  # the original job


@batch
def test_batch_dispatch_from_the_cli(live_server, team, tmp_path):
    (tmp_path / "jobs.jsonl").write_text('{"payload": {"a": 1}}\n{"payload": {"b": 2}}\n')
    result = cli(live_server, team.token, "jobs", "batch", "--file", str(tmp_path / "jobs.jsonl"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("job_") == 2 and result.stdout.count(" ok") == 2


# --- GET/PATCH /api/project, POST /api/project/resume ---------------------------------------


def admin_key(app, runner, team) -> str:
    with app.app_context():
        name = db.session.get(Team, team.team_id).name
    result = runner.invoke(args=["admin", "create-key", name, "--scope", "admin"])
    assert result.exit_code == 0, result.output
    return next(w for w in result.output.split() if w.startswith("disp_"))


@project_api
def test_project_get_update_and_resume(app, runner, sdk, live_server, team):
    project = sdk.project.get()
    assert project.endpoint.state == "active" and project.flow_control.parallelism
    with pytest.raises(Forbidden) as exc:
        sdk.project.update(parallelism=2)  # a jobs-scope key
    assert (exc.value.code, exc.value.status) == ("FORBIDDEN", 403)
    with Dispatched(admin_key(app, runner, team), base_url=live_server) as admin:
        changed = admin.project.update(parallelism=2, rate_per_second=1.5)
        assert (changed.flow_control.parallelism, changed.flow_control.rate_per_second) == (2, 1.5)
        reset = admin.project.update(parallelism=None, rate_per_second=None)
        assert reset.flow_control.parallelism == project.flow_control.parallelism
        assert reset.flow_control.rate_per_second is None
        with pytest.raises(BadRequest):
            admin.project.update(parallelism=10_000)  # above the plan's cap
        assert admin.project.resume().endpoint.state == "active"
    shown = cli(live_server, team.token, "project", "get", "--json")
    assert json.loads(shown.stdout)["endpoint"]["state"] == "active"


# --- /api/schedules --------------------------------------------------------------------------


@schedules
def test_schedules_lifecycle(sdk):
    created = sdk.schedules.create(
        "0 9 * * *", {"report": "daily"}, timezone="Europe/Berlin", name="daily report"
    )
    assert isinstance(created, Schedule) and created.schedule_id
    assert created.timezone == "Europe/Berlin" and not created.paused
    assert created.next_fire_at > datetime.now(UTC)
    assert [s.schedule_id for s in sdk.schedules.list()] == [created.schedule_id]
    assert sdk.schedules.get(created.schedule_id).name == "daily report"
    assert sdk.schedules.update(created.schedule_id, name="renamed").name == "renamed"
    assert sdk.schedules.pause(created.schedule_id).paused
    assert not sdk.schedules.resume(created.schedule_id).paused
    fires = sdk.schedules.preview(created.schedule_id, count=3)
    assert len(fires) == 3 and all(f.at.tzinfo and f.local.utcoffset() for f in fires)
    assert all(f.local.hour == 9 for f in fires)
    assert list(sdk.schedules.jobs(created.schedule_id)) == []
    sdk.schedules.delete(created.schedule_id)
    with pytest.raises(NotFound):
        sdk.schedules.get(created.schedule_id)


@schedules
def test_schedule_preview_without_creating_and_validation(sdk):
    fires = sdk.schedules.preview_cron("30 2 * * *", timezone="America/New_York", count=2)
    assert len(fires) == 2 and fires[0].at < fires[1].at
    with pytest.raises(BadRequest) as exc:
        sdk.schedules.create("61 * * * *", {})
    assert exc.value.status == 400


@schedules
def test_schedules_from_the_cli(live_server, team):
    made = cli(
        live_server, team.token, "schedules", "create", "--cron", "*/15 * * * *",
        "--payload", '{"x": 1}', "--name", "quarterly", "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    schedule_id = json.loads(made.stdout)["scheduleId"]
    listed = cli(live_server, team.token, "schedules", "list")
    assert schedule_id in listed.stdout and "quarterly" in listed.stdout
    preview = cli(live_server, team.token, "schedules", "preview", schedule_id, "--count", "2")
    assert preview.returncode == 0 and len(preview.stdout.strip().splitlines()) == 3
    assert cli(live_server, team.token, "schedules", "delete", schedule_id).returncode == 0

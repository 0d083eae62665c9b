"""Flow-control settings (DESIGN.md §9) and lateness, as the dashboard and the admin CLI show them:
the service, the webhook page's form, the overview and ``admin set-flow``."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest

from dispatched import clock, flow_settings, stats, teams
from dispatched.errors import BadRequest
from dispatched.extensions import db
from dispatched.ids import new_id
from dispatched.models import Attempt, Job, JobStatus, Project, ProjectFlow
from tests.test_dashboard import page_token, project_id_of, sign_up

#: (parallelism, rate) the service refuses on the free plan (cap 5), and what the message says.
BAD_VALUES = [
    (0, None, "between 1 and 5"),
    (6, None, "between 1 and 5"),
    (-1, None, "between 1 and 5"),
    (True, None, "must be an integer, got True"),
    ("3", None, "must be an integer, got '3'"),
    (2.0, None, "must be an integer, got 2.0"),
    (None, 0, "above 0"),
    (None, -1.5, "above 0"),
    (None, math.nan, "must be a number, got nan"),
    (None, math.inf, "must be a number, got inf"),
    (None, True, "must be a number, got True"),
    (None, "2", "must be a number, got '2'"),
    (None, 10_001, "at most 10000"),
]

#: The same rules through typed text (the form and the CLI).
BAD_TEXT = [
    ("parallelism", "0", "between 1 and 5 (the free plan's cap), got 0"),
    ("parallelism", "6", "between 1 and 5 (the free plan's cap), got 6"),
    ("parallelism", "-2", "between 1 and 5 (the free plan's cap), got -2"),
    ("parallelism", "true", "parallelism must be an integer, got 'true'"),
    ("parallelism", "abc", "parallelism must be an integer, got 'abc'"),
    ("parallelism", "2.5", "parallelism must be an integer, got '2.5'"),
    ("rate", "0", "ratePerSecond must be above 0"),
    ("rate", "-1", "ratePerSecond must be above 0"),
    ("rate", "nan", "ratePerSecond must be a number, got nan"),
    ("rate", "inf", "ratePerSecond must be a number, got inf"),
    ("rate", "true", "ratePerSecond must be a number, got 'true'"),
    ("rate", "fast", "ratePerSecond must be a number, got 'fast'"),
]


def stored(app, project_id: int) -> tuple[int | None, float | None]:
    """The project's saved (parallelism, rate_per_second), read in a fresh session."""
    with app.app_context():
        project = db.session.get(Project, project_id)
        return project.parallelism, project.rate_per_second


def save(app, project_id: int, parallelism: int | None, rate: float | None) -> None:
    with app.app_context():
        project = db.session.get(Project, project_id)
        project.parallelism, project.rate_per_second = parallelism, rate
        db.session.commit()


def add_attempts(project_id: int, latenesses: list[int | None], age: timedelta) -> None:
    """Insert one finished job per lateness, its attempt started ``age`` ago."""
    started = clock.utcnow() - age
    jobs = [
        Job(
            id=new_id("job"),
            project_id=project_id,
            status=JobStatus.COMPLETED,
            payload={},
            scheduled_for=started,
            max_retries=0,
            attempts=1,
        )
        for _ in latenesses
    ]
    db.session.add_all(jobs)
    db.session.flush()  # attempts reference their jobs (no ORM relationship orders the inserts)
    db.session.add_all(
        Attempt(
            id=new_id("att"),
            job_id=job.id,
            number=1,
            started_at=started,
            finished_at=started,
            duration_ms=3,
            http_status=200,
            lateness_ms=ms,
            outcome="success",
        )
        for job, ms in zip(jobs, latenesses, strict=True)
    )
    db.session.commit()


# --- the service ------------------------------------------------------------------------------


def test_a_new_project_follows_its_plan(app, make_team):
    info = make_team("pro")
    with app.app_context():
        status = flow_settings.flow_status(db.session.get(Project, info.project_id))
        assert status.to_dict() == {
            "plan": "pro",
            "flowControl": {"parallelism": 50, "ratePerSecond": None},
            "planParallelismCap": 50,
            "effectiveParallelism": 50,
            "pausedUntil": None,
            "waiting": False,
        }
        assert not status.parallelism_is_set and not status.throttled
        # A project whose flow row is missing (never released anything) shows the defaults.
        db.session.delete(db.session.get(ProjectFlow, info.project_id))
        db.session.commit()
        status = flow_settings.flow_status(db.session.get(Project, info.project_id))
        assert (status.effective, status.paused_until, status.waiting) == (50, None, False)


def test_only_the_fields_given_change_and_none_resets(app, team):
    with app.app_context():
        project = db.session.get(Project, team.project_id)
        status = flow_settings.set_flow_control(project, parallelism=3)
        assert (status.parallelism, status.rate, status.parallelism_is_set) == (3, None, True)
    assert stored(app, team.project_id) == (3, None)
    with app.app_context():
        project = db.session.get(Project, team.project_id)
        status = flow_settings.set_flow_control(project, rate=2.5)
        assert (status.parallelism, status.rate) == (3, 2.5)
    assert stored(app, team.project_id) == (3, 2.5)
    with app.app_context():
        project = db.session.get(Project, team.project_id)
        status = flow_settings.set_flow_control(project, parallelism=None)
        assert (status.parallelism, status.rate, status.parallelism_is_set) == (5, 2.5, False)
    assert stored(app, team.project_id) == (None, 2.5)
    with app.app_context():
        project = db.session.get(Project, team.project_id)
        flow_settings.set_flow_control(project, rate=None)
        flow_settings.set_flow_control(project)  # nothing given: nothing changes
    assert stored(app, team.project_id) == (None, None)


@pytest.mark.parametrize(("parallelism", "rate", "message"), BAD_VALUES)
def test_invalid_settings_are_refused_and_nothing_is_saved(app, team, parallelism, rate, message):
    save(app, team.project_id, 4, 1.5)
    with app.app_context():
        project = db.session.get(Project, team.project_id)
        # The valid half of the call is not saved either.
        args = (parallelism, 2.0) if rate is None else (2, rate)
        with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
            flow_settings.set_flow_control(project, *args)
    assert stored(app, team.project_id) == (4, 1.5)


def test_the_cap_is_the_plans_and_a_downgrade_bounds_the_setting(app, make_team):
    info = make_team("pro")
    with app.app_context():
        project = db.session.get(Project, info.project_id)
        assert flow_settings.set_flow_control(project, parallelism=50).parallelism == 50
        with pytest.raises(BadRequest, match="between 1 and 50 .the pro plan's cap., got 51"):
            flow_settings.set_flow_control(project, parallelism=51)
        flow_settings.set_flow_control(project, parallelism=40)
        teams.set_plan(project.team, "free")
        status = flow_settings.flow_status(project)
        assert (status.parallelism, status.cap, status.effective) == (5, 5, 5)


def test_status_shows_back_pressure_and_a_pause(app, team):
    now = clock.utcnow()
    with app.app_context():
        row = db.session.get(ProjectFlow, team.project_id)
        row.effective, row.paused_until, row.waiting = 2, now + timedelta(seconds=30), True
        db.session.commit()
        status = flow_settings.flow_status(db.session.get(Project, team.project_id))
        assert (status.parallelism, status.effective, status.throttled) == (5, 2, True)
        assert status.paused_until == now + timedelta(seconds=30) and status.waiting
        assert status.to_dict()["pausedUntil"] == clock.isoformat(now + timedelta(seconds=30))
        # A pause that has ended is not shown; back-pressure never exceeds a lowered setting.
        row.effective, row.paused_until = 4, now - timedelta(seconds=1)
        db.session.commit()
        project = db.session.get(Project, team.project_id)
        flow_settings.set_flow_control(project, parallelism=3)
        status = flow_settings.flow_status(project)
        assert (status.effective, status.paused_until, status.throttled) == (3, None, False)


def test_typed_values_are_parsed_strictly():
    assert flow_settings.parse_parallelism(" 7 ") == 7
    assert flow_settings.parse_rate("0.5") == 0.5 and flow_settings.parse_rate("1e2") == 100.0
    for text in ["", "seven", "7.0", "1e2", "٣", "9" * 40]:
        with pytest.raises(BadRequest, match="parallelism must be an integer"):
            flow_settings.parse_parallelism(text)
    for text in ["", "fast", "0x10", "٣", "1" * 40]:
        with pytest.raises(BadRequest, match="ratePerSecond must be a number"):
            flow_settings.parse_rate(text)


# --- lateness ---------------------------------------------------------------------------------


def test_lateness_percentiles_over_the_last_hour(app, make_team):
    mine, other = make_team("free"), make_team("free")
    with app.app_context():
        assert stats.lateness(mine.project_id) is None
        add_attempts(mine.project_id, list(range(100, 0, -1)) + [None], timedelta(minutes=5))
        add_attempts(mine.project_id, [90_000] * 50, timedelta(hours=2))  # too old
        add_attempts(other.project_id, [70_000] * 50, timedelta(minutes=5))  # another project
        got = stats.lateness(mine.project_id)
        assert (got.p50_ms, got.p99_ms, got.count, got.sampled) == (50, 99, 100, False)
        assert stats.lateness(mine.project_id, clock.utcnow() - timedelta(hours=3)).count == 150
        assert stats.lateness(other.project_id).p50_ms == 70_000


def test_percentile_is_nearest_rank():
    assert stats.percentile([7], 50) == stats.percentile([7], 99) == 7
    assert stats.percentile([1, 2, 3, 4], 50) == 2
    assert stats.percentile(list(range(1, 1001)), 99) == 990


# --- the dashboard ----------------------------------------------------------------------------


@pytest.fixture()
def owner(app, client) -> int:
    assert sign_up(client).status_code == 200
    return project_id_of(app, "Acme")


def post_flow(client, project_id: int, parallelism: str, rate: str, token: str | None = None):
    token = token or page_token(client, f"/p/{project_id}/webhook")
    return client.post(
        f"/p/{project_id}/webhook/flow",
        data={"csrf_token": token, "parallelism": parallelism, "rate": rate},
    )


def test_overview_shows_lateness_and_parallelism(app, client, owner):
    html = client.get(f"/p/{owner}/").get_data(as_text=True)
    assert "Lateness, last hour" in html and "No attempts started in the last hour" in html
    assert "5 <small>/ 5 in flight at most</small>" in html and "the free plan's cap" in html
    assert "Paused until" not in html
    with app.app_context():
        add_attempts(owner, [10, 20, 30, 40, 1000], timedelta(minutes=1))
        row = db.session.get(ProjectFlow, owner)
        row.effective, row.paused_until = 2, clock.utcnow() + timedelta(minutes=10)
        db.session.commit()
    save(app, owner, 4, 2.5)
    html = client.get(f"/p/{owner}/").get_data(as_text=True)
    assert "30 <small>ms p50</small> · 1000 <small>ms p99</small>" in html
    assert "over 5 attempts" in html
    assert "2 <small>/ 4 in flight at most</small>" in html and "lowered by 429/503" in html
    assert "at most 2.5 started a second" in html
    assert "Paused until <time" in html and "Retry-After" in html


def test_webhook_page_form_saves_and_resets(app, client, owner):
    page = client.get(f"/p/{owner}/webhook").get_data(as_text=True)
    assert "Flow control" in page and 'max="5"' in page and "The free plan allows up to 5" in page
    r = post_flow(client, owner, "3", "2.5")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/p/{owner}/webhook#flow")
    assert stored(app, owner) == (3, 2.5)
    page = client.get(f"/p/{owner}/webhook").get_data(as_text=True)
    assert "Flow control saved." in page and 'value="3"' in page and 'value="2.5"' in page
    assert "At most <strong>3</strong>" in page
    assert post_flow(client, owner, " ", "").status_code == 302
    assert stored(app, owner) == (None, None)


@pytest.mark.parametrize(("field", "value", "message"), BAD_TEXT)
def test_webhook_page_form_shows_errors_inline(app, client, owner, field, value, message):
    save(app, owner, 4, 1.5)
    fields = {"parallelism": "3", "rate": "2", field: value}
    r = post_flow(client, owner, fields["parallelism"], fields["rate"])
    html = r.get_data(as_text=True)
    assert r.status_code == 400
    error = html.split('id="flow-error">', 1)[1].split("</p>", 1)[0]
    assert message.replace("'", "&#39;") in error
    assert f'value="{value}"' in html  # what was typed stays in the form
    assert stored(app, owner) == (4, 1.5)


def test_webhook_flow_form_needs_csrf(app, client, owner):
    r = client.post(f"/p/{owner}/webhook/flow", data={"parallelism": "2", "rate": ""})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    r = client.post(
        f"/p/{owner}/webhook/flow",
        data={"csrf_token": "forged", "parallelism": "2", "rate": ""},
    )
    assert r.status_code == 400
    assert stored(app, owner) == (None, None)


def test_another_teams_project_is_a_404(app, client, owner):
    other = app.test_client()
    sign_up(other, email="mallory@example.com", team="Mallory")
    token = page_token(other, f"/p/{project_id_of(app, 'Mallory')}/webhook")
    assert other.get(f"/p/{owner}/").status_code == 404
    assert other.get(f"/p/{owner}/webhook").status_code == 404
    assert post_flow(other, owner, "1", "1", token=token).status_code == 404
    assert stored(app, owner) == (None, None)


# --- the admin CLI ----------------------------------------------------------------------------


def set_flow(runner, *args: str):
    return runner.invoke(args=["admin", "set-flow", *args])


def test_cli_set_flow_merges_and_prints(app, runner, team):
    pid = str(team.project_id)
    result = set_flow(runner, pid, "--parallelism", "3", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["projectId"] == team.project_id and info["plan"] == "free"
    assert info["flowControl"] == {"parallelism": 3, "ratePerSecond": None}
    assert info["planParallelismCap"] == 5 and info["effectiveParallelism"] == 3
    info = json.loads(set_flow(runner, pid, "--rate", "2.5", "--json").output)
    assert info["flowControl"] == {"parallelism": 3, "ratePerSecond": 2.5}
    assert stored(app, team.project_id) == (3, 2.5)

    result = set_flow(runner, pid, "--reset-parallelism")
    assert result.exit_code == 0, result.output
    assert "parallelism  5 (the plan's cap; free cap 5)" in result.output
    assert "rate         2.5/s" in result.output
    result = set_flow(runner, pid, "--no-rate")
    assert "rate         none" in result.output
    assert stored(app, team.project_id) == (None, None)
    assert set_flow(runner, pid).exit_code == 0  # no option: only prints


@pytest.mark.parametrize(("field", "value", "message"), BAD_TEXT)
def test_cli_set_flow_refuses_bad_values(app, runner, team, field, value, message):
    save(app, team.project_id, 4, 1.5)
    valid = {"parallelism": ["--parallelism", "2"], "rate": ["--rate", "3"]}
    other = valid["rate" if field == "parallelism" else "parallelism"]
    result = set_flow(runner, str(team.project_id), f"--{field}", value, *other)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert stored(app, team.project_id) == (4, 1.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parallelism", "3", "--reset-parallelism"], "not both"),
        (["--rate", "1", "--no-rate"], "not both"),
        (["--parallelism", ""], "parallelism must be an integer, got ''"),
        (["--rate", " "], "ratePerSecond must be a number, got ''"),
    ],
)
def test_cli_set_flow_refuses_contradictions_and_blanks(app, runner, team, args, message):
    result = set_flow(runner, str(team.project_id), *args)
    assert result.exit_code == 1 and message in result.stderr
    assert stored(app, team.project_id) == (None, None)


@pytest.mark.parametrize("ref", ["999999", "abc", "", "1" * 30])
def test_cli_set_flow_unknown_project(runner, team, ref):
    result = set_flow(runner, ref, "--parallelism", "2")
    assert result.exit_code == 1 and result.stderr.startswith("error: no project")

"""Retention: ``admin purge --older-than DAYS`` deletes old finished jobs and their attempts,
in batches, and nothing else."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dispatched import clock, retention
from dispatched.errors import BadRequest
from dispatched.extensions import db
from dispatched.ids import new_id
from dispatched.models import Attempt, Job, MonthlyUsage


def add_job(project_id: int, status: str, age_days: float, attempts: int = 1) -> str:
    """Insert a job whose last change was ``age_days`` ago, with ``attempts`` attempt rows."""
    changed = clock.utcnow() - timedelta(days=age_days)
    job = Job(
        id=new_id("job"),
        project_id=project_id,
        status=status,
        payload={"status": status, "age": age_days},
        scheduled_for=changed - timedelta(minutes=1),
        max_retries=3,
        attempts=attempts,
        created_at=changed - timedelta(minutes=1),
        updated_at=changed,
        next_attempt_at=changed if status == "QUEUED" else None,
    )
    db.session.add(job)
    db.session.flush()  # no relationship orders the INSERTs: the job first
    for number in range(1, attempts + 1):
        db.session.add(
            Attempt(
                id=new_id("att"),
                job_id=job.id,
                number=number,
                started_at=changed - timedelta(seconds=number),
                finished_at=changed,
                outcome="success",
                http_status=200,
            )
        )
    db.session.commit()
    return job.id


def remaining() -> tuple[set[str], dict[str, int]]:
    jobs = set(db.session.execute(sa.select(Job.id)).scalars())
    per_job = dict(
        db.session.execute(
            sa.select(Attempt.job_id, sa.func.count()).group_by(Attempt.job_id)
        ).all()
    )
    db.session.rollback()
    return jobs, per_job


@pytest.fixture()
def history(app, team):
    """Old and recent jobs in every status (old = 40 days, recent = 2 days)."""
    with app.app_context():
        db.session.add(MonthlyUsage(team_id=team.team_id, month="2026-10", jobs=123))
        db.session.commit()
        old_terminal = [
            add_job(team.project_id, "COMPLETED", 40, attempts=1),
            add_job(team.project_id, "COMPLETED", 41, attempts=2),
            add_job(team.project_id, "FAILED", 45, attempts=4),
            add_job(team.project_id, "FAILED", 60, attempts=1),
            add_job(team.project_id, "CANCELLED", 50, attempts=0),
        ]
        kept = [
            add_job(team.project_id, "COMPLETED", 2),
            add_job(team.project_id, "FAILED", 29.9),
            add_job(team.project_id, "CANCELLED", 1, attempts=0),
            # Live jobs are never purged, however old their last change.
            add_job(team.project_id, "QUEUED", 90, attempts=3),
            add_job(team.project_id, "DISPATCHED", 90, attempts=0),
            add_job(team.project_id, "STARTED", 90, attempts=2),
        ]
    return old_terminal, kept


def test_purge_deletes_old_terminal_jobs_and_their_attempts_only(app, history):
    old_terminal, kept = history
    with app.app_context():
        done = retention.purge(30, batch_size=2)
        assert (done.jobs, done.attempts, done.batches) == (5, 8, 3)
        jobs, attempts = remaining()
        assert jobs == set(kept)
        assert set(attempts) == {job_id for job_id in kept if attempts.get(job_id)}
        assert sum(attempts.values()) == 1 + 1 + 3 + 2
        usage = db.session.execute(sa.select(MonthlyUsage.jobs)).scalar()
        assert usage == 123  # quotas are counted apart from the jobs
        # Running it again finds nothing.
        again = retention.purge(30)
        assert (again.jobs, again.attempts, again.batches) == (0, 0, 0)


def test_dry_run_counts_and_deletes_nothing(app, history):
    old_terminal, kept = history
    with app.app_context():
        done = retention.purge(30, dry_run=True)
        assert (done.jobs, done.attempts, done.dry_run) == (5, 8, True)
        jobs, _ = remaining()
        assert jobs == set(old_terminal) | set(kept)


def test_a_replayed_job_is_not_purged(app, history):
    old_terminal, _ = history
    failed = old_terminal[3]
    with app.app_context():
        # A replay moves FAILED → QUEUED (and touches updated_at); even with the old time kept,
        # a live job is out of the purge's reach.
        db.session.execute(sa.update(Job).where(Job.id == failed).values(status="QUEUED"))
        db.session.commit()
        done = retention.purge(30)
        assert done.jobs == 4
        jobs, attempts = remaining()
        assert failed in jobs and attempts[failed] == 1


def test_cli_purge_json_and_text(app, runner, history):
    old_terminal, kept = history
    result = runner.invoke(args=["admin", "purge", "--older-than", "30", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["jobs"] == 5 and info["attempts"] == 8 and info["dryRun"] is True
    assert info["cutoff"].endswith("Z")
    result = runner.invoke(args=["admin", "purge", "--older-than", "30", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("deleted 5 jobs and 8 attempts finished before ")
    assert "(2 batches)" in result.output
    with app.app_context():
        assert remaining()[0] == set(kept)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "0"], "--older-than must be at least 1 day, got '0'"),
        (["--older-than", "-3"], "at least 1 day"),
        (["--older-than", "nan"], "at least 1 day"),
        (["--older-than", "soon"], "--older-than must be a number of days, got 'soon'"),
        (["--older-than", "30", "--batch-size", "0"], "batch size must be between 1 and"),
    ],
)
def test_cli_purge_refuses_bad_input(app, runner, history, args, message):
    result = runner.invoke(args=["admin", "purge", *args])
    assert result.exit_code == 1
    assert message in result.output
    with app.app_context():
        assert len(remaining()[0]) == 11  # nothing deleted


def test_cli_purge_requires_older_than(runner):
    result = runner.invoke(args=["admin", "purge"])
    assert result.exit_code == 2 and "--older-than" in result.output


def test_parse_days():
    assert retention.parse_days("1") == 1.0
    assert retention.parse_days("7.5") == 7.5
    with pytest.raises(BadRequest):
        retention.parse_days("inf")

"""The demo team of a fresh install (``flask admin seed-demo``) and, for README screenshots,
a month of its job history.

The history is written straight to the tables (not through the state machine) because it is
history, not live work: every row is terminal, so nothing is ever scheduled or delivered from it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from . import clock, echo_store, keys, plans, teams, usage, webhooks
from .errors import LimitReached, ServiceError
from .extensions import db
from .ids import new_id
from .models import Attempt, Job, JobStatus, Project

DEMO_TEAM = "Demo team"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"
DEMO_KEY_LABEL = "demo (dev run)"

PAYLOADS = [
    {"type": "email.welcome", "userId": 4182, "template": "welcome-v2"},
    {"type": "invoice.remind", "invoiceId": "inv_2931", "daysOverdue": 3},
    {"type": "report.weekly", "accountId": 77, "format": "pdf"},
    {"type": "cache.warm", "paths": ["/", "/pricing", "/docs"]},
]


@dataclass(frozen=True)
class Demo:
    project: Project
    api_key: str


def seed(public_url: str, webhook_url: str | None = None, history: bool = False) -> Demo:
    """Create (once) the demo team, user and project; replace the demo key; commit.

    The webhook defaults to the built-in echo receiver of the app at ``public_url``; it is
    saved through the webhook rules like any other. Running it again keeps the data and
    replaces the previous demo key, so exactly one printed key is live.
    """
    user = teams.find_user(DEMO_EMAIL)
    if user is None:
        try:
            created = teams.add_team(DEMO_TEAM, "pro")
            teams.add_user(DEMO_EMAIL, DEMO_PASSWORD, created.team)
            url = webhook_url or echo_store.url_for_project(public_url, created.project.id)
            webhooks.set_url(created.project, url)  # validates, then commits the whole demo
        except ServiceError:
            db.session.rollback()
            raise
        project = created.project
        if history:
            seed_history(project.id)
    else:
        project = user.team.projects[0]
    return Demo(project=project, api_key=keys.replace_labelled(project, DEMO_KEY_LABEL))


def seed_history(project_id: int, days: int = 30, per_day: int = 40, seed: int = 7) -> int:
    """Add ``days`` days of finished jobs (mostly completed, some failed/cancelled)."""
    rng = random.Random(seed)
    now = clock.utcnow()
    created = this_month = 0
    attempts: list[Attempt] = []
    for day in range(days, 0, -1):
        for _ in range(max(0, int(rng.gauss(per_day, per_day / 4)))):
            at = now - timedelta(days=day, seconds=rng.uniform(0, 86_400))
            status = rng.choices(
                [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED], [90, 6, 4]
            )[0]
            job = Job(
                id=new_id("job"),
                project_id=project_id,
                status=status,
                payload=rng.choice(PAYLOADS),
                scheduled_for=at,
                max_retries=3,
                attempts=0,
                retry_base=0,
                created_at=at,
                updated_at=at,
            )
            if status == JobStatus.CANCELLED:
                job.cancelled_at = at + timedelta(minutes=5)
            else:
                completed = status == JobStatus.COMPLETED
                tries = (1 if rng.random() < 0.9 else rng.randint(2, 3)) if completed else 4
                for n in range(1, tries + 1):
                    ok = completed and n == tries
                    start = at + timedelta(seconds=30 * (n - 1) * n)
                    ms = rng.randint(35, 420)
                    attempts.append(
                        Attempt(
                            id=new_id("att"),
                            job_id=job.id,
                            number=n,
                            started_at=start,
                            finished_at=start + timedelta(milliseconds=ms),
                            duration_ms=ms,
                            http_status=200 if ok else 503,
                            outcome="success" if ok else "http_error",
                            response_excerpt='{"ok":true}' if ok else "Service Unavailable",
                            error=None if ok else "HTTP 503",
                        )
                    )
                job.attempts = tries
                job.updated_at = at + timedelta(seconds=30 * tries * tries)
                job.completed_at = job.updated_at if completed else None
                job.last_error = None if completed else "HTTP 503"
            db.session.add(job)
            created += 1
            this_month += clock.month_key(at) == clock.month_key(now)
    db.session.flush()  # jobs before their attempts (no ORM relationship orders them)
    db.session.add_all(attempts)
    project = db.session.get(Project, project_id)
    plan = plans.get(project.team.plan)
    for _ in range(this_month):  # history counts toward this month's usage, like real jobs
        try:
            usage.consume(project.team_id, plan, now)
        except LimitReached:
            break
    db.session.commit()
    return created

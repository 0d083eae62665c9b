"""The scheduler process: the release loop (rq-scheduler), which also fires due recurring
schedules (``schedules.Ticker``: looks for due schedules at the next fire time and at least
every SCHEDULER_INTERVAL, not on every release pass), plus the reconciler.

``python scheduler.py``. Run as many as you like: rq-scheduler's lock keeps one releasing
attempts and firing schedules (each fire is recorded under a unique key in SQL, so even two
active loops fire it once) and a Redis lock keeps one reconciling at a time.
"""

from __future__ import annotations

import logging
import sys
import threading

from dispatched import create_app, reconciler, schedules, transport

logger = logging.getLogger("dispatched.scheduler")


def reconcile_forever(app, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    """Run a reconcile pass every RECONCILE_INTERVAL seconds until ``stop`` is set."""
    interval = app.config["RECONCILE_INTERVAL"]
    while not stop.is_set():
        with app.app_context():
            try:
                reconciler.reconcile()
            except transport.TransportUnavailable as exc:
                logger.warning("reconciler: Redis unreachable (%s); retrying", exc)
            except Exception:
                logger.exception("reconciler pass failed; retrying")
        stop.wait(interval)


def main() -> int:
    app = create_app()
    stop = threading.Event()
    thread = threading.Thread(
        target=reconcile_forever, args=(app, stop), daemon=True, name="reconciler"
    )
    thread.start()
    with app.app_context():
        logger.info(
            "scheduler started (interval %ss, reconcile every %ss)",
            app.config["SCHEDULER_INTERVAL"],
            app.config["RECONCILE_INTERVAL"],
        )
        try:
            interval = app.config["SCHEDULER_INTERVAL"]
            recheck = min(interval, app.config["SCHEDULE_FIRE_AHEAD"] / 2)
            transport.run_scheduler(schedules.Ticker(recheck), interval)
        finally:
            stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The rq-scheduler transport backend: the only code that talks to RQ and rq-scheduler.

Implements the functions of ``transport`` (the seam callers use). "Deliver attempt N of job X
now / at time T / never mind" becomes RQ jobs: each attempt gets its own RQ job id
``<jobId>-<attemptNumber>`` so a retry scheduled while the previous attempt's RQ job is still
finishing never collides with it. Tasks are enqueued by dotted name, so nothing here imports
the task modules.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.registry import StartedJobRegistry
from rq_scheduler import Scheduler

from . import clock, redis_client
from .transport import AttemptRef, OnDue, TransportUnavailable

logger = logging.getLogger(__name__)

DELIVER_TASK = "dispatched.delivery.deliver"
#: Keep failed RQ jobs (a bug in the task, not a failed delivery) for a week for inspection.
FAILURE_TTL = 7 * 24 * 3600


#: rq-scheduler's sorted set of scheduled RQ job ids (score: the exact due time).
SCHEDULED_KEY = Scheduler.scheduled_jobs_key


def connection() -> Redis:
    return redis_client.connection()


def queue_name() -> str:
    return current_app.config["DELIVERY_QUEUE"]


#: RQ's hard limit on one delivery task is the plan's delivery timeout plus this: the wait for
#: its time (≤ 2 s), connect (5 s), bookkeeping. With WORKER_LOST_GRACE's default (15 s) above
#: it, RQ has stopped a stuck task before the reconciler calls its worker lost; a smaller grace
#: (the tests use 1 s) only risks a duplicate delivery, never a wrong record (the CAS decides).
RQ_TIMEOUT_MARGIN = 12


def rq_timeout(delivery_timeout: int) -> int:
    """RQ's hard limit on one delivery task (see RQ_TIMEOUT_MARGIN)."""
    return delivery_timeout + RQ_TIMEOUT_MARGIN


def rq_job_id(job_id: str, attempt: int) -> str:
    return f"{job_id}-{attempt}"


def parse_rq_job_id(rq_id: str) -> tuple[str, int] | None:
    """Split ``<jobId>-<attempt>`` back into its parts (None if it is not one of ours)."""
    job_id, _, attempt = rq_id.rpartition("-")
    return (job_id, int(attempt)) if job_id and attempt.isdigit() else None


def _queue(conn: Redis | None = None) -> Queue:
    return Queue(queue_name(), connection=conn or connection())


def _scheduler(conn: Redis | None = None) -> Scheduler:
    return Scheduler(queue_name=queue_name(), connection=conn or connection())


def enqueue_now(job_id: str, attempt: int, timeout: int) -> None:
    """Put attempt ``attempt`` of ``job_id`` on the delivery queue.

    Raises:
        TransportUnavailable: Redis is unreachable.
    """
    try:
        _queue().enqueue(
            DELIVER_TASK,
            job_id,
            attempt,
            job_id=rq_job_id(job_id, attempt),
            job_timeout=rq_timeout(timeout),
            result_ttl=0,
            failure_ttl=FAILURE_TTL,
            description=f"deliver {job_id} attempt {attempt}",
        )
    except RedisError as exc:
        raise TransportUnavailable(str(exc)) from exc


def schedule_at(job_id: str, attempt: int, when: datetime, timeout: int) -> None:
    """Register attempt ``attempt`` of ``job_id`` with rq-scheduler for ``when``.

    rq-scheduler itself keeps whole seconds (``to_unix``); the score is rewritten with the exact
    time, so DispatchScheduler — which reads scores as floats — releases an attempt at its time,
    never before, and as soon after it as its tick interval allows.

    Raises:
        TransportUnavailable: Redis is unreachable.
    """
    try:
        scheduler = _scheduler()
        rq_id = rq_job_id(job_id, attempt)
        scheduler.cancel(rq_id)
        scheduler.enqueue_at(
            clock.ceil_second(when),
            DELIVER_TASK,
            job_id,
            attempt,
            job_id=rq_id,
            timeout=rq_timeout(timeout),
            job_result_ttl=0,
            queue_name=queue_name(),
            job_description=f"deliver {job_id} attempt {attempt}",
        )
        scheduler.connection.zadd(SCHEDULED_KEY, {rq_id: when.timestamp()})
    except RedisError as exc:
        raise TransportUnavailable(str(exc)) from exc


def unschedule(job_id: str, attempt: int) -> None:
    """Remove attempt ``attempt`` of ``job_id`` from rq-scheduler and the queue, if present.

    Raises:
        TransportUnavailable: Redis is unreachable.
    """
    rq_id = rq_job_id(job_id, attempt)
    try:
        conn = connection()
        _scheduler(conn).cancel(rq_id)
        _queue(conn).remove(rq_id)
        with contextlib.suppress(NoSuchJobError):
            RQJob.fetch(rq_id, connection=conn).delete(remove_from_queue=False)
    except RedisError as exc:
        raise TransportUnavailable(str(exc)) from exc


def scheduled_time(job_id: str, attempt: int) -> float | None:
    """Unix time the attempt is scheduled for, or None."""
    try:
        return connection().zscore(SCHEDULED_KEY, rq_job_id(job_id, attempt))
    except RedisError as exc:
        raise TransportUnavailable(str(exc)) from exc


def depth() -> dict[str, int]:
    """Attempts waiting in Redis: on the queue, scheduled for later, being worked on."""
    conn = connection()
    queue = _queue(conn)
    return {
        "queued": queue.count,
        "scheduled": conn.zcard(SCHEDULED_KEY),
        "started": StartedJobRegistry(queue=queue).count,
    }


def held(attempts: list[AttemptRef]) -> set[AttemptRef]:
    """Return which of ``attempts`` Redis holds (scheduled, queued or started), pipelined."""
    try:
        return _held(connection(), attempts)
    except RedisError as exc:
        raise TransportUnavailable(str(exc)) from exc


def _held(conn: Redis, attempts: list[AttemptRef]) -> set[AttemptRef]:
    queue = _queue(conn)
    rq_ids = [rq_job_id(job_id, n) for job_id, n in attempts]
    pipe = conn.pipeline(transaction=False)
    for rq_id in rq_ids:
        pipe.exists(RQJob.key_for(rq_id))
        pipe.zscore(SCHEDULED_KEY, rq_id)
    replies = pipe.execute()
    queued = {x.decode() for x in conn.lrange(queue.key, 0, -1)} if rq_ids else set()
    started = set(StartedJobRegistry(queue=queue).get_job_ids()) if rq_ids else set()
    result = set()
    for index, pair in enumerate(attempts):
        exists, score = replies[2 * index], replies[2 * index + 1]
        rq_id = rq_ids[index]
        if exists and (score is not None or rq_id in queued or rq_id in started):
            result.add(pair)
    return result


def ping() -> None:
    """Raise TransportUnavailable unless Redis answers."""
    try:
        connection().ping()
    except RedisError as exc:
        raise TransportUnavailable(str(exc)) from exc


def run_scheduler(on_due: OnDue, interval: float, burst: bool = False) -> None:
    """Run rq-scheduler's loop (DispatchScheduler) in this process until stopped."""
    DispatchScheduler(
        queue_name=queue_name(), connection=connection(), interval=interval, on_due=on_due
    ).run(burst=burst)


class DispatchScheduler(Scheduler):
    """rq-scheduler that asks the job service, in one batch per tick, before releasing due
    attempts.

    ``on_due([(job_id, attempt), ...])`` maps each to True to release it to the queue (the
    service made the QUEUED→DISPATCHED transition), False to drop it (cancelled, superseded),
    or a datetime to hold it until then (the job was rescheduled later than Redis knew).
    """

    def __init__(
        self,
        *args: Any,
        on_due: OnDue,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self._on_due = on_due

    def run(self, burst: bool = False) -> None:
        """Like rq-scheduler's loop, but woken on a fixed grid of ``interval`` (1 s by default:
        just after each whole second), and surviving Redis outages (it waits for Redis instead
        of exiting). Scores are exact times, so an attempt is released at the first tick after
        its time: at most one interval late, never early.
        """
        self._install_signal_handlers()
        registered = False
        try:
            while True:
                try:
                    if not registered:
                        self.register_birth()
                        registered = True
                    self.heartbeat()
                    if self.acquire_lock():
                        try:
                            self.enqueue_jobs()
                        finally:
                            self.remove_lock()
                        if burst:
                            break
                except RedisError as exc:
                    logger.warning("scheduler: Redis unreachable (%s); retrying in 1 s", exc)
                    time.sleep(1)
                    continue
                interval = max(float(self._interval), 0.05)
                time.sleep(interval - (time.time() % interval) + 0.005)
        finally:
            with contextlib.suppress(RedisError):
                self.remove_lock()
                self.register_death()

    def enqueue_jobs(self) -> list[str]:
        """Release every due attempt: one DB decision for all of them, then the enqueues."""
        now = time.time()
        due_ids = [
            x.decode() for x in self.connection.zrangebyscore(self.scheduled_jobs_key, 0, now)
        ]
        ours = {rq_id: parse_rq_job_id(rq_id) for rq_id in due_ids}
        for rq_id in (rq_id for rq_id, parsed in ours.items() if parsed is None):
            job = (
                RQJob.fetch(rq_id, connection=self.connection)
                if RQJob.exists(rq_id, self.connection)
                else None
            )
            if job is None:
                self.connection.zrem(self.scheduled_jobs_key, rq_id)
            else:
                super().enqueue_job(job)  # not a delivery attempt: plain rq-scheduler behaviour
        attempts = {parsed: rq_id for rq_id, parsed in ours.items() if parsed is not None}
        if not attempts:
            return due_ids
        try:
            decisions = self._on_due(list(attempts))
        except Exception:
            # Leave them scheduled: the next tick tries again (e.g. the DB was briefly down).
            logger.exception(
                "could not decide on %d due attempts; retrying next tick", len(attempts)
            )
            return []
        released = [attempts[key] for key, decision in decisions.items() if decision is True]
        jobs = dict(
            zip(released, RQJob.fetch_many(released, connection=self.connection), strict=True)
        )
        queue = Queue(self.queue_name, connection=self.connection)
        pipe = self.connection.pipeline()
        for key, decision in decisions.items():
            rq_id = attempts[key]
            if decision is True:
                if jobs[rq_id] is None:
                    # Its RQ job vanished (Redis lost it): the job is DISPATCHED in the DB and
                    # the reconciler re-enqueues DISPATCHED jobs that Redis does not hold.
                    logger.warning("due attempt %s has no RQ job; left to the reconciler", rq_id)
                else:
                    # One pipelined round trip per job inside RQ (it WATCHes for dependencies,
                    # so it cannot share our pipeline).
                    queue.enqueue_job(jobs[rq_id])
                pipe.zrem(self.scheduled_jobs_key, rq_id)
            elif decision is False:
                # Only leave the schedule: the RQ job hash may belong to a copy another actor
                # (a PATCH to now, the reconciler) has just queued under the same id.
                pipe.zrem(self.scheduled_jobs_key, rq_id)
            else:
                pipe.zadd(self.scheduled_jobs_key, {rq_id: decision.timestamp()})
        pipe.execute()
        return due_ids

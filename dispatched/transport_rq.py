"""The rq-scheduler transport backend: the only code that talks to RQ and rq-scheduler.

Implements the functions of ``transport`` (the seam callers use):

- timed attempts are members ``<jobId>-<attempt>`` of rq-scheduler's sorted set, scored with
  their exact due time (about 100 bytes each; no RQ job exists until they are released);
- jobs dispatched for now are pulled by a worker, not released by the loop: the first
  dispatch of a project sets a mark ``dispatched:due:<project>`` (``SET NX``, a few seconds'
  life) and enqueues one RQ job ``dispatched.delivery.deliver_due([project])``; the worker
  that takes it deletes the mark (``due_taken``) and releases and claims the project's due
  attempts into its own threads in one transaction. While a pull is pending, further
  dispatches of the project add nothing to Redis but the mark check: the pull takes them too;
- other attempts due now (a replay, a reschedule to now) push their project id on a wake
  list, so the loop releases them within milliseconds instead of at its next tick;
- the release loop is rq-scheduler's ``Scheduler`` (its lock keeps one active across
  processes) with our ``run``: it sleeps until the earliest due attempt, a wake-up or
  ``interval``, asks the job service what to release (``on_tick``), and hands each released
  group to the workers as one RQ job ``dispatched.delivery.deliver_batch(holder, attempts)``;
- a dashboard test event is one RQ job ``dispatched.delivery.deliver_test_event(project_id,
  event_id)`` on the same queue, discarded by RQ if no worker takes it in time;
- due callbacks (DESIGN.md §11) are RQ jobs ``dispatched.delivery.deliver_callbacks(ids)``.

Tasks are enqueued by dotted name, so nothing here imports the task modules.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry
from rq.utils import utcparse
from rq_scheduler import Scheduler

from . import redis_client
from .ids import new_id
from .transport import AttemptRef, Group, OnTick, TransportUnavailable

logger = logging.getLogger(__name__)

DELIVER_BATCH_TASK = "dispatched.delivery.deliver_batch"
DELIVER_TEST_EVENT_TASK = "dispatched.delivery.deliver_test_event"
DELIVER_CALLBACKS_TASK = "dispatched.delivery.deliver_callbacks"
DELIVER_DUE_TASK = "dispatched.delivery.deliver_due"
#: A project with a pull pending (``admit``); deleted by the worker that takes the pull.
DUE_KEY = "dispatched:due:{}"
#: Life of that mark (s): a pull lost with Redis or with its worker blocks new pulls of the
#: project this long at most (the reconciler releases what it left due meanwhile).
DUE_TTL = 5
#: rq-scheduler's sorted set of timed attempts (score: the exact due time, Unix seconds).
SCHEDULED_KEY = Scheduler.scheduled_jobs_key
#: Project ids with an attempt due now (pushed by the API, popped by the release loop).
WAKE_KEY = "dispatched:wake"
#: Redis checks blocking-command timeouts every 1/hz seconds (hz 10 by default).
REDIS_TICK = 0.11
#: Keep failed RQ jobs (a bug in the task, not a failed delivery) for a week for inspection.
FAILURE_TTL = 7 * 24 * 3600
#: Lifetime of the release lock (rq-scheduler's ``rq:scheduler_lock``; its own is the interval
#: + 10 s). A scheduler killed during a pass (SIGKILL, its node gone) blocks the others this
#: long at most, so a survivor takes over within LOCK_TTL + one interval. A pass that outlives
#: it is harmless: every release is a compare-and-set in SQL, and the lock it no longer holds
#: is left to whoever took it.
LOCK_TTL = 5
#: Delete the lock only if it is still ours (compare-and-delete, atomic in Redis).
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
#: A hand-over job a worker started this long ago is presumed dead with its worker: the task
#: only claims its attempts (milliseconds) and gives them to the worker's threads.
HAND_OVER_STALE = 10
#: RQ's limit on one hand-over task: it only claims its attempts and gives them to the
#: worker's threads (the HTTP requests run after it returned), so it is short.
HAND_OVER_TIMEOUT = 60


def connection() -> Redis:
    return redis_client.connection()


def queue_name() -> str:
    return current_app.config["DELIVERY_QUEUE"]


def rq_job_id(job_id: str, attempt: int) -> str:
    return f"{job_id}-{attempt}"


def parse_rq_job_id(rq_id: str) -> AttemptRef | None:
    """Split ``<jobId>-<attempt>`` back into its parts (None if it is not one of ours)."""
    job_id, _, attempt = rq_id.rpartition("-")
    return (job_id, int(attempt)) if job_id.startswith("job_") and attempt.isdigit() else None


def _queue(conn: Redis | None = None) -> Queue:
    return Queue(queue_name(), connection=conn or connection())


def _unavailable(exc: RedisError) -> TransportUnavailable:
    return TransportUnavailable(str(exc))


def _task(func: str, args: tuple[Any, ...], job_id: str, description: str, **extra: Any) -> Any:
    """An RQ job for a delivery worker: short (HAND_OVER_TIMEOUT: it only hands work to the
    engine's threads), no result kept, a failure kept for inspection."""
    return Queue.prepare_data(
        func,
        args=args,
        job_id=job_id,
        timeout=HAND_OVER_TIMEOUT,
        result_ttl=0,
        failure_ttl=FAILURE_TTL,
        description=description,
        **extra,
    )


def hand_over(groups: list[Group], timeout: int) -> None:
    """Enqueue one RQ job per group, all in one pipeline."""
    del timeout  # the HTTP timeout is the worker's business; the hand-over itself is short
    try:
        queue = _queue()
        datas = []
        for holder, refs in groups:
            rq_id = holder.removeprefix("rq:") if holder else new_id("hand")
            datas.append(
                _task(
                    DELIVER_BATCH_TASK,
                    (holder, [list(ref) for ref in refs]),
                    rq_id,
                    f"deliver {len(refs)} attempts",
                )
            )
        queue.enqueue_many(datas)
    except RedisError as exc:
        raise _unavailable(exc) from exc


def send_test_event(project_id: int, event_id: str, queue_ttl: int) -> None:
    """Enqueue the test event's RQ job (RQ drops it after ``queue_ttl`` s in the queue)."""
    try:
        _queue().enqueue_many(
            [
                _task(
                    DELIVER_TEST_EVENT_TASK,
                    (project_id, event_id),
                    event_id,
                    f"test event {event_id} of project {project_id}",
                    ttl=queue_ttl,
                )
            ]
        )
    except RedisError as exc:
        raise _unavailable(exc) from exc


def send_callbacks(callback_ids: list[str]) -> None:
    """Enqueue one RQ job that has a worker send these callbacks (DESIGN.md §11)."""
    try:
        _queue().enqueue_many(
            [
                _task(
                    DELIVER_CALLBACKS_TASK,
                    (list(callback_ids),),
                    new_id("hand"),
                    f"send {len(callback_ids)} callbacks",
                )
            ]
        )
    except RedisError as exc:
        raise _unavailable(exc) from exc


def wake(project_id: int) -> None:
    try:
        connection().lpush(WAKE_KEY, project_id)
    except RedisError as exc:
        raise _unavailable(exc) from exc


def admit(
    due: Collection[int],
    timed: Sequence[tuple[AttemptRef, datetime]],
    also: Callable[[Any], None] | None = None,
) -> None:
    """One pipeline: mark the projects with attempts due now (``SET NX``), add the timed
    attempts to the sorted set at their exact times, then whatever ``also`` adds. For each
    project whose mark was new, one more round trip enqueues the RQ job that pulls them.

    If that second round trip fails, the marks expire within DUE_TTL and the caller flags the
    jobs for the reconciler, which releases them through the loop."""
    due = list(due)
    try:
        conn = connection()
        pipe = conn.pipeline(transaction=False)
        for project_id in due:
            pipe.set(DUE_KEY.format(project_id), 1, nx=True, ex=DUE_TTL)
        if timed:
            pipe.zadd(
                SCHEDULED_KEY,
                {rq_job_id(job_id, attempt): when.timestamp() for (job_id, attempt), when in timed},
            )
        if also is not None:
            also(pipe)
        marked = pipe.execute()[: len(due)]
        fresh = [project_id for project_id, new in zip(due, marked, strict=True) if new]
        if fresh:
            _queue(conn).enqueue_many(
                [
                    _task(
                        DELIVER_DUE_TASK,
                        (fresh,),
                        new_id("hand"),
                        f"pull the due attempts of project {fresh[0]}",
                    )
                ]
            )
    except RedisError as exc:
        raise _unavailable(exc) from exc


def due_taken(project_ids: Collection[int]) -> None:
    """Delete the projects' pull marks (one round trip)."""
    try:
        connection().delete(*(DUE_KEY.format(project_id) for project_id in project_ids))
    except RedisError as exc:
        raise _unavailable(exc) from exc


def schedule_at(job_id: str, attempt: int, when: datetime, timeout: int) -> None:
    """Put the attempt in rq-scheduler's sorted set at its exact time."""
    del timeout
    try:
        connection().zadd(SCHEDULED_KEY, {rq_job_id(job_id, attempt): when.timestamp()})
    except RedisError as exc:
        raise _unavailable(exc) from exc


def unschedule(job_id: str, attempt: int) -> None:
    """Remove the attempt from the sorted set (and any RQ job an older version made for it)."""
    rq_id = rq_job_id(job_id, attempt)
    try:
        conn = connection()
        conn.zrem(SCHEDULED_KEY, rq_id)
        _queue(conn).remove(rq_id)
        with contextlib.suppress(NoSuchJobError):
            RQJob.fetch(rq_id, connection=conn).delete(remove_from_queue=False)
    except RedisError as exc:
        raise _unavailable(exc) from exc


def scheduled_time(job_id: str, attempt: int) -> float | None:
    try:
        return connection().zscore(SCHEDULED_KEY, rq_job_id(job_id, attempt))
    except RedisError as exc:
        raise _unavailable(exc) from exc


def held(attempts: list[AttemptRef]) -> set[AttemptRef]:
    """Which attempts are in the sorted set (pipelined)."""
    try:
        pipe = connection().pipeline(transaction=False)
        for job_id, attempt in attempts:
            pipe.zscore(SCHEDULED_KEY, rq_job_id(job_id, attempt))
        scores = pipe.execute()
    except RedisError as exc:
        raise _unavailable(exc) from exc
    return {ref for ref, score in zip(attempts, scores, strict=True) if score is not None}


def live_holders(holders: list[str]) -> set[str]:
    """Holders whose RQ job still waits in the queue, or was started by a worker moments ago.

    A worker killed (SIGKILL, its node gone) after taking a hand-over job leaves it "queued"
    in RQ's intermediate list, or "started", for good; its attempts must not wait for RQ's own
    cleanup (minutes). Judging one gone early is harmless: its worker's claim is a
    compare-and-set on the holder, so the attempts are sent once.
    """
    try:
        conn = connection()
        pipe = conn.pipeline(transaction=False)
        queue_key = _queue(conn).key
        for holder in holders:
            rq_id = holder.removeprefix("rq:")
            pipe.hmget(RQJob.key_for(rq_id), "status", "started_at")
            pipe.lpos(queue_key, rq_id)
        answers = pipe.execute()
    except RedisError as exc:
        raise _unavailable(exc) from exc
    alive = set()
    now = time.time()
    for holder, (status, started_at), position in zip(
        holders, answers[::2], answers[1::2], strict=True
    ):
        waiting = status == RQStatus.QUEUED.value.encode() and position is not None
        running = (
            status == RQStatus.STARTED.value.encode()
            and started_at
            and now - utcparse(started_at.decode()).timestamp() < HAND_OVER_STALE
        )
        if waiting or running:
            alive.add(holder)
    return alive


def depth() -> dict[str, int]:
    """Hand-over jobs waiting and running, attempts scheduled for later."""
    try:
        conn = connection()
        queue = _queue(conn)
        return {
            "queued": queue.count,
            "scheduled": conn.zcard(SCHEDULED_KEY),
            "started": StartedJobRegistry(queue=queue).count,
        }
    except RedisError as exc:
        raise _unavailable(exc) from exc


def ping() -> None:
    try:
        connection().ping()
    except RedisError as exc:
        raise _unavailable(exc) from exc


def run_scheduler(on_tick: OnTick, interval: float, burst: bool = False) -> None:
    """Run the release loop (ReleaseScheduler) in this process until stopped."""
    ReleaseScheduler(
        queue_name=queue_name(), connection=connection(), interval=interval, on_tick=on_tick
    ).run(burst=burst)


class ReleaseScheduler(Scheduler):
    """rq-scheduler's Scheduler with an event-driven loop that releases through the job service.

    Each pass: pop the wake list, read the due members of the sorted set, ask ``on_tick`` (one
    DB decision for all of them), then in one pipeline drop/keep the sorted-set members and
    enqueue the released groups. Between passes it blocks on the wake list until the earliest
    due attempt, the service's ``next_wake`` or ``interval``, whichever comes first.
    """

    def __init__(self, *args: object, on_tick: OnTick, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._on_tick = on_tick
        self._next_wake: float | None = None

    def run(self, burst: bool = False) -> None:
        """Loop until SIGTERM/SIGINT; survive Redis outages (wait for Redis, never exit)."""
        self._install_signal_handlers()
        registered = False
        woken: set[int] = self._drain_wakes() if burst else set()
        try:
            while True:
                try:
                    if not registered:
                        self.register_birth()
                        registered = True
                    self.heartbeat()
                    if self.acquire_lock():
                        try:
                            self.release(woken)
                        finally:
                            self.remove_lock()
                        woken = set()
                        if burst:
                            break
                    woken |= self._wait()
                except (RedisError, TransportUnavailable) as exc:
                    # Released attempts whose hand-over failed stay DISPATCHED with a holder
                    # Redis never saw: the reconciler hands them back to QUEUED.
                    logger.warning("scheduler: Redis unreachable (%s); retrying in 1 s", exc)
                    time.sleep(1)
        finally:
            with contextlib.suppress(RedisError):
                self.remove_lock()
                self.register_death()

    def acquire_lock(self) -> bool:
        """Take the release lock for one pass; its value names this scheduler (``<host>:<pid>:
        <name>``), so operators (and the multi-node test) can see which one is releasing."""
        self._lock_token = f"{socket.gethostname()}:{os.getpid()}:{self.name}"
        self._lock_acquired = bool(
            self.connection.set(self.scheduler_lock_key, self._lock_token, ex=LOCK_TTL, nx=True)
        )
        return self._lock_acquired

    def remove_lock(self) -> None:
        """Release the lock if this scheduler still holds it."""
        if self._lock_acquired:
            self._lock_acquired = False
            self.connection.eval(_UNLOCK, 1, self.scheduler_lock_key, self._lock_token)

    def _wait(self) -> set[int]:
        """Block until something may be due; return the project ids that were woken.

        A wake-up (a job due now) ends the wait at once. Redis serves blocking timeouts on its
        ``hz`` clock (100 ms by default), so a wait for a due time blocks until ~0.1 s before
        it and sleeps the rest: an attempt is released at its time, not up to 100 ms after.
        """
        now = time.time()
        until = now + max(float(self._interval), 0.01)
        precise = False
        first = self.connection.zrange(SCHEDULED_KEY, 0, 0, withscores=True)
        if first and first[0][1] < until:
            until, precise = first[0][1], True
        if self._next_wake is not None and self._next_wake < until:
            until, precise = self._next_wake, True
        blocking = until - now - (REDIS_TICK if precise else 0.0)
        woken: set[int] = set()
        if blocking >= 0.01:
            popped = self.connection.brpop([WAKE_KEY], timeout=blocking)
            if popped:
                woken.add(int(popped[1]))
        if not woken and precise and until > time.time():
            time.sleep(until - time.time())
        return woken | self._drain_wakes()

    def _drain_wakes(self) -> set[int]:
        return {int(x) for x in self.connection.rpop(WAKE_KEY, 1000) or []}

    def release(self, woken: set[int]) -> None:
        """One pass: decide on due attempts and woken projects, then apply it in Redis."""
        now = time.time()
        due_ids = [x.decode() for x in self.connection.zrangebyscore(SCHEDULED_KEY, 0, now)]
        ours = {rq_id: parse_rq_job_id(rq_id) for rq_id in due_ids}
        for rq_id in (rq_id for rq_id, ref in ours.items() if ref is None):
            self._plain_rq_scheduler(rq_id)
        attempts = {ref: rq_id for rq_id, ref in ours.items() if ref is not None}
        try:
            tick = self._on_tick(list(attempts), woken)
        except Exception:
            # Leave everything in place: the next pass tries again (e.g. the DB was down).
            logger.exception("could not release %d due attempts; retrying", len(attempts))
            self._next_wake = now + 1
            return
        self._next_wake = tick.next_wake.timestamp() if tick.next_wake else None
        pipe = self.connection.pipeline()
        for ref, decision in tick.decisions.items():
            if isinstance(decision, datetime):
                pipe.zadd(SCHEDULED_KEY, {attempts[ref]: decision.timestamp()})
            else:
                pipe.zrem(SCHEDULED_KEY, attempts[ref])
        pipe.execute()
        if tick.groups:
            hand_over(tick.groups, 0)

    def _plain_rq_scheduler(self, rq_id: str) -> None:
        """A member that is not an attempt: rq-scheduler's own behaviour."""
        if RQJob.exists(rq_id, self.connection):
            super().enqueue_job(RQJob.fetch(rq_id, connection=self.connection))
        else:
            self.connection.zrem(SCHEDULED_KEY, rq_id)

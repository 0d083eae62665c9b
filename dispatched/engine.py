"""The in-process delivery engine of a worker process (DESIGN.md §9).

A worker process keeps up to ``DELIVERY_CONCURRENCY`` deliveries in flight on a pool of
threads: a delivery is I/O (connect, send, wait for the endpoint), so threads share one
process's memory and its pooled connections (keep-alive per host) instead of a process each.
The bookkeeping is batched:

- a job dispatched for now reaches a worker as an RQ task naming its project: the engine
  releases and claims the project's due attempts for its free threads in one transaction
  (``jobs.pull``) and sends them, with no release-loop hop;
- the release loop's RQ task hands the engine a group of released attempts (timed ones, and
  what a pull left); ``jobs.claim`` starts them all in one transaction and the threads send
  them;
- a process holds half as many attempts again as it has threads (``prefetch``): the next ones in
  line, so a thread that finishes a delivery starts another at once instead of idling while
  the recorder's database cycle concludes the batch and claims replacements (10-30 ms, a tenth
  of a 200 ms request). Only the recorder fills the line, with the next attempts of the
  projects whose deliveries just finished, and only of projects with budget left under their
  parallelism (``jobs.release.line_shares``: a project near its cap sends from idle threads,
  here or in another process, rather than wait here); new work from RQ is taken only for
  free threads.
  A project's parallelism counts them, so its receiver never sees more than its cap; their
  lateness is measured when they are sent;
- a recorder thread concludes finished attempts in batches and, in the same transaction,
  releases and claims the same projects' next due attempts straight into this process
  (``jobs.conclude_and_continue``; work-conserving: a finishing delivery starts the next one
  at once, with no scheduler hop and no RQ job);
- a dashboard test event (``test_events``) is sent on the same threads with its plan's
  delivery timeout; its answer goes to Redis for the webhook page, not to the job tables;
- callbacks (``callbacks``, DESIGN.md §11) are sent on the same threads too: those a batch's
  outcomes create, at once; due retries when the reconciler hands them over;
- a heartbeat thread refreshes the process's ``worker_processes`` row, so the reconciler fails
  over the attempts of a dead process within seconds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from . import callbacks, clock, jobs, metrics, outbound, signing, test_events, workers
from .jobs.attempts import Delivery, Finished

logger = logging.getLogger(__name__)

#: Most finished attempts concluded in one transaction.
RECORD_BATCH = 200

#: Safety margin (s; at most half the grace) under the reconciler's stuck-request limit (plan
#: timeout + WORKER_LOST_GRACE from the claim) for an attempt that waited in line for a thread.
STUCK_MARGIN = 2.0


def prefetch(threads: int) -> int:
    """Attempts claimed beyond the threads: half as many, at least 2 (see the module)."""
    return max(2, threads // 2)


_current: DeliveryEngine | None = None


def current() -> DeliveryEngine | None:
    """The engine of this process, if a delivery worker started one."""
    return _current


class DeliveryEngine:
    """Threads sending deliveries, one recorder, one heartbeat.

    ``threads`` (DELIVERY_CONCURRENCY) requests are in flight at most; ``capacity`` (threads +
    ``prefetch``) attempts are held at most: claimed, sending or next in line."""

    def __init__(self, app: Flask, threads: int | None = None) -> None:
        self.app = app
        self.threads = threads or app.config["DELIVERY_CONCURRENCY"]
        self.capacity = self.threads + prefetch(self.threads)
        self.worker_id = workers.new_id()
        self.allow_private = app.config["ALLOW_PRIVATE_WEBHOOKS"]
        self.allow_http = app.config["ALLOW_HTTP_WEBHOOKS"]
        grace = app.config["WORKER_LOST_GRACE"]
        self.stuck_after = grace - min(STUCK_MARGIN, grace / 2)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="delivery")
        self._results: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._room = threading.Condition()
        self._in_flight = 0
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._record_loop, name="recorder", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
        ]

    # --- life ------------------------------------------------------------------------------

    def start(self) -> DeliveryEngine:
        global _current
        # The connection pools and their TLS context (a CA bundle to load) are made now, not
        # by the first delivery, which would start that much late.
        outbound.manager(self.allow_private)
        with self.app.app_context():
            # The scheduler hands over work for threads, not for the line (see ``free``).
            workers.register(self.worker_id, self.threads)
        for thread in self._threads:
            thread.start()
        _current = self
        logger.info(
            "delivery engine %s: %d deliveries in flight at most (%d more claimed, next in line)",
            self.worker_id,
            self.threads,
            self.capacity - self.threads,
        )
        return self

    def drain(self, timeout: float) -> bool:
        """Stop taking work, wait for the deliveries in flight (at most ``timeout`` s), stop.

        Returns whether everything finished; what did not is failed over by the reconciler.
        """
        global _current
        self._stopping.set()
        deadline = time.monotonic() + timeout
        with self._room:
            while self._in_flight and time.monotonic() < deadline:
                self._room.wait(0.2)
            drained = self._in_flight == 0
        self._stopped.set()
        for thread in self._threads:
            thread.join(5)
        self._pool.shutdown(wait=drained, cancel_futures=True)
        if drained:
            with self.app.app_context():
                workers.unregister(self.worker_id)
        else:
            logger.warning(
                "engine %s stopped with %d deliveries in flight", self.worker_id, self._in_flight
            )
        if _current is self:
            _current = None
        return drained

    # --- capacity --------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def free(self) -> int:
        """Attempts the recorder may still claim: threads + line, less what is held."""
        return 0 if self._stopping.is_set() else self.capacity - self._in_flight

    def free_threads(self) -> int:
        """Threads with nothing to send and nothing in line for them. New work (an RQ
        hand-over) is taken only into these: a process whose threads are all busy with a slow
        endpoint must leave other projects' attempts to an idle process, not queue them in its
        line. The line is filled by the recorder, with the next attempts of the projects whose
        deliveries just finished here."""
        return 0 if self._stopping.is_set() else self.threads - self._in_flight

    def wait_for_room(self, needed: int, timeout: float) -> bool:
        """Block until ``needed`` threads are free (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        with self._room:
            while self.free_threads() < needed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._room.wait(left)
        return True

    # --- work --------------------------------------------------------------------------------

    def run(self, holder: str | None, refs: list[tuple[str, int]]) -> int:
        """Claim a group of released attempts (in the caller's app context) and send them."""
        deliveries = jobs.claim(holder, refs, self.worker_id)
        for delivery in deliveries:
            self._submit(delivery)
        return len(deliveries)

    def pull(self, project_ids: list[int]) -> int:
        """Release and claim the projects' due attempts into this process's free threads (in
        the caller's app context; ``jobs.pull``) and send them."""
        deliveries = jobs.pull(project_ids, self.worker_id, self.free_threads())
        for delivery in deliveries:
            self._submit(delivery)
        return len(deliveries)

    def _submit(self, delivery: Delivery) -> None:
        with self._room:
            self._in_flight += 1
        self._pool.submit(self._deliver, delivery, time.monotonic())

    def _timeout(self, delivery: Delivery, claimed: float) -> float:
        """The plan's delivery timeout, unless the attempt waited so long in line for a thread
        that a full timeout would outlast the reconciler's stuck-request limit (plan timeout +
        WORKER_LOST_GRACE from the claim) and get it failed over while it is still being sent;
        then what is left of that limit (all threads busy with slow endpoints for ~13 s)."""
        waited = time.monotonic() - claimed
        if waited <= self.stuck_after:
            return delivery.timeout
        left = max(1.0, delivery.timeout + self.stuck_after - waited)
        logger.warning(
            "job %s attempt %d waited %.1fs for a delivery thread: timeout %.1fs instead of %ds",
            delivery.job_id,
            delivery.attempt_number,
            waited,
            left,
            delivery.timeout,
        )
        return left

    def _deliver(self, delivery: Delivery, claimed: float) -> None:
        """Send one attempt (a pool thread; no database here) and queue its result."""
        try:
            early = (delivery.not_before - clock.utcnow()).total_seconds()
            if early > 0:  # at most MAX_EARLY_SECONDS: jobs.claim hands back anything earlier
                time.sleep(early)
            started = clock.utcnow()
            lateness_ms = int((started - delivery.not_before).total_seconds() * 1000)
            if delivery.url:
                body, headers = signing.delivery_request(
                    delivery.secrets,
                    delivery.job_id,
                    delivery.attempt_id,
                    delivery.attempt_number,
                    delivery.payload,
                    bearer_token=delivery.bearer_token,
                    timestamp=int(time.time()),
                    user_agent=outbound.USER_AGENT,
                )
                result = outbound.post(
                    delivery.url,
                    body,
                    headers,
                    self._timeout(delivery, claimed),
                    self.allow_private,
                    allow_http=self.allow_http,
                )
            else:
                result = outbound.Result(
                    "error", 0, error="the project has no webhook URL configured"
                )
        except Exception as exc:  # a bug here must still conclude the attempt, not strand it
            logger.exception(
                "job %s attempt %d: delivery crashed", delivery.job_id, delivery.attempt_number
            )
            result, lateness_ms = (
                outbound.Result("error", 0, error=f"internal error: {exc!r}"),
                None,
            )
        self._results.put(Finished(delivery, result, lateness_ms))

    def send_test_event(self, project_id: int, event_id: str) -> bool:
        """Sign a waiting test event (in the caller's app context) and send it on a thread."""
        outgoing = test_events.prepare(project_id, event_id)
        if outgoing is None:
            return False
        with self._room:
            self._in_flight += 1
        self._pool.submit(self._send_test_event, outgoing)
        return True

    def _send_test_event(self, outgoing: test_events.Outgoing) -> None:
        """POST a test event (a pool thread) and keep the answer for the dashboard."""
        try:
            result = outbound.post(
                outgoing.url,
                outgoing.body,
                outgoing.headers,
                outgoing.timeout,
                self.allow_private,
                allow_http=self.allow_http,
            )
        except Exception as exc:  # a bug here must still answer the page, not leave it waiting
            logger.exception("test event %s: sending crashed", outgoing.event_id)
            result = outbound.Result("error", 0, error=f"internal error: {exc!r}")
        logger.info(
            "test event %s of project %d → %s%s in %sms",
            outgoing.event_id,
            outgoing.project_id,
            result.outcome,
            f" (HTTP {result.http_status})" if result.http_status else "",
            result.duration_ms,
        )
        try:
            with self.app.app_context():
                test_events.record(outgoing.project_id, outgoing.event_id, result)
        except Exception:
            # Only the dashboard's view of it is lost: the page reports it as not answered.
            logger.exception("test event %s: could not keep the answer", outgoing.event_id)
        finally:
            with self._room:
                self._in_flight -= 1
                self._room.notify_all()

    def _record_loop(self) -> None:
        with self.app.app_context():
            while not (self._stopped.is_set() and self._results.empty()):
                try:
                    batch = [self._results.get(timeout=0.2)]
                except queue.Empty:
                    continue
                while len(batch) < RECORD_BATCH:
                    try:
                        batch.append(self._results.get_nowait())
                    except queue.Empty:
                        break
                self._record(batch)

    def _record(self, batch: list[Finished]) -> None:
        """Conclude a batch and start the same projects' next due attempts in this process, in
        one transaction (``jobs.conclude_and_continue``); retried while the DB is down: a result
        is never dropped."""
        while True:
            # The batch's slots stay counted until its replacements are claimed, so the RQ
            # thread cannot take work into room this cycle is about to fill.
            room = self.free() + len(batch) if not self._stopping.is_set() else 0
            # Of which in the line, not free threads (``jobs.release.line_shares``).
            line = max(0, room - max(0, self.threads - (self._in_flight - len(batch))))
            try:
                statuses, deliveries = jobs.conclude_and_continue(batch, self.worker_id, room, line)
                break
            except Exception:
                logger.exception("could not record %d results; retrying in 1 s", len(batch))
                time.sleep(1)
        # Callbacks (DESIGN.md §11) start before this batch leaves in_flight: a drain waits too.
        self._send_new_callbacks(batch, statuses)
        with self._room:
            self._in_flight += len(deliveries) - len(batch)
            self._room.notify_all()
        claimed = time.monotonic()
        for delivery in deliveries:
            self._pool.submit(self._deliver, delivery, claimed)
        metrics.observe_attempts(
            [
                (
                    f.result.outcome,
                    None if f.result.duration_ms is None else f.result.duration_ms / 1000,
                    None if f.lateness_ms is None else f.lateness_ms / 1000,
                )
                for f in batch
            ]
        )
        for f in batch:
            d, r = f.delivery, f.result
            logger.info(
                "job %s attempt %d → %s%s in %sms (late %sms) → %s",
                d.job_id,
                d.attempt_number,
                r.outcome,
                f" (HTTP {r.http_status})" if r.http_status else "",
                r.duration_ms,
                f.lateness_ms,
                statuses.get(d.job_id) or "superseded",
            )

    # --- callbacks (DESIGN.md §11; the rules are in ``callbacks``) ------------------------------

    def run_callbacks(self, callback_ids: list[str]) -> int:
        """Claim due callbacks (in the caller's app context) and send them on the threads."""
        return self._send_callbacks(callbacks.claim(self.worker_id, ids=callback_ids))

    def _send_new_callbacks(self, batch: list[Finished], statuses: dict[str, str | None]) -> None:
        """Send the callbacks this batch's outcomes created (``jobs.conclude_and_continue``) now."""
        job_ids = callbacks.wanted(batch, statuses)
        if not job_ids:
            return
        try:
            self._send_callbacks(callbacks.claim(self.worker_id, job_ids=job_ids))
        except Exception:
            # Harmless: they are pending in SQL and the reconciler hands them over later.
            logger.exception("could not claim the callbacks of %d jobs", len(job_ids))

    def _send_callbacks(self, outgoing: list[callbacks.Outgoing]) -> int:
        for item in outgoing:
            with self._room:
                self._in_flight += 1
            self._pool.submit(self._send_callback, item)
        return len(outgoing)

    def _send_callback(self, item: callbacks.Outgoing) -> None:
        """POST one callback (a pool thread) and record the answer."""
        try:
            result = outbound.post(
                item.url,
                item.body,
                item.headers(int(time.time()), outbound.USER_AGENT),
                item.timeout,
                self.allow_private,
                allow_http=self.allow_http,
            )
        except Exception as exc:  # a bug here must still record an attempt, not strand it
            logger.exception("callback %s: sending crashed", item.id)
            result = outbound.Result("error", 0, error=f"internal error: {exc!r}")
        try:
            with self.app.app_context():
                callbacks.record(item, result, self.worker_id)
        except Exception:
            # It stays "sending": the reconciler counts the attempt as lost and retries it.
            logger.exception("callback %s: could not record the answer", item.id)
        finally:
            with self._room:
                self._in_flight -= 1
                self._room.notify_all()

    def _heartbeat_loop(self) -> None:
        interval = self.app.config["WORKER_HEARTBEAT"]
        with self.app.app_context():
            while not self._stopped.wait(interval):
                try:
                    workers.beat(self.worker_id, self._in_flight, self._stopping.is_set())
                except Exception:
                    logger.exception("heartbeat failed; retrying")

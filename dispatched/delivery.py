"""The delivery task run by RQ workers: load → CAS → sign → POST → record → next step.

Enqueued by dotted name (``dispatched.delivery.deliver``) by the transport backend
(``transport_rq``); it takes ids, never ORM objects, and loads fresh state. Every state change
goes through ``jobs``.
"""

from __future__ import annotations

import logging
import time

from flask import current_app

from . import clock, jobs, metrics, outbound, signing

logger = logging.getLogger(__name__)


def deliver(job_id: str, attempt: int) -> str:
    """Deliver attempt ``attempt`` of ``job_id``; return what happened (for RQ's logs)."""
    delivery = jobs.start_attempt(job_id, attempt)
    if delivery is None:
        return "dropped"
    early = (delivery.not_before - clock.utcnow()).total_seconds()
    if early > 0:  # at most MAX_EARLY_SECONDS: start_attempt hands back anything earlier
        time.sleep(min(early, jobs.MAX_EARLY_SECONDS))
    body, headers = signing.delivery_request(
        delivery.secrets,
        delivery.job_id,
        delivery.attempt_id,
        delivery.attempt_number,
        delivery.payload,
        timestamp=int(time.time()),
        bearer=delivery.bearer,
        user_agent=outbound.USER_AGENT,
    )
    lateness = (clock.utcnow() - delivery.not_before).total_seconds()
    if delivery.url:
        result = outbound.post(
            delivery.url,
            body,
            headers,
            delivery.timeout,
            current_app.config["ALLOW_PRIVATE_WEBHOOKS"],
        )
    else:
        result = outbound.Result("error", 0, error="the project has no webhook URL configured")
    status = jobs.finish_attempt(delivery, result)
    metrics.observe_attempt(
        result.outcome,
        None if result.duration_ms is None else result.duration_ms / 1000,
        lateness if attempt == 1 else None,
    )
    logger.info(
        "job %s attempt %d → %s%s in %sms → %s",
        job_id,
        attempt,
        result.outcome,
        f" (HTTP {result.http_status})" if result.http_status else "",
        result.duration_ms,
        status or "superseded",
    )
    return status or "superseded"

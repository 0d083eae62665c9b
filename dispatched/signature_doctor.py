"""The job page's signature doctor: why a receiver refuses this job's deliveries.

The diagnosis itself is the SDK's (``dispatched_sdk.doctor``, the one ``dispatched verify``
runs; dev.py installs the SDK into the venv). The server adds what only it knows: the exact
bytes it sent for the attempt (rebuilt from the job's payload by the same code every attempt
is built with), the project's current and previous signing secrets and its bearer token, and
the time the attempt was sent, so that a delivery pasted hours later is judged as of then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from dispatched_sdk.doctor import Diagnosis, diagnose, parse_header_block

from . import clock, jobs, signing
from .models import Attempt, Job, Project

#: Longest pasted header block / body accepted (characters); a delivery body is at most the
#: plan's payload limit (64 KB on the largest plan) plus its envelope.
MAX_HEADERS = 16_384
MAX_BODY = 131_072


@dataclass
class Report:
    diagnosis: Diagnosis
    #: The attempt the pasted delivery was matched to (by its attemptId, else its time).
    attempt: Attempt | None
    #: What the result means for the user's receiver, in one sentence.
    conclusion: str


def _attempt_for(attempts: list[Attempt], body: bytes, timestamp: str) -> Attempt | None:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        wanted = document.get("attemptId") or document.get("attempt")
        for attempt in attempts:
            if attempt.id == wanted:
                return attempt
    if timestamp.strip().isdigit() and attempts:
        sent = int(timestamp.strip())
        return min(attempts, key=lambda a: abs(a.started_at.timestamp() - sent))
    return attempts[-1] if attempts else None


def sent_body(job: Job, attempt: Attempt) -> bytes:
    """The body Dispatched sent for ``attempt`` (it does not depend on secrets or time)."""
    body, _ = signing.delivery_request(
        (),
        job.id,
        attempt.id,
        attempt.number,
        job.payload,
        timestamp=0,
        bearer_token=None,
        user_agent="",
    )
    return body


def diagnose_pasted(project: Project, job: Job, header_block: str, body_text: str) -> Report:
    """Diagnose a delivery of ``job`` as a receiver got it (pasted headers and body)."""
    headers = parse_header_block(header_block)
    # A textarea sends CRLF line breaks and users paste trailing newlines; a delivery body is
    # one line of JSON with no surrounding whitespace.
    body = body_text.replace("\r\n", "\n").strip().encode("utf-8")
    attempt = _attempt_for(
        jobs.attempts_of(project.id, job.id), body, headers.get("webhook-timestamp", "")
    )
    when: datetime = attempt.started_at if attempt else clock.utcnow()
    diagnosis = diagnose(
        headers,
        body,
        secret=project.webhook_secret,
        previous_secret=project.previous_webhook_secret,
        bearer_token=project.webhook_bearer_token if project.send_bearer else None,
        now=when,
        sent_body=sent_body(job, attempt) if attempt else None,
    )
    return Report(diagnosis, attempt, _conclusion(diagnosis))


def _conclusion(diagnosis: Diagnosis) -> str:
    codes = set(diagnosis.codes)
    if diagnosis.verified:
        return (
            "These headers and body verify with the project's current secret"
            + (" and bearer token" if "BEARER_OK" in codes else "")
            + ": if your receiver refuses them, it verifies with another secret (compare with "
            "the Webhook page), checks the time against a wrong clock, or does not verify these "
            "exact bytes."
        )
    if "BODY_CHANGED" in codes:
        return "Your receiver does not verify the bytes Dispatched sent: see the body finding."
    return "This delivery does not verify: see the findings below."

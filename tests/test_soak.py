"""A one-minute soak of mixed jobs through real processes: every job ends terminal, the counts
add up, and nothing is delivered after its cancellation."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests

from dispatched.extensions import db
from dispatched.models import Attempt, Job
from tests.support import wait_for

pytestmark = pytest.mark.slow

SOAK_SECONDS = 45  # dispatching; draining takes the rest of the minute


def test_one_minute_soak(app, live_server, make_team, receiver, delivery_stack):
    rng = random.Random(1234)
    ok_url = receiver.on("/ok", lambda n: (200, {}, b"", 0.0))
    bad_url = receiver.on("/bad", lambda n: (500, {}, b"", 0.0))
    good, bad = make_team("e2e", webhook_url=ok_url), make_team("e2e", webhook_url=bad_url)
    session = requests.Session()
    expected: dict[str, str] = {}
    cancelled_at: dict[str, float] = {}
    pending_cancel: list[tuple[float, str]] = []
    end = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < end:
        kind = rng.choice(["now", "now", "later", "failing", "cancel"])
        team = bad if kind == "failing" else good
        body: dict = {"payload": {"kind": kind, "r": rng.random()}}
        if kind in ("later", "cancel"):
            body["scheduleFor"] = (
                datetime.now(UTC) + timedelta(seconds=rng.uniform(1, 8))
            ).isoformat()
        if kind == "failing":
            body["maxRetries"] = rng.choice([0, 1, 2])
        r = session.post(
            f"{live_server}/api/jobs/dispatch", json=body, headers=team.headers, timeout=10
        )
        assert r.status_code == 201, r.text
        job_id = r.json()["jobId"]
        expected[job_id] = {"failing": "FAILED", "cancel": "CANCELLED"}.get(kind, "COMPLETED")
        if kind == "cancel":
            pending_cancel.append((time.monotonic() + rng.uniform(0, 0.5), job_id))
        for due, cid in [p for p in pending_cancel if p[0] <= time.monotonic()]:
            pending_cancel.remove((due, cid))
            c = session.delete(f"{live_server}/api/jobs/{cid}", headers=good.headers, timeout=10)
            if c.status_code == 200:
                cancelled_at[cid] = time.time()
            else:  # too late: it was already released; it must then complete normally
                assert c.status_code == 409, c.text
                expected[cid] = "COMPLETED"
        time.sleep(0.05)
    for _, cid in pending_cancel:
        c = session.delete(f"{live_server}/api/jobs/{cid}", headers=good.headers, timeout=10)
        if c.status_code == 200:
            cancelled_at[cid] = time.time()
        else:
            expected[cid] = "COMPLETED"

    def settled() -> bool:
        with app.app_context():
            db.session.rollback()
            live = (
                db.session.query(Job)
                .filter(Job.status.in_(["QUEUED", "DISPATCHED", "STARTED"]))
                .count()
            )
        return live == 0

    wait_for(settled, timeout=60, interval=0.5, message="every soak job to reach a final state")
    time.sleep(1)
    with app.app_context():
        final = {job.id: job.status for job in db.session.query(Job)}
        attempts = Counter(a.job_id for a in db.session.query(Attempt))
    assert final == expected
    counts = Counter(final.values())
    assert sum(counts.values()) == len(expected) > 200
    assert counts["COMPLETED"] and counts["FAILED"] and counts["CANCELLED"]
    deliveries = Counter(r.json["jobId"] for r in receiver.received())
    for job_id, status in final.items():
        if status == "COMPLETED":
            assert deliveries[job_id] == attempts[job_id] == 1
        elif status == "FAILED":
            # maxRetries + 1 attempts, each one a delivery.
            assert deliveries[job_id] == attempts[job_id] >= 1
        else:
            assert deliveries[job_id] == attempts[job_id] == 0
    late = [
        r
        for r in receiver.received()
        if r.json["jobId"] in cancelled_at and r.at > cancelled_at[r.json["jobId"]]
    ]
    assert late == []

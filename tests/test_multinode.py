"""Scale-out, proven (DESIGN.md §15): real processes on this machine standing in for nodes.

Two web processes (gunicorn with the deploy config, the test's client round-robins between
them), two worker groups (``python worker.py``, 2 processes each, each group in its own
process group), two schedulers. The database is a private PostgreSQL cluster of the test's own
(never the machine's shared one), and every app process reaches it through PgBouncer in
transaction pooling mode (``DATABASE_PREPARED_STATEMENTS=0``). While 2,000 jobs (immediate,
scheduled, retrying, failing and slow ones) are dispatched and delivered:

1. worker group A is killed (SIGKILL to its process group) with deliveries in flight: each of
   them is recorded ``worker_lost`` within 30 s and retried by group B;
2. the scheduler holding the release lock is killed: the other one takes over within 10 s;
3. PostgreSQL is restarted (``pg_ctl restart -m fast``: every connection is cut).

Then every job ends in its expected terminal state, exactly once in the database (dispatches
are retried with an Idempotency-Key when a web process answers 5xx), no attempt is delivered
twice, each completed job is delivered once apart from attempts recorded as lost, and no
scheduled job is delivered early.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from redis import Redis

from dispatched import teams
from dispatched.extensions import db
from dispatched.models import Attempt, Job, WorkerProcess
from tests import cluster
from tests.conftest import E2E_ENV, TEST_PLANS, make_app
from tests.support import Processes, Receiver, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: How many jobs of each kind (2,000 in all).
MIX = {"slow": 100, "now": 1000, "later": 500, "flaky": 300, "fail": 100}
#: The first attempt of a slow job hangs this long (its plan's timeout is 40 s).
SLOW_SECONDS = 20.0
LOCK_KEY = "rq:scheduler_lock"


@pytest.fixture()
def private_db():
    """A private PostgreSQL cluster with PgBouncer (transaction mode) in front of it."""
    bindir = cluster.postgres_bindir()
    if bindir is None or not cluster.pgbouncer_available():
        reason = "needs PostgreSQL server binaries and pgbouncer (apt-get install pgbouncer)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    postgres = cluster.PrivatePostgres(bindir).start()
    bouncer = cluster.PgBouncer(postgres).start()
    yield postgres, bouncer
    bouncer.stop()
    postgres.stop()


class Dispatcher:
    """Dispatches over HTTP, round-robin across the web processes, retrying 5xx and refused
    connections with the same Idempotency-Key (so a retry never makes a second job)."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.local = threading.local()
        self.served = Counter()
        self.retries = Counter()
        self.lock = threading.Lock()
        self.counter = itertools.count()

    def dispatch(self, token: str, key: str, body: dict) -> str:
        session = getattr(self.local, "session", None) or requests.Session()
        self.local.session = session
        deadline = time.monotonic() + 90
        while True:
            base = self.bases[next(self.counter) % len(self.bases)]
            try:
                r = session.post(
                    f"{base}/api/jobs/dispatch",
                    json=body,
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                    timeout=15,
                )
                if r.status_code in (200, 201):
                    with self.lock:
                        self.served[base] += 1
                    return r.json()["jobId"]
                assert r.status_code >= 500, r.text  # anything else is a bug, not a blip
                reason = f"HTTP {r.status_code}"
            except requests.ConnectionError as exc:
                reason = type(exc).__name__
            with self.lock:
                self.retries[reason] += 1
            assert time.monotonic() < deadline, f"dispatch {key} kept failing: {reason}"
            time.sleep(0.2)


def worker_pids_by_group(app, groups: dict[str, int]) -> dict[str, set[str]]:
    """Worker ids (``worker_processes``) of each worker group, by their process group."""
    with app.app_context():
        rows = db.session.execute(sa.select(WorkerProcess.id, WorkerProcess.pid)).all()
        db.session.rollback()
    found: dict[str, set[str]] = {name: set() for name in groups}
    for worker_id, pid in rows:
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            continue
        for name, group in groups.items():
            if pgid == group:
                found[name].add(worker_id)
    return found


def started_on(app, worker_ids: set[str], project_id: int) -> set[str]:
    """The project's jobs whose attempt is in flight on one of ``worker_ids``."""
    with app.app_context():
        ids = set(
            db.session.execute(
                sa.select(Job.id).where(
                    Job.project_id == project_id,
                    Job.status == "STARTED",
                    Job.holder.in_(worker_ids),
                )
            ).scalars()
        )
        db.session.rollback()
    return ids


def live_count(app) -> int:
    with app.app_context():
        n = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Job)
            .where(Job.status.in_(["QUEUED", "DISPATCHED", "STARTED"]))
        )
        db.session.rollback()
    return n


def test_two_of_everything_survive_kills_and_a_database_restart(private_db, redis_url, tmp_path):
    postgres, bouncer = private_db
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    rng = random.Random(14)
    timeline: list[tuple[float, str]] = []
    t0 = time.time()

    def note(event: str) -> None:
        timeline.append((time.time() - t0, event))

    # --- the "nodes" ---------------------------------------------------------------------
    env = {
        **os.environ,
        **E2E_ENV,
        "DATABASE_URL": bouncer.url(),
        "DATABASE_PREPARED_STATEMENTS": "0",
        "REDIS_URL": redis_url,
        "PLANS_JSON": json.dumps(TEST_PLANS),
        "PYTHONUNBUFFERED": "1",
        # Production-like failure detection, still quick: dead after 3 missed 2 s heartbeats;
        # a slow result under load is not mistaken for a stuck request.
        "WORKER_HEARTBEAT": "2",
        "WORKER_LOST_GRACE": "15",
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "4",
        "WEB_ACCESS_LOG": "",
    }
    procs = Processes(env, tmp_path)
    receiver = Receiver().start()
    try:
        # The one-shot migration, straight to PostgreSQL (as compose's "migrate" service).
        migrate = procs.start_command(
            "migrate",
            [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
            DATABASE_URL=postgres.url(),
        )
        assert migrate.wait(120) == 0, procs.log("migrate")
        app = make_app(postgres.url(), redis_url, WORKER_HEARTBEAT=2.0)

        seen_slow: set[str] = set()
        seen_flaky: set[str] = set()

        def first_hangs(n: int):
            job_id = receiver.received("/slow")[n - 1].json["jobId"]
            if job_id in seen_slow:
                return 200, {}, b"ok", 0.0
            seen_slow.add(job_id)
            return 200, {}, b"late", SLOW_SECONDS

        def first_fails(n: int):
            job_id = receiver.received("/flaky")[n - 1].json["jobId"]
            if job_id in seen_flaky:
                return 200, {}, b"ok", 0.0
            seen_flaky.add(job_id)
            return 500, {}, b"try again", 0.0

        with app.app_context():
            hooks = {
                "now": ("e2e", receiver.on("/ok", lambda n: (200, {}, b"", 0.0))),
                "flaky": ("e2e", receiver.on("/flaky", first_fails)),
                "fail": ("e2e", receiver.on("/fail", lambda n: (500, {}, b"", 0.0))),
                "slow": ("engine", receiver.on("/slow", first_hangs)),
            }
            kinds = {kind: teams.create_team(kind, *hook) for kind, hook in hooks.items()}
            tokens = {kind: created.api_key for kind, created in kinds.items()}
            slow_project = kinds["slow"].project.id
        tokens["later"] = tokens["now"]

        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        bases = []
        for name in ("web-1", "web-2"):
            port = cluster.free_port()
            procs.start_command(
                name,
                [gunicorn, "--config", "gunicorn.conf.py", "wsgi:app"],
                WEB_BIND=f"127.0.0.1:{port}",
            )
            bases.append(f"http://127.0.0.1:{port}")
        workers = {
            name: procs.start("worker-" + name, "worker.py", WORKER_CONCURRENCY="2").pid
            for name in ("a", "b")
        }
        schedulers = {
            procs.start(name, "scheduler.py").pid: name for name in ("scheduler-1", "scheduler-2")
        }
        for base in bases:
            wait_for(
                lambda base=base: _ready(base), timeout=60, interval=0.2, message=f"{base} ready"
            )
        wait_for(lambda: redis.scard("rq:workers:dispatched") >= 4, timeout=60, message="4 workers")
        wait_for(
            lambda: redis.exists("dispatched:reconciler:epoch"),
            timeout=60,
            message="a reconcile pass",
        )
        note("2 web, 2 worker groups (2 processes each), 2 schedulers up")

        # --- 2,000 jobs, the slow ones first so some are in flight when group A dies ----------
        plan = [("slow", i) for i in range(MIX["slow"])]
        rest = [(kind, i) for kind, count in MIX.items() if kind != "slow" for i in range(count)]
        rng.shuffle(rest)
        plan += rest
        expected = {"now": "COMPLETED", "later": "COMPLETED", "flaky": "COMPLETED"}
        expected |= {"slow": "COMPLETED", "fail": "FAILED"}
        dispatcher = Dispatcher(bases)
        kind_of: dict[str, str] = {}

        def send(item: tuple[str, int]) -> None:
            kind, i = item
            body: dict = {"payload": {"kind": kind, "i": i}}
            if kind == "later":
                due = datetime.now(UTC) + timedelta(seconds=rng.uniform(2, 30))
                body["scheduleFor"] = due.isoformat()
            if kind == "fail":
                body["maxRetries"] = 1
            job_id = dispatcher.dispatch(tokens[kind], f"{kind}-{i}", body)
            kind_of[job_id] = kind

        pool = ThreadPoolExecutor(6, thread_name_prefix="dispatch")
        futures = [pool.submit(send, item) for item in plan]
        note("dispatching 2,000 jobs")

        # --- 1. kill worker group A with deliveries in flight -------------------------------
        wait_for(
            lambda: receiver.in_flight.get("/slow", 0) >= 60,
            timeout=120,
            interval=0.1,
            message="60 slow deliveries in flight",
        )
        groups = worker_pids_by_group(app, workers)
        assert len(groups["a"]) == 2 and len(groups["b"]) == 2, groups
        in_flight_on_a = started_on(app, groups["a"], slow_project)
        assert in_flight_on_a, "group A had nothing in flight"
        procs.kill("worker-a")
        worker_killed_at = time.time()
        note(f"SIGKILL worker group A ({len(in_flight_on_a)} deliveries in flight on it)")

        # --- 2. kill the scheduler holding the release lock ---------------------------------
        time.sleep(3)

        def holder() -> tuple[str, int] | None:
            value = redis.get(LOCK_KEY)
            match = value and re.match(rb"[^:]*:(\d+):", value)
            return (value.decode(), int(match[1])) if match else None

        token, pid = wait_for(holder, timeout=30, interval=0.001, message="a lock holder")
        victim = schedulers[pid]
        procs.kill(victim)
        scheduler_killed_at = time.time()
        orphaned = redis.get(LOCK_KEY) == token.encode()
        survivor_pid = next(p for p in schedulers if p != pid)
        wait_for(
            lambda: (h := holder()) is not None and h[1] == survivor_pid,
            timeout=30,
            interval=0.005,
            message="the other scheduler to take the lock",
        )
        handover = time.time() - scheduler_killed_at
        note(
            f"SIGKILL {victim} (lock {'orphaned' if orphaned else 'already free'}); "
            f"{schedulers[survivor_pid]} releasing {handover:.2f}s later"
        )

        # --- 3. restart PostgreSQL -----------------------------------------------------------
        time.sleep(2)
        started = time.time()
        postgres.restart()
        note(f"PostgreSQL restarted ({time.time() - started:.2f}s)")

        for future in futures:
            future.result(timeout=300)
        pool.shutdown()
        note(f"dispatched {len(kind_of)} jobs; retried {dict(dispatcher.retries)}")
        try:
            wait_for(
                lambda: live_count(app) == 0, timeout=180, interval=1.0, message="all terminal"
            )
        except AssertionError:
            _diagnose(app, redis, procs, schedulers)
            raise
        note("every job terminal")
        time.sleep(1.5)  # nothing more arrives

        # --- what happened --------------------------------------------------------------------
        with app.app_context():
            final = dict(db.session.execute(sa.select(Job.id, Job.status)).all())
            scheduled = dict(db.session.execute(sa.select(Job.id, Job.scheduled_for)).all())
            attempts = db.session.execute(
                sa.select(
                    Attempt.job_id,
                    Attempt.number,
                    Attempt.outcome,
                    Attempt.started_at,
                    Attempt.finished_at,
                    Attempt.lateness_ms,
                    Attempt.error,
                )
            ).all()
            db.session.rollback()
        received = Counter((r.json["jobId"], r.json["attemptNumber"]) for r in receiver.received())
    finally:
        procs.stop_all()
        receiver.stop()
        redis.flushdb()
    for at, event in timeline:
        print(f"{at:7.2f}s  {event}")

    # Every dispatch made exactly one job, and each ended as expected.
    assert len(kind_of) == sum(MIX.values()) == len(final) == 2000
    assert {job_id: final[job_id] for job_id in kind_of} == {
        job_id: expected[kind] for job_id, kind in kind_of.items()
    }
    assert dispatcher.served[bases[0]] >= 600 and dispatcher.served[bases[1]] >= 600

    # No attempt delivered twice; every attempt not lost was delivered exactly once.
    assert max(received.values()) == 1, [k for k, n in received.items() if n > 1][:5]
    by_job: dict[str, list] = {}
    for row in attempts:
        by_job.setdefault(row.job_id, []).append(row)
    # (A lost attempt may have been cut before its request left, or halfway, which the receiver
    # does not record; a connection error may be a reset before the receiver's handler saw it.)
    maybe_unseen = ("worker_lost", "connection_error")
    for row in attempts:
        if row.outcome not in maybe_unseen:
            assert received[(row.job_id, row.number)] == 1, row
    assert set(received) <= {(row.job_id, row.number) for row in attempts}
    for job_id, status in final.items():
        rows = sorted(by_job[job_id], key=lambda r: r.number)
        outcomes = [r.outcome for r in rows]
        answered = [o for o in outcomes if o not in maybe_unseen]
        if status == "COMPLETED":  # delivered once, apart from attempts lost or cut
            assert outcomes[-1] == "success" and outcomes.count("success") == 1, outcomes
        if kind_of[job_id] == "flaky":
            # The receiver fails a job's first request: a lost or cut attempt may have been
            # that request (answered 500 after the worker died), so its retry succeeds.
            cut_first = outcomes[0] in maybe_unseen
            allowed = (
                (["http_error", "success"], ["success"])
                if cut_first
                else (["http_error", "success"],)
            )
            assert answered in allowed, outcomes
        if kind_of[job_id] == "fail":
            assert len(outcomes) == 2 and set(answered) <= {"http_error"}, outcomes
        if kind_of[job_id] == "later":  # never early
            assert rows[0].started_at >= scheduled[job_id], (rows[0], scheduled[job_id])

    # 1. Group A's deliveries in flight were failed over within 30 s, then completed.
    lost = [row for row in attempts if row.outcome == "worker_lost"]
    lost_jobs = {row.job_id for row in lost}
    assert in_flight_on_a <= lost_jobs
    slowest = max(row.finished_at.timestamp() - worker_killed_at for row in lost)
    print(f"worker group failover: {len(lost)} attempts lost, the last {slowest:.1f}s after kill")
    print(Counter(re.sub(r"\d+", "N", row.error or "") for row in lost))
    assert slowest < 30
    assert all(final[job_id] == "COMPLETED" for job_id in in_flight_on_a)

    # 2. The release loop was handed over within 10 s (worst case: the lock was orphaned).
    assert handover < 10, handover
    late = [
        row.lateness_ms
        for row in attempts
        if kind_of[row.job_id] == "later"
        and row.number == 1
        and scheduler_killed_at - 1 <= scheduled[row.job_id].timestamp() <= scheduler_killed_at + 10
    ]
    if late:
        print(f"scheduled jobs due around the scheduler kill: {len(late)}, max lateness "
              f"{max(late)} ms")  # fmt: skip


def _diagnose(app, redis: Redis, procs: Processes, schedulers: dict[int, str]) -> None:
    """Print where the live jobs are stuck, and what the schedulers are doing."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(
                Job.status, Job.project_id, Job.holder, sa.func.count(), sa.func.min(Job.updated_at)
            )
            .where(Job.status.in_(["QUEUED", "DISPATCHED", "STARTED"]))
            .group_by(Job.status, Job.project_id, Job.holder)
        ).all()
        db.session.rollback()
    print("live jobs (status, project, holder, count, oldest change):", *rows, sep="\n  ")
    print("lock", redis.get(LOCK_KEY), "scheduled", redis.zcard("rq:scheduler:scheduled_jobs"))
    print("queue", redis.llen("rq:queue:dispatched"), "wake", redis.llen("dispatched:wake"))
    spy = shutil.which("py-spy")
    for pid, name in schedulers.items():
        if spy and name in procs.procs:
            print(
                name,
                subprocess.run(
                    [spy, "dump", "--pid", str(pid)], capture_output=True, text=True
                ).stdout,
            )


def _ready(base: str) -> bool:
    try:
        return requests.get(f"{base}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False

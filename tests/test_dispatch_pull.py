"""Jobs dispatched for now are pulled by a delivery worker (``transport.admit`` →
``deliver_due`` → ``jobs.pull``): one pending pull per project, the worker releases and claims
the project's due attempts in one transaction under flow control, and leaves to the release
loop what it has no room for, what exceeds one group, and rate-limited projects."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dispatched import jobs
from dispatched.extensions import db
from dispatched.models import Attempt, Job, ProjectFlow
from dispatched.transport_rq import DUE_KEY
from tests.support import answer, due_now, handed_over, wait_for, wakes
from tests.support import dispatch_over_http as dispatch_http
from tests.test_engine_e2e import set_flow


def dispatch(client, team, n=1, **body):
    ids = []
    for _ in range(n):
        r = client.post("/api/jobs/dispatch", headers=team.headers, json={"payload": {}, **body})
        assert r.status_code == 201, r.json
        ids.append(r.json["jobId"])
    return ids


def states(app, ids):
    with app.app_context():
        rows = db.session.execute(
            sa.select(Job.id, Job.status, Job.holder).where(Job.id.in_(ids))
        ).all()
        db.session.rollback()
    return {row.id: (row.status, row.holder) for row in rows}


def waiting(app, project_id):
    with app.app_context():
        value = db.session.execute(
            sa.select(ProjectFlow.waiting).where(ProjectFlow.project_id == project_id)
        ).scalar()
        db.session.rollback()
    return bool(value)


def take_pulls(redis):
    """Take the queued pulls off the queue; return their project id lists."""
    pulls = due_now(redis)
    redis.delete("rq:queue:dispatched")
    return pulls


def test_a_burst_queues_one_pull_per_project_and_a_new_one_after_it_was_taken(
    app, client, make_team, redis
):
    a, b = make_team("pro"), make_team("pro")
    dispatch(client, a, 5)
    dispatch(client, b, 2)
    dispatch(client, a, 3)
    assert due_now(redis) == [[a.project_id], [b.project_id]]  # one each, however many jobs
    assert wakes(redis) == []
    with app.app_context():
        jobs.pull([a.project_id], "worker-x", 100)  # takes a's mark
    assert not redis.exists(DUE_KEY.format(a.project_id))
    assert redis.exists(DUE_KEY.format(b.project_id))
    take_pulls(redis)
    dispatch(client, a, 1)
    dispatch(client, b, 1)
    assert due_now(redis) == [[a.project_id]]  # b's pull is still pending: it takes this one


def test_a_pull_starts_the_due_attempts_in_the_worker(app, client, team, pull_pass):
    ids = dispatch(client, team, 3)
    later = dispatch(client, team, 1, scheduleFor="2027-06-01T00:00:00Z")
    started = pull_pass()
    assert sorted(d.job_id for d in started) == sorted(ids)
    assert all(d.attempt_number == 1 and d.not_before is not None for d in started)
    assert states(app, ids) == dict.fromkeys(ids, ("STARTED", "worker-under-test"))
    assert states(app, later) == {later[0]: ("QUEUED", None)}  # not due: untouched
    with app.app_context():
        attempts = db.session.execute(
            sa.select(sa.func.count()).where(Attempt.job_id.in_(ids))
        ).scalar_one()
        db.session.rollback()
    assert attempts == 3  # one Attempt row each, written in the claim


def test_a_pull_takes_at_most_the_free_threads_and_one_group_and_leaves_the_rest_to_the_loop(
    app, client, make_team, redis, pull_pass, release_pass
):
    team = make_team("pro")  # parallelism 50
    ids = dispatch(client, team, 20)
    first = pull_pass(room=100)
    assert len(first) == 8  # one group (HAND_OVER_BATCH): a burst spreads over the workers
    assert waiting(app, team.project_id) and wakes(redis) == [team.project_id]
    release_pass()  # the loop hands the rest to the workers as usual
    assert sum(len(refs) for _, refs in handed_over(redis)) == 12
    take_pulls(redis)

    more = dispatch(client, team, 5)
    assert len(pull_pass(room=3)) == 3  # only the worker's free threads
    assert waiting(app, team.project_id)
    assert {s for s, _ in states(app, ids + more).values()} == {"STARTED", "DISPATCHED", "QUEUED"}


def test_a_pull_respects_the_projects_parallelism(app, client, make_team, pull_pass):
    team = make_team("pro")
    set_flow(app, team.project_id, parallelism=2)
    ids = dispatch(client, team, 5)
    assert sorted(d.job_id for d in pull_pass()) == sorted(ids[:2])  # the oldest
    assert [s for s, _ in states(app, ids).values()].count("STARTED") == 2
    assert waiting(app, team.project_id)
    dispatch(client, team, 1)
    assert pull_pass() == []  # both slots are taken


def test_a_rate_limited_project_is_left_to_the_release_loop(
    app, client, make_team, redis, pull_pass, release_pass
):
    """The loop spaces a rate-limited project's releases by its next token; a pull would take
    whatever one token allows at once, on top of what the loop releases."""
    team = make_team("pro")
    set_flow(app, team.project_id, rate=5)
    ids = dispatch(client, team, 3)
    assert pull_pass() == []
    assert {s for s, _ in states(app, ids).values()} == {"QUEUED"}
    assert waiting(app, team.project_id) and wakes(redis) == [team.project_id]
    release_pass()
    assert handed_over(redis)  # the loop releases it under the rate


def test_a_cancelled_job_is_not_pulled(app, client, team, pull_pass):
    keep, cancel = dispatch(client, team, 2)
    assert client.delete(f"/api/jobs/{cancel}", headers=team.headers).status_code == 200
    assert [d.job_id for d in pull_pass()] == [keep]
    assert states(app, [cancel]) == {cancel: ("CANCELLED", None)}


def test_a_pull_of_a_deleted_or_idle_project_does_nothing(app, client, team, redis):
    with app.app_context():
        assert jobs.pull([team.project_id, 999_999], "worker-x", 10) == []
    assert wakes(redis) == [] and not waiting(app, team.project_id)


@pytest.mark.slow
def test_a_worker_alone_delivers_an_immediate_job_without_the_scheduler(
    app, live_server, make_team, receiver, processes, redis
):
    """No scheduler.py runs: the dispatch's pull reaches the worker through RQ directly."""
    team = make_team("e2e", webhook_url=receiver.on("/alone", answer(200)))
    processes.start("worker", "worker.py", WORKER_CONCURRENCY="1")
    wait_for(lambda: redis.scard("rq:workers:dispatched") >= 1, timeout=30, message="a worker")
    ids = dispatch_http(live_server, team, 3)
    wait_for(lambda: len(receiver.received("/alone")) == 3, timeout=15, message="3 deliveries")
    wait_for(
        lambda: {s for s, _ in states(app, ids).values()} == {"COMPLETED"},
        timeout=15,
        message="3 jobs COMPLETED",
    )
    assert sorted(r.json["jobId"] for r in receiver.received("/alone")) == sorted(ids)


def test_the_prebuilt_move_guards_on_status_attempts_and_holder(app, client, team):
    """``move_many`` (one prebuilt UPDATE per shape, with bind parameters) moves exactly the
    refs still in the source status at that attempt count and with the guarded holder; it
    increments and writes what it is told, and a second call of the same shape with other
    values binds them afresh (a statement cached with the first call's values would not)."""
    from datetime import UTC, datetime

    from dispatched.jobs.transitions import InvalidTransition, move_many

    a, b, c = dispatch(client, team, 3, scheduleFor="2027-06-01T00:00:00Z")
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with app.app_context():
        moved = move_many(
            [(a, 0), (b, 1), (c, 0)], "QUEUED", "DISPATCHED", guard={"holder": None}, holder="h1"
        )
        assert moved == {a, c}  # b: wrong attempt count
        db.session.commit()
        moved = move_many(
            [(a, 0), (c, 0)],
            "DISPATCHED",
            "STARTED",
            guard={"holder": "h2"},  # a different holder: nothing moves
            increment=("attempts",),
            started_at=at,
            holder="w",
        )
        assert moved == set()
        moved = move_many(
            [(a, 0), (c, 0)],
            "DISPATCHED",
            "STARTED",
            guard={"holder": "h1"},
            increment=("attempts",),
            started_at=at,
            holder="w",
        )
        assert moved == {a, c}
        db.session.commit()
        rows = {
            row.id: row
            for row in db.session.execute(
                sa.select(Job.id, Job.status, Job.attempts, Job.holder, Job.started_at).where(
                    Job.id.in_([a, b, c])
                )
            )
        }
        db.session.rollback()
        with pytest.raises(InvalidTransition):
            move_many([(a, 1)], "STARTED", "DISPATCHED")
    assert (rows[a].status, rows[a].attempts, rows[a].holder) == ("STARTED", 1, "w")
    assert rows[a].started_at == at and rows[c].status == "STARTED"
    assert (rows[b].status, rows[b].attempts, rows[b].holder) == ("QUEUED", 0, None)


def test_saving_the_flow_row_writes_the_state_and_refuses_a_state_column_as_a_value(app, team):
    from dataclasses import replace

    from dispatched.jobs.release import lock_flow, save_flow

    with app.app_context():
        state = lock_flow(team.project_id)
        save_flow(team.project_id, replace(state, effective=2, streak=7), waiting=True)
        db.session.commit()
        again = lock_flow(team.project_id)
        with pytest.raises(TypeError, match="come from the state"):
            save_flow(team.project_id, again, effective=3)
        db.session.rollback()
    assert (again.effective, again.streak) == (2, 7)
    assert waiting(app, team.project_id)


def test_a_finished_delivery_starts_its_projects_next_waiting_attempt(
    app, client, make_team, pull_pass
):
    """The recorder's cycle (``jobs.conclude_and_continue``) concludes a delivery and, in the
    same transaction, releases and claims its project's next waiting attempt (work-conserving)."""
    from dispatched.jobs.attempts import Finished
    from dispatched.outbound import Result

    team = make_team("pro")
    set_flow(app, team.project_id, parallelism=1)
    ids = dispatch(client, team, 3)
    [first] = pull_pass()
    assert waiting(app, team.project_id)
    with app.app_context():
        statuses, started = jobs.conclude_and_continue(
            [Finished(first, Result("success", 5, http_status=200))], "worker-under-test", 10
        )
    assert statuses == {first.job_id: "COMPLETED"}
    assert [d.job_id for d in started] == [ids[1]]  # the oldest waiting, at once
    assert states(app, ids)[ids[1]] == ("STARTED", "worker-under-test")
    assert states(app, ids)[ids[2]] == ("QUEUED", None)  # parallelism 1
    assert waiting(app, team.project_id)

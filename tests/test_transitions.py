"""The job state machine's table (pure: no database, no Redis)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from dispatched.jobs import transitions
from dispatched.jobs.transitions import TRANSITIONS, InvalidTransition
from dispatched.models import JobStatus as S

pytestmark = pytest.mark.unit

#: DESIGN.md §4, drawn as pairs: the table must be exactly this.
EXPECTED = {
    (S.QUEUED, S.DISPATCHED),
    (S.QUEUED, S.QUEUED),
    (S.QUEUED, S.CANCELLED),
    (S.DISPATCHED, S.STARTED),
    (S.DISPATCHED, S.QUEUED),
    (S.STARTED, S.COMPLETED),
    (S.STARTED, S.QUEUED),
    (S.STARTED, S.FAILED),
    (S.FAILED, S.QUEUED),
}


def test_table_is_the_design_diagram():
    assert set(TRANSITIONS) == EXPECTED
    assert all(reason.strip() for reason in TRANSITIONS.values())


def test_finished_jobs_only_leave_failed_by_replay():
    for status in (S.COMPLETED, S.CANCELLED):
        assert not [pair for pair in TRANSITIONS if pair[0] == status]
    assert [pair for pair in TRANSITIONS if pair[0] == S.FAILED] == [(S.FAILED, S.QUEUED)]
    assert set(transitions.INITIAL) == {S.QUEUED, S.DISPATCHED}


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_allowed_transitions_pass_the_check(pair):
    assert transitions.check([pair[0]], pair[1]) == [pair[0]]


@pytest.mark.parametrize(
    "pair", [p for p in itertools.product(S.ALL, repeat=2) if p not in EXPECTED]
)
def test_every_other_transition_raises(pair):
    with pytest.raises(InvalidTransition, match=f"{pair[0]} → {pair[1]}"):
        transitions.check([pair[0]], pair[1])


def test_one_bad_source_among_good_ones_raises():
    with pytest.raises(InvalidTransition, match="COMPLETED → QUEUED"):
        transitions.check([S.FAILED, S.COMPLETED], S.QUEUED)
    with pytest.raises(InvalidTransition, match="no source status given for → QUEUED"):
        transitions.check([], S.QUEUED)


def test_move_refuses_before_touching_the_database():
    # No app context exists here: reaching the database would raise a different error.
    with pytest.raises(InvalidTransition):
        transitions.move("job_x", [S.CANCELLED], S.QUEUED)
    with pytest.raises(InvalidTransition, match="set_fields"):
        transitions.set_fields("job_x", status=S.QUEUED)


def test_statement_guards_on_status_and_attempt_count():
    stmt = transitions.statement([S.DISPATCHED], S.STARTED, at_attempts=2, attempts=3)
    sql = str(stmt.compile(compile_kwargs={"literal_binds": True}))
    assert "jobs.status IN ('DISPATCHED')" in sql
    assert "jobs.attempts = 2" in sql
    assert "status='STARTED'" in sql.replace(" ", "") and "attempts=3" in sql.replace(" ", "")
    assert "updated_at" in sql
    unguarded = str(transitions.statement([S.QUEUED], S.CANCELLED).compile())
    assert "jobs.attempts =" not in unguarded


def test_statement_stamps_updated_at_unless_given():
    before = datetime.now(UTC)
    params = transitions.statement([S.QUEUED], S.CANCELLED).compile().params
    assert before <= params["updated_at"] <= datetime.now(UTC)
    fixed = datetime(2030, 1, 2, tzinfo=UTC)
    params = transitions.statement([S.QUEUED], S.CANCELLED, updated_at=fixed).compile().params
    assert params["updated_at"] == fixed

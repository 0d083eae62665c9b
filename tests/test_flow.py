"""Flow control arithmetic (pure: no app, DB or Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatched import flow
from dispatched.errors import BadRequest
from dispatched.flow import Outcome, Settings, State
from dispatched.plans import Plan

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PRO = Plan("pro", 600, 100_000, 3, 10_240, 30, parallelism=50)
OK, THROTTLED = Outcome(True, 200), Outcome(False, 429)


def test_settings_default_to_the_plan_cap_and_are_bounded_by_it():
    assert flow.settings_of(None, None, PRO) == Settings(50, None, 50)
    assert flow.settings_of(7, 2.5, PRO) == Settings(7, 2.5, 50)
    assert flow.settings_of(80, None, PRO).parallelism == 50  # plan downgraded since


@pytest.mark.parametrize(
    ("parallelism", "rate", "message"),
    [
        (0, None, "between 1 and 50"),
        (51, None, "between 1 and 50"),
        (True, None, "must be an integer"),
        ("3", None, "must be an integer"),
        (2.0, None, "must be an integer"),
        (None, 0, "above 0"),
        (None, -1, "above 0"),
        (None, float("nan"), "must be a number"),
        (None, float("inf"), "must be a number"),
        (None, True, "must be a number"),
        (None, "5", "must be a number"),
        (None, 10_001, "at most 10000"),
    ],
)
def test_validate_refuses_bad_settings(parallelism, rate, message):
    with pytest.raises(BadRequest, match=message):
        flow.validate(parallelism, rate, PRO)


def test_validate_accepts_and_normalises():
    assert flow.validate(50, 3, PRO) == (50, 3.0)
    assert flow.validate(None, None, PRO) == (None, None)


def test_budget_is_free_slots_without_rate():
    settings = Settings(5, None, 50)
    assert flow.budget(settings, State(), 0, NOW) == (5, None)
    assert flow.budget(settings, State(), 3, NOW) == (2, None)
    assert flow.budget(settings, State(), 7, NOW) == (0, None)
    assert flow.budget(settings, State(effective=2), 1, NOW) == (1, None)


def test_a_pause_releases_nothing_until_it_ends():
    until = NOW + timedelta(seconds=3)
    assert flow.budget(Settings(5, None, 50), State(paused_until=until), 0, NOW) == (0, until)
    assert flow.budget(Settings(5, None, 50), State(paused_until=NOW), 0, NOW) == (5, None)


def test_rate_tokens_refill_to_one_and_say_when_the_next_comes():
    settings = Settings(10, 4.0, 50)
    assert flow.budget(settings, State(), 0, NOW) == (1, None)  # a fresh bucket holds 1
    spent = flow.spend(settings, State(), 1, NOW)
    assert spent.tokens == 0.0 and spent.tokens_at == NOW
    allowed, wake = flow.budget(settings, spent, 0, NOW + timedelta(seconds=0.1))
    assert allowed == 0 and wake == NOW + timedelta(seconds=0.25)
    assert flow.budget(settings, spent, 0, NOW + timedelta(seconds=0.25))[0] == 1
    # Never more than one at a time, however long it was idle: no 1 s window exceeds rate + 1.
    assert flow.budget(settings, spent, 0, NOW + timedelta(hours=1))[0] == 1


def test_rate_releases_in_any_one_second_window_at_most_rate_plus_one():
    settings, state, t, starts = Settings(100, 5.0, 100), State(), NOW, []
    for _ in range(400):  # a releaser polling every 10 ms
        allowed, _ = flow.budget(settings, state, 0, t)
        starts += [t] * allowed
        state = flow.spend(settings, state, allowed, t)
        t += timedelta(milliseconds=10)
    assert max(sum(1 for x in starts if s <= x < s + timedelta(seconds=1)) for s in starts) <= 6
    assert len(starts) in (20, 21)  # 4 s at 5/s, plus the first token


def test_throttling_halves_to_one_and_successes_add_back_one_per_twenty():
    settings = Settings(8, None, 50)
    state = flow.after_results(settings, State(), [THROTTLED], NOW)
    assert flow.effective(settings, state) == 4 and state.streak == 0
    state = flow.after_results(settings, state, [THROTTLED, THROTTLED, THROTTLED], NOW)
    assert flow.effective(settings, state) == 1
    state = flow.after_results(settings, state, [OK] * 19, NOW)
    assert flow.effective(settings, state) == 1 and state.streak == 19
    state = flow.after_results(settings, state, [OK], NOW)
    assert flow.effective(settings, state) == 2 and state.streak == 0
    state = flow.after_results(settings, state, [OK] * 10 + [Outcome(False, 500)] + [OK] * 10, NOW)
    assert flow.effective(settings, state) == 2, "a failure breaks the streak"
    state = flow.after_results(settings, state, [OK] * 200, NOW)
    assert state.effective is None and flow.effective(settings, state) == 8  # back to the setting


def test_retry_after_pauses_for_at_most_an_hour_and_keeps_the_latest_end():
    settings = Settings(8, None, 50)
    state = flow.after_results(settings, State(), [Outcome(False, 503, retry_after=5)], NOW)
    assert state.paused_until == NOW + timedelta(seconds=5)
    state = flow.after_results(settings, state, [Outcome(False, 429, retry_after=2)], NOW)
    assert state.paused_until == NOW + timedelta(seconds=5)
    state = flow.after_results(settings, state, [Outcome(False, 429, retry_after=86_400)], NOW)
    assert state.paused_until == NOW + timedelta(hours=1)
    later = NOW + timedelta(hours=2)
    assert flow.after_results(settings, state, [OK], later).paused_until is None
    # A 500 with Retry-After is not throttling: no pause, no halving.
    plain = flow.after_results(settings, State(), [Outcome(False, 500, retry_after=9)], NOW)
    assert plain.paused_until is None and plain.effective is None


def test_boundaries_of_the_settings_are_inclusive():
    assert flow.validate(1, 0.5, PRO) == (1, 0.5)
    assert flow.validate(50, flow.MAX_RATE, PRO) == (50, flow.MAX_RATE)


def test_budget_waits_for_a_slot_not_a_token_when_none_is_free():
    empty = State(tokens=0.0, tokens_at=NOW)
    # No slot: the project waits for a delivery to finish, not for a time.
    assert flow.budget(Settings(2, 4.0, 50), empty, 2, NOW) == (0, None)
    # One slot, no token: look again when the next token comes.
    assert flow.budget(Settings(2, 4.0, 50), empty, 1, NOW) == (0, NOW + timedelta(seconds=0.25))


def test_halving_an_odd_parallelism_rounds_down_and_failures_reset_the_streak():
    settings = Settings(5, None, 50)
    state = flow.after_results(settings, State(), [THROTTLED], NOW)
    assert state.effective == 2
    state = flow.after_results(settings, state, [OK, OK, Outcome(False, 500)], NOW)
    assert state.streak == 0
    state = flow.after_results(settings, state, [OK, OK], NOW)
    assert state.streak == 2


def test_at_its_setting_a_project_counts_no_streak_and_a_pause_ending_now_is_over():
    settings = Settings(5, None, 50)
    assert flow.after_results(settings, State(), [OK] * 5, NOW) == State()
    ended = flow.after_results(settings, State(paused_until=NOW), [OK], NOW)
    assert ended.paused_until is None


def test_next_token_time():
    settings = Settings(5, 4.0, 50)
    assert flow.next_token_at(Settings(5, None, 50), State(), NOW) is None
    assert flow.next_token_at(settings, State(), NOW) is None  # one is there now
    spent = flow.spend(settings, State(), 1, NOW)
    assert flow.next_token_at(settings, spent, NOW) == NOW + timedelta(seconds=0.25)

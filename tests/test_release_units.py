"""Sharing the workers' room between projects (pure)."""

from __future__ import annotations

import pytest

from dispatched.jobs.release import fair_shares, line_shares

pytestmark = pytest.mark.unit


def test_no_limit_or_enough_room_gives_every_budget():
    assert fair_shares({1: 50, 2: 3}, None) == {1: 50, 2: 3}
    assert fair_shares({1: 50, 2: 3}, 53) == {1: 50, 2: 3}


def test_a_big_budget_cannot_take_all_the_room():
    assert fair_shares({1: 50, 2: 3, 3: 0}, 10) == {1: 7, 2: 3, 3: 0}
    assert fair_shares({1: 50, 2: 50}, 9) == {1: 5, 2: 4}
    assert fair_shares({1: 50}, 0) == {1: 0}


def test_line_places_go_to_projects_with_budget_left_and_take_half_of_it_at_most():
    # Free threads (limit - line) are shared first, as fair_shares would.
    assert line_shares({1: 2, 2: 2}, 6, 2) == {1: 2, 2: 2}
    # A project near its cap gets no line place for its last slot, and half of more.
    assert line_shares({1: 1}, 10, 10) == {1: 0}
    assert line_shares({1: 6}, 10, 10) == {1: 3}
    # Far from its cap, a project fills the line.
    assert line_shares({1: 200}, 64, 64) == {1: 64}
    # The 4 free threads first, 2 each; then the 8 line places, at most half of what each has
    # left: project 1 (5 - 2 = 3 left) takes 1 of them, project 2 (38 left) the other 7.
    assert line_shares({1: 5, 2: 40}, 12, 8) == {1: 2 + 1, 2: 2 + 7}

"""Sharing the workers' room between projects (pure)."""

from __future__ import annotations

import pytest

from dispatched.jobs.release import fair_shares

pytestmark = pytest.mark.unit


def test_no_limit_or_enough_room_gives_every_budget():
    assert fair_shares({1: 50, 2: 3}, None) == {1: 50, 2: 3}
    assert fair_shares({1: 50, 2: 3}, 53) == {1: 50, 2: 3}


def test_a_big_budget_cannot_take_all_the_room():
    assert fair_shares({1: 50, 2: 3, 3: 0}, 10) == {1: 7, 2: 3, 3: 0}
    assert fair_shares({1: 50, 2: 50}, 9) == {1: 5, 2: 4}
    assert fair_shares({1: 50}, 0) == {1: 0}

"""Retention's pure decisions: the limits an app has, the cuts of one bounded batch, and the resume of a client
whose cursor was swept."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core import frames
from tidings.core.resume import Opened, open_at
from tidings.core.retention import Cut, Limits, Swept, UserState, limits_of, plan_batch, target, users_to_read
from tidings.core.rules import AppRules


def test_an_apps_rules_override_the_defaults_and_zero_means_no_limit() -> None:
    assert limits_of(None, 0.0, 0) == Limits(None, None)
    assert not limits_of(AppRules(), 0.0, 0).active
    assert limits_of(AppRules(), 86400.0, 100) == Limits(86400.0, 100)
    assert limits_of(AppRules(retention_max_age=60.0), 86400.0, 100) == Limits(60.0, 100)
    assert limits_of(AppRules(retention_max_age=0.0, retention_max_count=0), 86400.0, 100) == Limits(
        None, None
    )
    assert limits_of(AppRules(retention_max_count=5), 0.0, 0) == Limits(None, 5)


def test_the_count_limit_keeps_the_newest_seqs() -> None:
    assert target(UserState("u", last_seq=10, floor=0, aged=None), Limits(max_count=3)) == 7
    assert target(UserState("u", last_seq=10, floor=8, aged=None), Limits(max_count=3)) == 8  # never below
    assert target(UserState("u", last_seq=2, floor=0, aged=None), Limits(max_count=3)) == 0


def test_the_age_limit_cuts_at_the_newest_expired_seq_and_the_stricter_limit_wins() -> None:
    assert target(UserState("u", 10, 0, aged=4), Limits(max_age=60.0)) == 4
    assert target(UserState("u", 10, 0, aged=None), Limits(max_age=60.0)) == 0
    assert target(UserState("u", 10, 0, aged=4), Limits(max_age=60.0, max_count=3)) == 7
    assert target(UserState("u", 10, 0, aged=9), Limits(max_age=60.0, max_count=3)) == 9


def test_a_batch_stops_at_its_budget_and_the_next_one_takes_the_same_user_again() -> None:
    states = [UserState("a", 10, 0, None), UserState("b", 10, 0, None)]
    first = plan_batch(states, Limits(max_count=2), 5, after=None, full=False)
    assert first.cuts == [Cut("a", 0, 5)]
    assert (first.next_after, first.done) == (None, False)  # "a" again: from the start
    second = plan_batch(
        [UserState("a", 10, 5, None), states[1]], Limits(max_count=2), 5, after=None, full=False
    )
    assert second.cuts == [Cut("a", 5, 8), Cut("b", 0, 2)]
    assert (second.next_after, second.done) == ("a", False)  # "b" again, after "a"


def test_a_pass_is_done_when_a_batch_read_fewer_users_than_it_asked_for() -> None:
    states = [UserState("a", 3, 0, None), UserState("b", 1, 0, None)]
    short = plan_batch(states, Limits(max_count=2), 100, after="0", full=False)
    assert (short.cuts, short.next_after, short.done) == ([Cut("a", 0, 1)], "b", True)
    full = plan_batch(states, Limits(max_count=2), 100, after="0", full=True)
    assert (full.next_after, full.done) == ("b", False)
    assert plan_batch([], Limits(max_count=2), 100, after=None, full=False).done


def test_an_age_window_that_expired_to_its_end_is_read_again() -> None:
    """The expired seq was the window's last: more may have expired past it."""
    plan = plan_batch([UserState("a", 100, 0, aged=10)], Limits(max_age=1.0), 10, after=None, full=False)
    assert plan.cuts == [Cut("a", 0, 10)]
    assert (plan.next_after, plan.done) == (None, False)


def test_a_budget_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="budget"):
        plan_batch([], Limits(max_count=1), 0, after=None, full=False)


STATES = st.lists(
    st.tuples(st.integers(0, 500), st.integers(0, 500), st.one_of(st.none(), st.integers(0, 500))),
    max_size=20,
)


@settings(max_examples=300)
@given(
    raw=STATES,
    max_count=st.one_of(st.none(), st.integers(1, 300)),
    max_age=st.booleans(),
    budget=st.integers(1, 400),
)
def test_cuts_are_prefixes_within_the_budget(
    raw: list[tuple[int, int, int | None]], max_count: int | None, max_age: bool, budget: int
) -> None:
    states = []
    for i, (last, floor, aged) in enumerate(raw):
        floor = min(floor, last)
        aged_in_window = None if aged is None else min(max(aged, floor + 1), floor + budget, last)
        states.append(UserState(f"u{i:03d}", last, floor, aged_in_window if aged_in_window else None))
    limits = Limits(max_age=60.0 if max_age else None, max_count=max_count)
    plan = plan_batch(states, limits, budget, after=None, full=False)
    assert sum(cut.to - cut.floor for cut in plan.cuts) <= budget
    by_user = {s.user: s for s in states}
    for cut in plan.cuts:
        state = by_user[cut.user]
        assert state.floor == cut.floor < cut.to <= target(state, limits) <= state.last_seq
    users = [cut.user for cut in plan.cuts]
    assert users == sorted(users)


def test_a_cursor_below_the_floor_is_reset_to_the_latest_page() -> None:
    assert open_at(2, 100, "e", floor=50, page=20) == Opened(100, "e", 80, True, expired=True)
    assert open_at(0, 100, "e", floor=95, page=20) == Opened(
        100, "e", 95, True, expired=True
    )  # never <= floor
    assert open_at(2, 10, "e", floor=5, page=100) == Opened(10, "e", 5, True, expired=True)


def test_a_cursor_at_or_above_the_floor_resumes_as_before() -> None:
    assert open_at(50, 100, "e", floor=50, page=20) == Opened(100, "e", 50, False)
    assert open_at(60, 100, "e", floor=50, page=20) == Opened(100, "e", 60, False)
    assert open_at(None, 100, "e", floor=50, page=20) == Opened(100, "e", 100, False)
    assert open_at(120, 100, "e", floor=50, page=20) == Opened(100, "e", 100, True)  # ahead: the old reset


def test_a_negative_floor_or_page_is_refused() -> None:
    with pytest.raises(ValueError, match="seqs"):
        open_at(1, 2, "e", floor=-1)
    with pytest.raises(ValueError, match="seqs"):
        open_at(1, 2, "e", page=-1)


def test_the_expired_reset_frame_names_where_the_stream_goes_on_and_why() -> None:
    assert orjson.loads(frames.encode_reset(80, "e", expired=True)) == {
        "type": "reset",
        "last_seq": 80,
        "epoch": "e",
        "reason": "expired",
    }
    assert orjson.loads(frames.encode_reset(80, "e")) == {"type": "reset", "last_seq": 80, "epoch": "e"}


def test_a_backlog_makes_batches_read_fewer_users_and_little_to_delete_more_again() -> None:
    assert users_to_read(500, Swept(2000, "u", False, cut_users=40), 2000, 500) == 80
    assert users_to_read(500, Swept(2000, "u", False, cut_users=1), 2000, 500) == 16
    assert users_to_read(80, Swept(300, "u", False, cut_users=30), 2000, 500) == 160
    assert users_to_read(400, Swept(0, "u", False), 2000, 500) == 500

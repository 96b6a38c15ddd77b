"""Retention: how much of each user's inbox to keep, and which rows one bounded sweep batch deletes.

An app keeps at most ``max_age`` seconds and at most ``max_count`` notifications per user inbox (``AppRules``
override the process-wide defaults of ``Settings``; 0 or None there: no limit). The sweep only ever deletes a
*prefix* of a user's seqs (every seq up to a cut), so the seqs above the cut stay gap-free and one number per
user, the floor (the highest seq deleted), says what is gone: a client whose cursor is below the floor is told
(``core.resume``). The count limit cuts at ``last_seq - max_count``; the age limit at the newest expired row
among the next ``budget`` seqs above the floor (rows are numbered in commit order, which follows their
``created_at`` closely; a row committed a moment before an older one may go with it).

A batch deletes at most ``budget`` rows in all (seq differences bound the row counts), so its transaction, and
the locks it holds on the users' seq counters, stay short whatever the backlog. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tidings.core.rules import AppRules


@dataclass(frozen=True, slots=True)
class Limits:
    """``max_age`` seconds and ``max_count`` rows per user inbox; None: no limit of that kind."""

    max_age: float | None = None
    max_count: int | None = None

    @property
    def active(self) -> bool:
        return self.max_age is not None or self.max_count is not None


def limits_of(rules: AppRules | None, default_age: float, default_count: int) -> Limits:
    """The app's limits: its rules' values where set (0: none), else the defaults (0: none)."""
    age = (
        rules.retention_max_age if rules is not None and rules.retention_max_age is not None else default_age
    )
    count = (
        rules.retention_max_count
        if rules is not None and rules.retention_max_count is not None
        else default_count
    )
    return Limits(max_age=float(age) if age > 0 else None, max_count=int(count) if count > 0 else None)


@dataclass(frozen=True, slots=True)
class UserState:
    """One user's inbox as a batch found it: ``last_seq``, ``floor`` (highest seq swept, 0: none) and
    ``aged``: the newest seq older than the age cut-off among the ``budget`` seqs above the floor (None: none;
    the batch's ``budget`` is that window)."""

    user: str
    last_seq: int
    floor: int
    aged: int | None


@dataclass(frozen=True, slots=True)
class Cut:
    """Delete the user's seqs in (``floor``, ``to``]; ``to`` becomes the new floor."""

    user: str
    floor: int
    to: int


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """The cuts of one batch; the next batch reads the users after ``next_after`` (None: from the first),
    unless ``done`` (the pass over this app is over)."""

    cuts: list[Cut]
    next_after: str | None
    done: bool


def plan_batch(
    states: Sequence[UserState], limits: Limits, budget: int, *, after: str | None, full: bool
) -> BatchPlan:
    """The cuts for ``states`` (the users after ``after``, ascending; ``full``: the batch read as many users
    as it asked for, so more may follow), at most ``budget`` rows in all.

    Invariants: every cut has ``floor < to <= last_seq``; the rows of all cuts sum to at most ``budget``; a
    user whose cut the budget shortened is read again by the next batch (``next_after`` is the user before).
    """
    if budget < 1:
        raise ValueError("budget >= 1")
    cuts: list[Cut] = []
    left = budget
    previous = after
    for state in states:
        wanted = target(state, limits)
        if wanted > state.floor:
            to = min(wanted, state.floor + left)
            cuts.append(Cut(state.user, state.floor, to))
            left -= to - state.floor
            # More to delete here (the budget ran out, or the age window's last seq had expired too): this
            # user again, from its new floor.
            if to < wanted or (state.aged is not None and state.aged >= state.floor + budget):
                return BatchPlan(cuts, previous, done=False)
            if left == 0:
                return BatchPlan(cuts, state.user, done=False)
        previous = state.user
    return BatchPlan(cuts, previous, done=not full)


def target(state: UserState, limits: Limits) -> int:
    """The highest seq the limits want gone (at least the floor, at most ``last_seq``)."""
    wanted = state.floor
    if limits.max_count is not None:
        wanted = max(wanted, state.last_seq - limits.max_count)
    if limits.max_age is not None and state.aged is not None:
        wanted = max(wanted, state.aged)
    return min(wanted, state.last_seq)


@dataclass(frozen=True, slots=True)
class Swept:
    """One batch's outcome: rows deleted, where the next batch starts, whether the app's pass is done, and how
    many users it cut (the sweeper reads fewer users per batch while each has much to delete)."""

    rows: int
    next_after: str | None
    done: bool
    cut_users: int = 0


def users_to_read(previous: int, swept: Swept, budget: int, most: int, least: int = 16) -> int:
    """How many users the next batch reads: while the budget runs out after a few users (a backlog), about
    twice as many as the last batch cut, so a batch does not read hundreds of users to cut forty; back up
    to ``most`` (doubling) once users have little to delete."""
    if swept.rows >= budget and swept.cut_users:
        return max(least, min(most, 2 * swept.cut_users))
    return min(most, max(least, 2 * previous))

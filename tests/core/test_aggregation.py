"""Aggregation and offline delivery planning, pure (``tidings.core.aggregation``), with property tests."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tidings.core.aggregation import current_from_row, id_source, merge_actors
from tidings.core.models import ChannelPlan, InboxWrite
from tidings.core.rules import AGGREGATE, DEFER, DELIVER
from tidings.core.session import Session
from tidings.testing import FakeClock

from .model import ModelInbox, like

PUSH = ChannelPlan("web_push", "app default", cap=2, cap_window=3600.0)


def test_likes_within_the_window_become_one_notification_that_replaces_the_last() -> None:
    """Bob, then Carol, then Dan like the post: seq 3 says "Dan and 2 others" and replaces seq 2."""
    clock, inbox = FakeClock(), ModelInbox()
    for n, actor in enumerate(("bob", "carol", "dan")):
        inbox.write([like(f"e{n}", "alice", actor=actor)], clock.time())
        clock.advance(60)
    [shown] = inbox.shown("alice")
    body = shown.body
    assert (shown.seq, body["replaces"], body["count"]) == (3, 2, 3)
    assert [a["id"] for a in body["actors"]] == ["dan", "carol", "bob"]
    assert inbox.rows["alice"][1].replaced_by == 2
    assert inbox.rows["alice"][2].replaced_by == 3
    assert inbox.unread("alice") == 1


def test_actors_are_the_latest_three_distinct() -> None:
    """An aggregate shows at most three actors, newest first; an actor acting again moves to the front."""
    actors = ({"id": "c"}, {"id": "b"}, {"id": "a"})
    assert merge_actors({"id": "b"}, actors, 3) == ({"id": "b"}, {"id": "c"}, {"id": "a"})
    assert merge_actors({"id": "d"}, actors, 3) == ({"id": "d"}, {"id": "c"}, {"id": "b"})
    assert merge_actors(None, actors, 2) == ({"id": "c"}, {"id": "b"})


def test_a_group_older_than_the_window_starts_a_new_notification() -> None:
    """The window counts from the group's first event: after an hour, a like starts a fresh group."""
    clock, inbox = FakeClock(), ModelInbox()
    inbox.write([like("e1", "alice")], clock.time())
    clock.advance(3599)
    inbox.write([like("e2", "alice", actor="carol")], clock.time())
    clock.advance(1)
    inbox.write([like("e3", "alice", actor="dan")], clock.time())
    shown = inbox.shown("alice")
    assert [(r.seq, r.replaces, r.body["count"]) for r in shown] == [(2, 1, 2), (3, None, 1)]


def test_other_types_groups_users_and_window_zero_do_not_aggregate() -> None:
    """Only the same type and group of the same user joins; a window of 0 turns aggregation off."""
    clock, inbox = FakeClock(), ModelInbox()
    inbox.write(
        [
            like("e1", "alice"),
            like("e2", "alice", type_="post.loved"),
            like("e3", "alice", group="post:43:like"),
            like("e4", "bob"),
            like("e5", "alice", group=None),
            like("e6", "carol", window=0.0),
            like("e7", "carol", window=0.0),
        ],
        clock.time(),
    )
    assert [len(inbox.shown(user)) for user in ("alice", "bob", "carol")] == [4, 1, 2]


def test_a_batch_may_aggregate_within_itself_and_a_redelivery_creates_nothing() -> None:
    """Two likes in one commit: the second replaces the first at once; writing them again changes nothing."""
    clock, inbox = FakeClock(), ModelInbox()
    writes = [like("e1", "alice"), like("e2", "alice", actor="carol")]
    first = inbox.write(writes, clock.time())
    assert [n.seq for n in first] == [1, 2]
    assert inbox.rows["alice"][1].replaced_by == 2
    clock.advance(10)
    again = inbox.write(writes, clock.time())
    assert again == first
    assert len(inbox.rows["alice"]) == 2


def test_a_pending_push_moves_to_the_aggregate_instead_of_a_second_push() -> None:
    """Ten likes in a minute make one pending push (for the latest aggregate), not ten."""
    clock, inbox = FakeClock(), ModelInbox()
    for n in range(10):
        inbox.write([like(f"e{n}", "alice", actor=f"u{n}", channels=(PUSH,))], clock.time())
        clock.advance(6)
    [(key, [push])] = inbox.pending.items()
    assert key == ("a", "alice", 10)
    assert (push.seq, push.event_id, push.channel) == (10, "e0", "web_push")
    kinds = [(d.kind, d.channel) for d in inbox.decisions if d.event_id == "e5"]
    assert kinds == [(AGGREGATE, "in_app"), (DELIVER, "web_push")]
    assert inbox.usage[("a", "alice", "web_push")].count == 1


def test_pushes_past_the_cap_are_deferred_into_a_digest_never_dropped() -> None:
    """Cap 2 an hour: the third push waits for the end of the window as a digest; the next window is fresh."""
    clock, inbox = FakeClock(1_790_000_000.0), ModelInbox()  # 1_790_000_000 = 497222 h + 800 s
    for n in range(3):
        inbox.write([like(f"e{n}", "alice", group=None, channels=(PUSH,))], clock.time())
    due = {seq: items[0] for (_, _, seq), items in inbox.pending.items()}
    assert [due[s].due_at for s in (1, 2)] == [clock.time()] * 2
    window_end = clock.time() - 800 + 3600
    assert (due[3].due_at, due[3].digest) == (window_end, True)
    assert due[3].reason == "cap of 2 per 3600s reached: digest"
    assert [d.kind for d in inbox.decisions if d.channel == "web_push"] == [DELIVER, DELIVER, DEFER]
    clock.advance(2800)  # the next window
    inbox.write([like("e3", "alice", group=None, channels=(PUSH,))], clock.time())
    assert inbox.pending[("a", "alice", 4)][0].due_at == clock.time()


def test_a_pending_push_moves_once_to_the_end_of_a_chain_made_in_one_commit() -> None:
    """A stored aggregate with a pending push, then two likes in one commit: one move, straight to the last
    row (stores apply a commit's moves at once, so a chain of moves would strand the push halfway)."""
    clock, inbox = FakeClock(), ModelInbox()
    inbox.write([like("e1", "alice", channels=(PUSH,))], clock.time())
    inbox.write([like(f"e{n}", "alice", actor=f"u{n}", channels=(PUSH,)) for n in (2, 3)], clock.time())
    assert list(inbox.pending) == [("a", "alice", 3)]
    assert [(d.kind, d.channel) for d in inbox.decisions if d.event_id == "e3"] == [
        (AGGREGATE, "in_app"),
        (DELIVER, "web_push"),
    ]


def test_reading_cancels_pending_pushes_and_the_next_like_plans_afresh() -> None:
    """Once the aggregate is read its push is gone; a later like in the window makes a new pending push."""
    clock, inbox = FakeClock(), ModelInbox()
    inbox.write([like("e1", "alice", channels=(PUSH,))], clock.time())
    inbox.mark_read("alice", 1)
    assert inbox.pending == {}
    clock.advance(60)
    inbox.write([like("e2", "alice", actor="carol", channels=(PUSH,))], clock.time())
    assert list(inbox.pending) == [("a", "alice", 2)]
    assert inbox.unread("alice") == 1


# --- properties ---------------------------------------------------------------------------------------------

USERS = ("alice", "bob")
GROUPS = ("g1", "g2", None)


@dataclass(frozen=True)
class Like:
    user: str
    group: str | None
    actor: str
    type_: str
    redeliver: int | None  # an earlier like's index: sent again instead


# Weighted towards collisions (one user, one group, one type), where aggregation and its moves happen.
likes = st.builds(
    Like,
    st.sampled_from(("alice", "alice", "bob")),
    st.sampled_from(("g1", "g1", "g2", None)),
    st.sampled_from(("a1", "a2", "a3", "a4", "a5")),
    st.sampled_from(("post.liked", "post.liked", "post.loved")),
    st.one_of(st.none(), st.integers(0, 40)),
)
steps = st.lists(
    st.one_of(
        likes,
        likes,
        st.tuples(st.just("advance"), st.integers(0, 2000)),
        st.tuples(st.just("read"), st.sampled_from(USERS), st.integers(0, 60)),
        st.tuples(st.just("batch"), st.integers(2, 4)),
    ),
    max_size=40,
)


def _run(script: list[object]) -> tuple[ModelInbox, dict[str, int]]:
    """Plays a script; returns the inbox and how many distinct events each user got.

    ``("batch", k)`` commits the next k likes together (one write call: in-batch aggregation and moves);
    every like plans a capped web push, so pending deliveries move, cap and cancel along the way.
    """
    clock, inbox = FakeClock(), ModelInbox()
    sent: list[Like] = []
    per_user: dict[str, set[str]] = {user: set() for user in USERS}
    held: list[InboxWrite] = []
    batch = 1
    for step in script:
        if isinstance(step, Like):
            index = step.redeliver if step.redeliver is not None and step.redeliver < len(sent) else None
            chosen = sent[index] if index is not None else step
            event_id = f"e{index if index is not None else len(sent)}"
            if index is None:
                sent.append(step)
            held.append(
                like(
                    event_id,
                    chosen.user,
                    group=chosen.group,
                    actor=chosen.actor,
                    type_=chosen.type_,
                    channels=(PUSH,),
                )
            )
            per_user[chosen.user].add(event_id)
            if len(held) >= batch:
                inbox.write(held, clock.time())
                held, batch = [], 1
        elif step[0] == "advance":  # type: ignore[index]
            clock.advance(step[1])  # type: ignore[index]
        elif step[0] == "read":  # type: ignore[index]
            inbox.mark_read(step[1], step[2])  # type: ignore[index]
        else:
            batch = step[1]  # type: ignore[index]
    if held:
        inbox.write(held, clock.time())
    return inbox, {user: len(events) for user, events in per_user.items()}


@settings(max_examples=500, deadline=None)
@given(steps)
@example(  # a stored aggregate with a pending push, then a chain of two replacements in one commit
    [
        Like("alice", "g1", "a1", "post.liked", None),
        ("batch", 2),
        Like("alice", "g1", "a2", "post.liked", None),
        Like("alice", "g1", "a3", "post.liked", None),
    ]
)
def test_pending_pushes_follow_the_visible_notifications(script: list[object]) -> None:
    """Each visible unread notification has exactly one pending push (moved along its chain, capped into a
    digest or not); a read one has none, and no replaced row keeps one."""
    inbox, _ = _run(script)
    for user in USERS:
        shown = {row.seq: row for row in inbox.shown(user)}
        pending = [(seq, item) for (_, u, seq), items in inbox.pending.items() if u == user for item in items]
        assert all(seq in shown for seq, _ in pending)
        for seq, row in shown.items():
            assert len([item for s, item in pending if s == seq]) == (0 if row.read else 1), (seq, pending)
        assert all(item.seq == seq for seq, item in pending)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_counts_never_drift(script: list[object]) -> None:
    """Every event counts once in exactly one visible notification; unread counts only visible rows."""
    inbox, events = _run(script)
    for user in USERS:
        shown = inbox.shown(user)
        assert sum(row.body["count"] for row in shown) == events[user]
        assert inbox.unread(user) == len([row for row in shown if not row.read])
        assert len(inbox.rows.get(user, {})) == events[user]  # one row per event, replaced or not


@settings(max_examples=300, deadline=None)
@given(steps)
def test_replaces_chains_stay_consistent(script: list[object]) -> None:
    """Each replacement points back to the previous row of its group and type, which points forward to it."""
    inbox, _ = _run(script)
    for user in USERS:
        rows = inbox.rows.get(user, {})
        assert sorted(rows) == list(range(1, len(rows) + 1))  # seqs gap-free
        replaced = [row.replaces for row in rows.values() if row.replaces is not None]
        assert len(replaced) == len(set(replaced))  # each row replaced at most once
        for row in rows.values():
            if row.replaces is not None:
                before = rows[row.replaces]
                assert before.seq < row.seq
                assert before.replaced_by == row.seq
                assert (before.group_key, before.body["type"]) == (row.group_key, row.body["type"])
                assert row.body["count"] == before.body["count"] + 1
                assert row.group_started_at == before.group_started_at
            if row.replaced_by is not None:
                assert rows[row.replaced_by].replaces == row.seq
            actors = [a["id"] for a in row.body["actors"]]
            assert len(actors) <= 3
            assert len(actors) == len(set(actors))


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(0, 30), st.integers(1, 5))
def test_resume_after_aggregation_is_gap_free(script: list[object], after: int, page: int) -> None:
    """A client resuming from any seq gets exactly the visible notifications after it, ascending, once."""
    inbox, _ = _run(script)
    session = Session(after, page_size=page)
    step = session.start()
    got: list[int] = []
    for _ in range(100):  # bounded: each page moves forward
        got.extend(seq for seq, _ in step.send)
        if step.fetch_after is None:
            break
        rows = inbox.backlog("alice", step.fetch_after)[:page]
        step = session.backlog(rows)
    assert got == [row.seq for row in inbox.shown("alice") if row.seq > after]
    # Then live: the next notification (a new row) arrives exactly once, right after the backlog.
    clock = FakeClock(2_000_000_000.0)
    [new] = inbox.write([like("late", "alice", group="g1")], clock.time())
    assert session.live(new.seq, new.payload).send == (((new.seq, new.payload),) if new.seq > after else ())


def test_a_commits_notification_ids_are_unique_sorted_and_random_across_commits() -> None:
    """The ids a store gives the rows of one commit sort in the order made; two commits draw apart."""
    first, second = id_source(1_790_000_000.0), id_source(1_790_000_000.0)
    ids = [first() for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert second() not in ids


def test_a_stored_row_without_a_start_cannot_be_joined() -> None:
    """Rows written before aggregation (no group start) stay alone; a started row reads back its state."""
    payload = b'{"type":"post.liked","count":2,"actors":[{"id":"carol"},{"id":"bob"}]}'
    assert current_from_row(7, payload, None) is None
    current = current_from_row(7, payload, 100.0)
    assert current is not None
    assert (current.seq, current.type, current.started_at, current.count) == (7, "post.liked", 100.0, 2)
    assert current.actors == ({"id": "carol"}, {"id": "bob"})
    bare = current_from_row(8, b'{"type":"post.liked"}', 100.0)
    assert bare is not None
    assert (bare.count, bare.actors) == (1, ())

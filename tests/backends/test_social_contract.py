"""The social parts of the store contract, over every store backend (the ``store`` fixture): aggregation in
the inbox write, pending offline deliveries and caps, read-sync cancellation, bulk subscribers and topic
boundaries, preferences and app rules, the decision log."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.core.models import ChannelPlan, Event, InboxWrite
from tidings.core.rules import (
    AGGREGATE,
    CANCEL,
    DEFER,
    DELIVER,
    DROP,
    SUPPRESS,
    AppRules,
    Cap,
    Decision,
    QuietHours,
    UserPreferences,
)
from tidings.core.session import Session
from tidings.ports import Store
from tidings.testing import FakeClock

PUSH = ChannelPlan("web_push", "app default", cap=2, cap_window=3600.0)
_ids = itertools.count()


def like(
    event_id: str,
    user: str = "alice",
    *,
    actor: str = "bob",
    group: str | None = "post:42:like",
    channels: tuple[ChannelPlan, ...] = (),
    window: float = 3600.0,
) -> InboxWrite:
    event = Event(
        id=event_id,
        app="app1",
        type="post.liked",
        accepted_at=0.0,
        recipients=(user,),
        actor={"id": actor, "name": actor.title()},
        object={"id": "post:42"},
        group_key=group,
    )
    return InboxWrite("app1", user, event, window if group else 0.0, 3, channels, "recipient")


async def visible(store: Store, user: str = "alice") -> list[dict[str, Any]]:
    items = await store.inbox.page("app1", user, after=0, before=None, limit=1000, unread_only=False)
    return [item.to_json() for item in items]


async def test_likes_in_the_window_become_one_notification_replacing_the_last(
    store: Store, clock: FakeClock
) -> None:
    """Three likes: the user sees one notification, seq 3, "Dan and 2 others", which replaces seq 2."""
    for n, actor in enumerate(("bob", "carol", "dan")):
        await store.inbox.write([like(f"e{n}", actor=actor)])
        clock.advance(60)
    [shown] = await visible(store)
    assert (shown["seq"], shown["replaces"], shown["count"]) == (3, 2, 3)
    assert [a["id"] for a in shown["actors"]] == ["dan", "carol", "bob"]
    assert [n.seq for n in await store.inbox.backlog("app1", "alice", 0, 100)] == [3]
    assert [n.seq for n in await store.inbox.backlog("app1", "alice", 2, 100)] == [3]
    assert await store.inbox.counts("app1", "alice") == (1, 1)
    assert await store.inbox.last_seq("app1", "alice") == 3


async def test_an_aggregate_in_one_batch_and_its_redelivery(store: Store) -> None:
    """Two likes in one batch commit rows 1 and 2 (2 replaces 1); writing them again changes nothing."""
    writes = [like("e1"), like("e2", actor="carol")]
    first = await store.inbox.write(writes)
    assert [n.seq for n in first] == [1, 2]
    again = await store.inbox.write(writes)
    assert again == first
    assert [n["seq"] for n in await visible(store)] == [2]
    decisions = await store.decisions.for_event("app1", "e2", user=None, after=None, limit=10)
    assert [(d.kind, d.channel, d.seq) for d in decisions] == [(AGGREGATE, "in_app", 2)]
    assert decisions[0].detail == {"replaces": 1, "count": 2}


async def test_the_window_and_the_type_bound_a_group(store: Store, clock: FakeClock) -> None:
    """After the window a like starts a new notification; no group key or a zero window never aggregates."""
    await store.inbox.write([like("e1")])
    clock.advance(3600)
    await store.inbox.write([like("e2"), like("e3", group=None), like("e4", window=0.0)])
    assert [(n["seq"], n["replaces"]) for n in await visible(store)] == [(s, None) for s in (1, 2, 3, 4)]


async def test_pending_pushes_move_to_the_aggregate_and_caps_defer_into_a_digest(
    store: Store, clock: FakeClock
) -> None:
    """Likes share one pending push; past the cap of 2 an hour, other notifications' pushes wait as a digest."""
    await store.inbox.write([like("e1", channels=(PUSH,))])
    await store.inbox.write([like("e2", actor="carol", channels=(PUSH,))])
    pending = await store.decisions.pending("app1", "alice")
    assert [(p.seq, p.channel, p.event_id, p.due_at) for p in pending] == [
        (2, "web_push", "e1", clock.time())
    ]
    await store.inbox.write([like("e3", group="other", channels=(PUSH,))])
    await store.inbox.write([like("e4", group="third", channels=(PUSH,))])
    pending = await store.decisions.pending("app1", "alice")
    assert [(p.seq, p.digest) for p in pending] == [(2, False), (3, False), (4, True)]
    window_end = clock.time() - clock.time() % 3600 + 3600
    assert pending[2].due_at == window_end


async def test_a_pending_push_moves_straight_to_the_end_of_a_chain_committed_at_once(store: Store) -> None:
    """A stored like with a pending push, then two likes in one commit: the push ends on the last row."""
    await store.inbox.write([like("e1", channels=(PUSH,))])
    await store.inbox.write(
        [like("e2", actor="carol", channels=(PUSH,)), like("e3", actor="dan", channels=(PUSH,))]
    )
    assert [(p.seq, p.event_id) for p in await store.decisions.pending("app1", "alice")] == [(3, "e1")]


async def test_the_decisions_of_a_capped_push(store: Store, clock: FakeClock) -> None:
    """The decision log says which push went at once and which waits for the digest, and until when."""
    for n in range(3):
        await store.inbox.write([like(f"e{n}", group=None, channels=(PUSH,))])
    kinds = []
    for n in range(3):
        found = await store.decisions.for_event("app1", f"e{n}", user="alice", after=None, limit=10)
        kinds.append([(d.kind, d.channel) for d in found])
    assert kinds[0] == kinds[1] == [(DELIVER, "in_app"), (DELIVER, "web_push")]
    assert kinds[2] == [(DEFER, "web_push"), (DELIVER, "in_app")]
    [defer] = await store.decisions.for_event("app1", "e2", user="alice", after=None, limit=1)
    assert defer.detail == {"due_at": clock.time() - clock.time() % 3600 + 3600, "digest": True}
    [then] = await store.decisions.for_event(
        "app1", "e2", user="alice", after=("alice", DEFER, "web_push"), limit=1
    )
    assert (then.kind, then.channel) == (DELIVER, "in_app")  # keyset pages along (user, kind, channel)


async def test_reading_cancels_pending_deliveries_and_says_so(store: Store, clock: FakeClock) -> None:
    """Read on one device: the notification's pending push is cancelled, and the log records why."""
    await store.inbox.write(
        [like("e1", group=None, channels=(PUSH,)), like("e2", group=None, channels=(PUSH,))]
    )
    assert await store.inbox.mark("app1", "alice", "read", seqs=[2], up_to=None, at=clock.time()) == 1
    assert [p.seq for p in await store.decisions.pending("app1", "alice")] == [1]
    assert await store.inbox.mark("app1", "alice", "seen", seqs=None, up_to=5, at=clock.time()) == 2
    assert await store.decisions.pending("app1", "alice") == []
    cancels = [
        d
        for e in ("e1", "e2")
        for d in await store.decisions.for_event("app1", e, user=None, after=None, limit=10)
        if d.kind == CANCEL
    ]
    assert [(d.event_id, d.seq, d.reason) for d in cancels] == [
        ("e1", 1, "the user has seen the notification: no web_push needed"),
        ("e2", 2, "the user has read the notification: no web_push needed"),
    ]


async def test_replaced_rows_leave_counts_lists_and_unread_lists(store: Store, clock: FakeClock) -> None:
    """Unread counts, the unread list and the newest-first list only ever show the current aggregate."""
    await store.inbox.write([like("e1"), like("e2", group="g2")])
    await store.inbox.mark("app1", "alice", "read", seqs=[2], up_to=None, at=clock.time())
    await store.inbox.write([like("e3", actor="carol")])  # replaces seq 1
    assert await store.inbox.counts("app1", "alice") == (1, 2)
    unread = await store.inbox.page("app1", "alice", after=None, before=None, limit=10, unread_only=True)
    assert [i.seq for i in unread] == [3]
    newest = await store.inbox.page("app1", "alice", after=None, before=3, limit=10, unread_only=False)
    assert [i.seq for i in newest] == [2]


async def test_racing_writers_keep_one_consistent_aggregate(store: Store) -> None:
    """Many concurrent commits of likes for one user: one visible notification counting them all."""
    await asyncio.gather(*(store.inbox.write([like(f"e{n}", actor=f"u{n}")]) for n in range(20)))
    [shown] = await visible(store)
    assert (shown["seq"], shown["count"], shown["replaces"]) == (20, 20, 19)
    assert await store.inbox.counts("app1", "alice") == (1, 1)


# --- topics ---------------------------------------------------------------------------------------------------


async def test_bulk_subscribe_is_idempotent(store: Store) -> None:
    """Importing followers twice adds them once; a partly new list adds only the new ones."""
    users = [f"u{i:03d}" for i in range(300)]
    assert await store.topics.subscribe_many("app1", "followers:bob", users) == 300
    assert await store.topics.subscribe_many("app1", "followers:bob", users) == 0
    assert await store.topics.subscribe_many("app1", "followers:bob", [*users[:10], "zed", "zed"]) == 1
    assert await store.topics.subscribe_many("app1", "followers:bob", []) == 0
    assert len(await store.topics.page("app1", "followers:bob", None, 1000)) == 301


async def test_boundaries_cut_a_topic_into_chunks_without_reading_it_whole(store: Store) -> None:
    """Every 100th subscriber id ends a chunk; boundaries go on after a given id, at most ``limit`` of them."""
    users = [f"u{i:04d}" for i in range(1050)]
    await store.topics.subscribe_many("app1", "t", users)
    assert await store.topics.boundaries("app1", "t", None, 100, 20) == [
        users[i] for i in range(99, 1050, 100)
    ]
    assert await store.topics.boundaries("app1", "t", None, 100, 3) == [users[99], users[199], users[299]]
    assert await store.topics.boundaries("app1", "t", users[299], 100, 2) == [users[399], users[499]]
    assert await store.topics.boundaries("app1", "t", users[999], 100, 5) == []
    assert await store.topics.boundaries("app2", "t", None, 1, 5) == []


# --- preferences, rules, decisions -------------------------------------------------------------------------------


async def test_preferences_and_rules_are_stored_whole(store: Store) -> None:
    """What a user or an app sets is what the fan-out reads back; unset means None (the defaults)."""
    prefs = UserPreferences(
        {"likes": {"web_push": False}},
        frozenset({"carol"}),
        frozenset(),
        QuietHours(1320, 420, "Europe/Paris"),
    )
    assert await store.preferences.user("app1", "alice") is None
    await store.preferences.set_user("app1", "alice", prefs)
    assert await store.preferences.user("app1", "alice") == prefs
    assert await store.preferences.users("app1", ["alice", "bob", "alice"]) == {"alice": prefs}
    assert await store.preferences.user("app2", "alice") is None
    await store.preferences.set_user("app1", "alice", UserPreferences())
    assert await store.preferences.user("app1", "alice") == UserPreferences()
    rules = AppRules(caps={"email": Cap(1, 60.0)}, ttl=30.0)
    assert await store.preferences.rules("app1") is None
    await store.preferences.set_rules("app1", rules)
    assert await store.preferences.rules("app1") == rules


async def test_decisions_are_recorded_once_and_listed_by_user(store: Store, clock: FakeClock) -> None:
    """Recording a decision again (a redelivery) keeps the first; pages follow (user, kind, channel)."""
    now = clock.time()
    made = [
        Decision("app1", "e1", "", DROP, "stale", at=now),
        Decision("app1", "e1", "carol", SUPPRESS, "muted actor", at=now),
        Decision("app1", "e1", "bob", SUPPRESS, "muted thread", at=now),
    ]
    await store.decisions.record(made)
    await store.decisions.record([Decision("app1", "e1", "bob", SUPPRESS, "changed?", at=now + 1)])
    found = await store.decisions.for_event("app1", "e1", user=None, after=None, limit=10)
    assert [(d.user, d.reason) for d in found] == [
        ("", "stale"),
        ("bob", "muted thread"),
        ("carol", "muted actor"),
    ]
    assert found[1] == made[2]
    page = await store.decisions.for_event("app1", "e1", user=None, after=("bob", SUPPRESS, ""), limit=10)
    assert [d.user for d in page] == ["carol"]
    assert [
        d.user for d in await store.decisions.for_event("app1", "e1", user="bob", after=None, limit=9)
    ] == ["bob"]
    assert await store.decisions.for_event("app2", "e1", user=None, after=None, limit=10) == []
    assert await store.decisions.prune(now + 0.5) == 3
    assert await store.decisions.for_event("app1", "e1", user=None, after=None, limit=10) == []


# --- the properties, on the real store ---------------------------------------------------------------------------

scripts = st.lists(
    st.one_of(
        st.tuples(
            st.just("like"), st.sampled_from(("g1", "g2", None)), st.sampled_from("abcde"), st.integers(0, 9)
        ),
        st.tuples(st.just("advance"), st.integers(0, 2500)),
        st.tuples(st.just("read"), st.integers(0, 40)),
    ),
    max_size=25,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=scripts, after=st.integers(0, 25))
async def test_store_aggregation_properties(
    store: Store, clock: FakeClock, script: list[Any], after: int
) -> None:
    """Counts never drift, replaced rows never show, and a resume after aggregation is gap-free."""
    user = f"p{next(_ids)}"
    events: set[str] = set()
    for step in script:
        if step[0] == "like":
            _, group, actor, redeliver = step
            event_id = f"{user}-{redeliver if redeliver < len(events) else len(events)}"
            events.add(event_id)
            await store.inbox.write([like(event_id, user, actor=actor, group=group)])
        elif step[0] == "advance":
            clock.advance(step[1])
        else:
            await store.inbox.mark("app1", user, "read", seqs=None, up_to=step[1], at=clock.time())
    shown = await visible(store, user)
    assert sum(n["count"] for n in shown) == len(events)
    seqs = {n["seq"] for n in shown}
    assert all(n["replaces"] not in seqs and (n["replaces"] or 0) < n["seq"] for n in shown)
    unread, _ = await store.inbox.counts("app1", user)
    assert unread == sum(1 for n in shown if n["read_at"] is None)
    session, got = Session(after, page_size=3), []
    step = session.start()
    for _ in range(50):
        got.extend(seq for seq, _ in step.send)
        if step.fetch_after is None:
            break
        rows = await store.inbox.backlog("app1", user, step.fetch_after, 3)
        step = session.backlog([(r.seq, r.payload) for r in rows])
    assert got == sorted(seq for seq in seqs if seq > after)
    assert all(
        orjson.loads(r.payload)["seq"] == r.seq for r in await store.inbox.backlog("app1", user, 0, 100)
    )


async def test_prune_forgets_old_decisions_and_pending_deliveries_no_sender_took(
    store: Store, clock: FakeClock
) -> None:
    """Past the retention, decisions and pending pushes that no sender took are forgotten: bounded tables."""
    await store.inbox.write([like("e1", group=None, channels=(PUSH,))])
    assert await store.decisions.prune(clock.time()) == 0
    assert await store.decisions.prune(clock.time() + 1) == 3  # deliver in_app, deliver web_push, the push
    assert await store.decisions.pending("app1", "alice") == []
    assert len(await visible(store)) == 1  # the inbox keeps its notifications

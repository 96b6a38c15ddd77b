"""The life of a notification in ``ports.Inbox``, over every store backend (the ``store`` fixture): retraction
at each stage, aggregates re-rendered from their surviving events, per-user states, and counters that always
equal a COUNT of the rows."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from backend_support import make_event

from tidings.backends.sql import lifecycle
from tidings.core import frames
from tidings.core.models import ChannelPlan, Event, InboxWrite
from tidings.ports import Store
from tidings.testing import FakeClock


def like(
    event_id: str, actor: str, user: str = "alice", *, cancel_key: str | None = None, at: float = 0
) -> InboxWrite:
    """A like of post 42 by ``actor``, aggregated with the other likes of the post."""
    event = dataclasses.replace(
        make_event(event_id, recipients=(user,), accepted_at=at or 1_790_000_000.0),
        actor={"id": actor, "name": actor.title()},
        group_key="post:42",
        cancel_key=cancel_key,
    )
    return InboxWrite("app1", user, event, aggregate_window=3600.0)


def plain(event_id: str, user: str = "alice", **changes: Any) -> InboxWrite:
    event: Event = dataclasses.replace(make_event(event_id, recipients=(user,)), **changes)
    return InboxWrite("app1", user, event)


async def backlog(store: Store, user: str = "alice", after: int = 0) -> list[tuple[int, dict[str, Any]]]:
    return [(n.seq, orjson.loads(n.payload)) for n in await store.inbox.backlog("app1", user, after, 1000)]


async def page(store: Store, user: str = "alice", **filters: Any) -> list[dict[str, Any]]:
    items = await store.inbox.page(
        "app1", user, after=None, before=None, limit=100, unread_only=False, **filters
    )
    return [item.to_json() for item in items]


async def rows_count(store: Store, user: str = "alice") -> tuple[int, int, int]:
    """What the counters must equal: a COUNT of the rows."""
    read = store.db.read  # type: ignore[attr-defined]
    if type(store).__name__ == "PostgresStore":
        from tidings.backends.sql.inbox_ops import on_async

        read = on_async(store.db.read)  # type: ignore[attr-defined]
    result: tuple[int, int, int] = await read(lambda conn: lifecycle.count_rows(conn, "app1", user))
    return result


async def assert_counters_exact(store: Store, user: str = "alice") -> tuple[int, int, int]:
    counted = await rows_count(store, user)
    assert await store.inbox.tallies("app1", user) == counted
    return counted


# --- retraction ---------------------------------------------------------------------------------------------------


async def test_retracted_after_delivery_the_notification_is_gone_and_a_marker_takes_the_next_seq(
    store: Store,
) -> None:
    """A delivered notification retracted: not in the page, not counted, not in a backlog; the stream shows a
    retract frame at the next seq, so it stays gap-free for every client, whenever it resumes."""
    await store.inbox.write([plain("e1"), plain("e2")])
    rows = await store.inbox.retract("app1", event_ids=["e1"], cancel_keys=[])
    [marker] = rows
    assert (marker.user, marker.seq, marker.kind) == ("alice", 3, "retract")
    assert orjson.loads(marker.payload) == {"type": "retract", "seqs": [1], "unread": 1, "unseen": 1}
    assert [n["seq"] for n in await page(store)] == [2]
    assert await store.inbox.counts("app1", "alice") == (1, 1)
    assert [(seq, body.get("type")) for seq, body in await backlog(store)] == [
        (2, "post.liked"),
        (3, "retract"),
    ]
    assert [seq for seq, _ in await backlog(store, after=2)] == [3]  # a client that had seq 1 learns of it
    assert await store.inbox.last_seq("app1", "alice") == 3
    await assert_counters_exact(store)


async def test_a_redelivered_event_after_its_retraction_writes_nothing(store: Store) -> None:
    """The worker's batch read again (a crash before its ack) must not bring the notification back."""
    await store.inbox.write([plain("e1")])
    await store.inbox.retract("app1", event_ids=["e1"], cancel_keys=[])
    [again] = await store.inbox.write([plain("e1")])
    assert again.kind == "gone"
    assert await page(store) == []
    assert await store.inbox.last_seq("app1", "alice") == 2  # the row and its marker; nothing new


async def test_a_retraction_recorded_before_the_fan_out_wins(store: Store) -> None:
    """Retracted before its fan-out (by id, or by cancel key): never delivered to anyone, and logged."""
    assert await store.inbox.retract("app1", event_ids=["e1"], cancel_keys=["like:bob:42"]) == []
    written = await store.inbox.write(
        [plain("e1"), plain("e2", "bob", cancel_key="like:bob:42"), plain("e3", "bob")]
    )
    assert [(n.event_id, n.kind) for n in written] == [("e1", "gone"), ("e2", "gone"), ("e3", "notification")]
    assert await page(store) == []
    assert [n["event_id"] for n in await page(store, "bob")] == ["e3"]
    assert await store.inbox.last_seq("app1", "alice") == 0
    decisions = await store.decisions.for_event("app1", "e2", user=None, after=None, limit=10)
    assert [d.kind for d in decisions] == ["retract"]
    await assert_counters_exact(store, "bob")


async def test_a_cancel_key_retracts_the_events_accepted_before_it_only(
    store: Store, clock: FakeClock
) -> None:
    """Like, unlike, like again with the same key: the second like is shown (it came after the cancel)."""
    await store.inbox.write([plain("e1", cancel_key="like:bob:42")])
    clock.advance(10)
    await store.inbox.retract("app1", event_ids=[], cancel_keys=["like:bob:42"])
    clock.advance(10)
    later = clock.time()
    [again] = await store.inbox.write([plain("e2", cancel_key="like:bob:42", accepted_at=later)])
    assert again.kind == "notification"
    assert [n["event_id"] for n in await page(store)] == ["e2"]


async def test_a_topic_fan_out_retracted_mid_way_reaches_no_inbox(store: Store) -> None:
    """Chunks written before the retraction are removed; chunks written after it create nothing."""
    followers = [f"u{n:05d}" for n in range(1500)]
    event = dataclasses.replace(make_event("big", recipients=None), topic="bob")
    first = [InboxWrite("app1", user, event) for user in followers[:500]]
    await store.inbox.write(first)
    rows = await store.inbox.retract("app1", event_ids=["big"], cancel_keys=[])
    assert (len(rows), {r.kind for r in rows}) == (500, {"retract"})
    for start in (500, 1000):
        written = await store.inbox.write(
            [InboxWrite("app1", u, event) for u in followers[start : start + 500]]
        )
        assert {n.kind for n in written} == {"gone"}
    for user in (followers[0], followers[499], followers[500], followers[-1]):
        assert await page(store, user) == []
        assert await store.inbox.counts("app1", user) == (0, 0)


async def test_a_retraction_cancels_the_pending_offline_deliveries(store: Store) -> None:
    write = dataclasses.replace(plain("e1"), channels=(ChannelPlan("email", "recipient", due_at=2e9),))
    await store.inbox.write([write])
    assert [d.channel for d in await store.decisions.pending("app1", "alice")] == ["email"]
    await store.inbox.retract("app1", event_ids=["e1"], cancel_keys=[])
    assert await store.decisions.pending("app1", "alice") == []
    decisions = await store.decisions.for_event("app1", "e1", user="alice", after=None, limit=10)
    assert ("cancel", "email") in {(d.kind, d.channel) for d in decisions}


# --- aggregates ----------------------------------------------------------------------------------------------------


async def test_an_aggregate_loses_the_retracted_actor_as_a_new_seq_that_replaces_it(store: Store) -> None:
    """ "Bob and Ann liked" becomes "Ann liked": a new seq that replaces the shown one, counts unchanged."""
    await store.inbox.write([like("e1", "ann"), like("e2", "bob")])
    [(seq, head)] = [(n["seq"], n) for n in await page(store)]
    assert (seq, [a["id"] for a in head["actors"]], head["count"]) == (2, ["bob", "ann"], 2)
    [rerendered] = await store.inbox.retract("app1", event_ids=["e2"], cancel_keys=[])
    body = orjson.loads(rerendered.payload)
    assert (rerendered.seq, rerendered.kind, body["replaces"]) == (3, "notification", 2)
    assert ([a["id"] for a in body["actors"]], body["count"]) == (["ann"], 1)
    assert [(n["seq"], n["count"]) for n in await page(store)] == [(3, 1)]
    assert await assert_counters_exact(store) == (1, 1, 0)
    # A like after the re-render joins it as a replay of the surviving events would.
    await store.inbox.write([like("e3", "cat")])
    [latest] = await page(store)
    assert ([a["id"] for a in latest["actors"]], latest["count"]) == (["cat", "ann"], 2)
    # The last surviving events retracted: the aggregate is removed, with a marker.
    rows = await store.inbox.retract("app1", event_ids=["e1", "e3"], cancel_keys=[])
    assert [r.kind for r in rows] == ["retract"]
    assert orjson.loads(rows[0].payload)["seqs"] == [latest["seq"]]
    assert await page(store) == []
    await assert_counters_exact(store)


async def test_a_read_aggregate_stays_read_when_it_loses_an_actor(store: Store, clock: FakeClock) -> None:
    await store.inbox.write([like("e1", "ann"), like("e2", "bob")])
    await store.inbox.mark("app1", "alice", "read", seqs=[2], up_to=None, at=clock.time())
    await store.inbox.retract("app1", event_ids=["e1"], cancel_keys=[])
    [head] = await page(store)
    assert head["read_at"] is not None
    assert [a["id"] for a in head["actors"]] == ["bob"]
    assert await assert_counters_exact(store) == (0, 1, 0)


async def test_scrub_actor_takes_a_user_out_of_every_aggregate(store: Store) -> None:
    """For an erasure: the actor leaves every aggregate of the app where they appear, re-rendered."""
    await store.inbox.write(
        [like("e1", "ann"), like("e2", "bob"), like("e3", "ann", "carol"), like("e4", "dan", "carol")]
    )
    rows = await store.inbox.scrub_actor("app1", "ann")
    assert sorted((r.user, r.kind) for r in rows) == [("alice", "notification"), ("carol", "notification")]
    for user in ("alice", "carol"):
        [head] = await page(store, user)
        assert ([a["id"] for a in head["actors"]], head["count"]) == (
            ["bob" if user == "alice" else "dan"],
            1,
        )
    assert await store.inbox.scrub_actor("app1", "ann") == []  # idempotent


# --- per-user states ------------------------------------------------------------------------------------------------


async def test_archive_unarchive_unread_delete_and_the_status_filters(store: Store, clock: FakeClock) -> None:
    await store.inbox.write([plain(f"e{n}") for n in range(1, 6)])
    await store.inbox.mark("app1", "alice", "read", seqs=[1, 2], up_to=None, at=clock.time())
    changed, counts = await store.inbox.change("app1", "alice", "archive", [1, 3, 99])
    assert (changed, counts) == ([1, 3], (2, 3, 2))
    assert [n["seq"] for n in await page(store, status="inbox")] == [5, 4, 2]
    assert [n["seq"] for n in await page(store, status="archived")] == [3, 1]
    assert [n["seq"] for n in await page(store, status="unread")] == [5, 4]
    assert [n["seq"] for n in await page(store, status="all")] == [5, 4, 3, 2, 1]
    assert (await store.inbox.change("app1", "alice", "archive", [1]))[0] == []  # already archived
    assert await store.inbox.change("app1", "alice", "unarchive", [3]) == ([3], (3, 4, 1))
    assert await store.inbox.change("app1", "alice", "unread", [2]) == ([2], (4, 4, 1))
    assert await store.inbox.change("app1", "alice", "delete", [4, 1]) == ([1, 4], (3, 3, 0))
    assert [n["seq"] for n in await page(store, status="all")] == [5, 3, 2]
    assert [seq for seq, _ in await backlog(store)] == [2, 3, 5]  # deleted: gone from the stream too
    await assert_counters_exact(store)


async def test_the_type_filter(store: Store) -> None:
    await store.inbox.write([plain("e1"), plain("e2", type="comment.added"), plain("e3")])
    assert [n["seq"] for n in await page(store, types=["comment.added"])] == [2]
    assert [n["seq"] for n in await page(store, types=["post.liked", "x"])] == [3, 1]


async def test_counters_stay_exact_through_aggregation_and_marks(store: Store, clock: FakeClock) -> None:
    """A replacement never counts twice; marks and retractions keep the counters equal to a COUNT."""
    await store.inbox.write([like("e1", "ann"), plain("p1"), like("e2", "bob")])
    assert await assert_counters_exact(store) == (2, 2, 0)
    await store.inbox.mark("app1", "alice", "seen", seqs=None, up_to=10, at=clock.time())
    assert await assert_counters_exact(store) == (2, 0, 0)
    await store.inbox.write([like("e3", "cat")])  # replaces a seen aggregate with an unseen one
    assert await assert_counters_exact(store) == (2, 1, 0)
    await store.inbox.retract("app1", event_ids=["p1"], cancel_keys=[])
    assert await assert_counters_exact(store) == (1, 1, 0)


def test_the_retract_marker_is_the_retract_frame() -> None:
    assert (
        frames.encode_retract([4], unread=1, unseen=0)
        == b'{"type":"retract","seqs":[4],"unread":1,"unseen":0}'
    )


async def test_each_recipients_retraction_is_in_the_decision_log(store: Store) -> None:
    await store.inbox.write([plain("e1"), plain("e1", "bob")])
    await store.inbox.retract("app1", event_ids=["e1"], cancel_keys=[])
    decisions = await store.decisions.for_event("app1", "e1", user=None, after=None, limit=10)
    assert [(d.user, d.kind, d.seq) for d in decisions if d.kind == "retract"] == [
        ("", "retract", None),
        ("alice", "retract", 1),
        ("bob", "retract", 1),
    ]


async def test_a_retraction_racing_the_chunks_of_a_fan_out_leaves_no_row(store: Store) -> None:
    """Chunks of one event written concurrently with its retraction (PostgreSQL: on other connections): each
    chunk either commits before the retraction, which then removes its rows, or finds the retraction."""
    import asyncio

    event = dataclasses.replace(make_event("race", recipients=None), topic="bob")
    chunks = [[InboxWrite("app1", f"r{c}-{n:03d}", event) for n in range(100)] for c in range(8)]

    async def write(chunk: list[InboxWrite]) -> None:
        await store.inbox.write(chunk)

    tasks = [asyncio.ensure_future(write(chunk)) for chunk in chunks[:4]]
    tasks.append(asyncio.ensure_future(store.inbox.retract("app1", event_ids=["race"], cancel_keys=[])))
    tasks += [asyncio.ensure_future(write(chunk)) for chunk in chunks[4:]]
    await asyncio.gather(*tasks)
    for chunk in chunks:
        for write_ in (chunk[0], chunk[-1]):
            assert await page(store, write_.user) == []
            await assert_counters_exact(store, write_.user)

"""The ``ports.Inbox`` contract, run over every store backend (the ``store`` fixture)."""

from __future__ import annotations

import asyncio

import orjson
from backend_support import inbox_write

from tidings.core.clock import isoformat
from tidings.ports import Store
from tidings.testing import FakeClock


async def seqs_of(store: Store, user: str, app: str = "app1") -> list[int]:
    return [n.seq for n in await store.inbox.backlog(app, user, 0, 1000)]


async def test_seqs_are_gap_free_per_user_across_batches(store: Store) -> None:
    """A user's notifications are numbered 1, 2, 3, ... with no gaps, however the writes are batched."""
    await store.inbox.write([inbox_write("e1"), inbox_write("e2")])
    await store.inbox.write([inbox_write("e3")])
    await store.inbox.write([inbox_write(f"e{i}") for i in range(4, 9)])
    assert await seqs_of(store, "alice") == list(range(1, 9))
    assert await store.inbox.last_seq("app1", "alice") == 8


async def test_seqs_are_independent_between_users_and_apps(store: Store) -> None:
    """Each (app, user) has its own numbering: another user or the same id in another app starts at 1."""
    written = await store.inbox.write(
        [
            inbox_write("e1", "alice"),
            inbox_write("e2", "bob"),
            inbox_write("e3", "alice"),
            inbox_write("e4", "alice", app="app2"),
            inbox_write("e5", "bob"),
        ]
    )
    assert [(n.app, n.user, n.seq) for n in written] == [
        ("app1", "alice", 1),
        ("app1", "bob", 1),
        ("app1", "alice", 2),
        ("app2", "alice", 1),
        ("app1", "bob", 2),
    ]


async def test_payload_is_the_notification_made_at_commit(store: Store, clock: FakeClock) -> None:
    """The stored bytes are the notification JSON a user sees, with its seq and the commit time."""
    [stored] = await store.inbox.write([inbox_write("e1")])
    body = orjson.loads(stored.payload)
    assert body["seq"] == stored.seq == 1
    assert body["event_id"] == stored.event_id == "e1"
    assert body["created_at"] == isoformat(clock.time())
    assert body["actors"] == [{"id": "bob", "name": "Bob"}]
    assert len(body["id"]) == 26


async def test_redelivered_write_returns_the_same_row_and_creates_nothing(
    store: Store, clock: FakeClock
) -> None:
    """Writing an event again for the same user (a redelivery) gives back the first row unchanged."""
    [first] = await store.inbox.write([inbox_write("e1")])
    clock.advance(60)
    [again] = await store.inbox.write([inbox_write("e1")])
    assert again == first
    assert await seqs_of(store, "alice") == [1]
    assert await store.inbox.last_seq("app1", "alice") == 1


async def test_batch_with_duplicates_and_existing_rows(store: Store) -> None:
    """A batch may repeat a write and mix old and new rows: one row per event, new ones numbered in order."""
    [old] = await store.inbox.write([inbox_write("e1")])
    written = await store.inbox.write(
        [inbox_write("e2"), inbox_write("e1"), inbox_write("e2"), inbox_write("e3"), inbox_write("e1", "bob")]
    )
    assert [(n.user, n.event_id, n.seq) for n in written] == [
        ("alice", "e2", 2),
        ("alice", "e1", 1),
        ("alice", "e2", 2),
        ("alice", "e3", 3),
        ("bob", "e1", 1),
    ]
    assert written[1] == old
    assert written[0] == written[2]
    assert await seqs_of(store, "alice") == [1, 2, 3]


async def test_empty_write_is_a_no_op(store: Store) -> None:
    """Writing nothing returns nothing."""
    assert await store.inbox.write([]) == []


async def test_concurrent_writers_never_leave_gaps(store: Store) -> None:
    """Many writes for one user at once still number 1..N exactly once each."""
    batches = [[inbox_write(f"e{b}-{i}") for i in range(5)] for b in range(20)]
    await asyncio.gather(*(store.inbox.write(batch) for batch in batches))
    assert await seqs_of(store, "alice") == list(range(1, 101))


async def test_backlog_is_ascending_after_a_seq(store: Store) -> None:
    """Resume reads the rows after the client's last seq, oldest first, at most ``limit``."""
    await store.inbox.write([inbox_write(f"e{i}") for i in range(1, 11)])
    rows = await store.inbox.backlog("app1", "alice", 4, 3)
    assert [(n.seq, n.event_id) for n in rows] == [(5, "e5"), (6, "e6"), (7, "e7")]
    assert await store.inbox.backlog("app1", "alice", 10, 5) == []
    assert await store.inbox.backlog("app1", "nobody", 0, 5) == []


async def test_page_orders_and_filters(store: Store, clock: FakeClock) -> None:
    """Lists are newest first, oldest first after a seq, bounded by before, and can keep only unread rows."""
    await store.inbox.write([inbox_write(f"e{i}") for i in range(1, 11)])
    await store.inbox.mark("app1", "alice", "read", seqs=[2, 9], up_to=None, at=clock.time())

    async def page(
        after: int | None = None, before: int | None = None, limit: int = 100, unread_only: bool = False
    ) -> list[int]:
        items = await store.inbox.page(
            "app1", "alice", after=after, before=before, limit=limit, unread_only=unread_only
        )
        return [item.seq for item in items]

    assert await page() == list(range(10, 0, -1))
    assert await page(limit=3) == [10, 9, 8]
    assert await page(before=8, limit=3) == [7, 6, 5]
    assert await page(after=3, limit=3) == [4, 5, 6]
    assert await page(after=3, before=6) == [4, 5]
    assert await page(unread_only=True, limit=4) == [10, 8, 7, 6]
    assert await page(after=0, unread_only=True, limit=3) == [1, 3, 4]


async def test_page_carries_read_and_seen_state(store: Store, clock: FakeClock) -> None:
    """A listed row shows when it was read and seen."""
    await store.inbox.write([inbox_write("e1"), inbox_write("e2")])
    await store.inbox.mark("app1", "alice", "seen", seqs=None, up_to=2, at=clock.time())
    await store.inbox.mark("app1", "alice", "read", seqs=[1], up_to=None, at=clock.time() + 5)
    items = await store.inbox.page("app1", "alice", after=0, before=None, limit=10, unread_only=False)
    assert [(i.seq, i.read_at, i.seen_at) for i in items] == [
        (1, clock.time() + 5, clock.time()),
        (2, None, clock.time()),
    ]
    assert items[0].to_json()["read_at"] == isoformat(clock.time() + 5)


async def test_counts_and_mark_by_seqs(store: Store, clock: FakeClock) -> None:
    """Marking given seqs read/seen lowers the counts by exactly the rows that changed."""
    await store.inbox.write([inbox_write(f"e{i}") for i in range(1, 6)])
    assert await store.inbox.counts("app1", "alice") == (5, 5)
    assert (
        await store.inbox.mark("app1", "alice", "read", seqs=[1, 3, 3, 99], up_to=None, at=clock.time()) == 2
    )
    assert await store.inbox.counts("app1", "alice") == (3, 5)
    assert await store.inbox.mark("app1", "alice", "seen", seqs=[1, 2], up_to=None, at=clock.time()) == 2
    assert await store.inbox.counts("app1", "alice") == (3, 3)


async def test_mark_many_seqs_at_once(store: Store, clock: FakeClock) -> None:
    """A client marking a thousand notifications read in one request gets them all marked."""
    await store.inbox.write([inbox_write(f"e{i}") for i in range(1000)])
    assert (
        await store.inbox.mark("app1", "alice", "read", seqs=range(1, 1001), up_to=None, at=clock.time())
        == 1000
    )
    assert await store.inbox.counts("app1", "alice") == (0, 1000)


async def test_mark_up_to_sets_only_unset_rows(store: Store, clock: FakeClock) -> None:
    """``up_to`` marks every row up to a seq; rows marked before keep their first time and are not counted."""
    await store.inbox.write([inbox_write(f"e{i}") for i in range(1, 6)])
    first = clock.time()
    await store.inbox.mark("app1", "alice", "read", seqs=[2], up_to=None, at=first)
    clock.advance(30)
    assert await store.inbox.mark("app1", "alice", "read", seqs=None, up_to=4, at=clock.time()) == 3
    assert await store.inbox.mark("app1", "alice", "read", seqs=None, up_to=4, at=clock.time()) == 0
    items = await store.inbox.page("app1", "alice", after=0, before=None, limit=10, unread_only=False)
    assert [i.read_at for i in items] == [clock.time(), first, clock.time(), clock.time(), None]
    assert await store.inbox.counts("app1", "alice") == (1, 5)


async def test_mark_with_nothing_chosen_changes_nothing(store: Store, clock: FakeClock) -> None:
    """A mark request naming no seqs marks nothing."""
    await store.inbox.write([inbox_write("e1")])
    assert await store.inbox.mark("app1", "alice", "read", seqs=[], up_to=None, at=clock.time()) == 0
    assert await store.inbox.counts("app1", "alice") == (1, 1)


async def test_last_seq_of_a_user_without_rows_is_zero(store: Store) -> None:
    """A user nobody has notified has last seq 0."""
    assert await store.inbox.last_seq("app1", "nobody") == 0


async def test_apps_never_see_each_others_inboxes(store: Store, clock: FakeClock) -> None:
    """The same user id in two apps: reads, counts and marks of one app never touch the other."""
    await store.inbox.write([inbox_write(f"a{i}", app="app1") for i in range(3)])
    await store.inbox.write([inbox_write("b1", app="app2")])
    assert await store.inbox.mark("app2", "alice", "read", seqs=None, up_to=10, at=clock.time()) == 1
    assert await store.inbox.counts("app1", "alice") == (3, 3)
    assert await store.inbox.counts("app2", "alice") == (0, 1)
    assert [n.event_id for n in await store.inbox.backlog("app2", "alice", 0, 10)] == ["b1"]
    page = await store.inbox.page("app2", "alice", after=None, before=None, limit=10, unread_only=False)
    assert [i.seq for i in page] == [1]
    assert await store.inbox.last_seq("app1", "alice") == 3
    assert await store.inbox.last_seq("app2", "alice") == 1
    assert await store.inbox.last_seq("app3", "alice") == 0

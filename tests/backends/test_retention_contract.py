"""``ports.Retention`` and ``ports.UserData`` over every store backend: the sweep deletes what the limits say, in
bounded batches, leaving gap-free seqs above the floor; erasure leaves no row of the user in any table, twice;
export holds each kind of data, without secrets."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Connection, func, select

from tidings.backends.sql.postgres import PostgresStore, run_sync
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.delivery import Device, Profile, PushSubscription
from tidings.core.models import ChannelPlan, Event, InboxWrite
from tidings.core.retention import Limits
from tidings.core.rules import Decision, UserPreferences
from tidings.db.schema import metadata
from tidings.ports import Store
from tidings.testing import FakeClock

PUSH = ChannelPlan("web_push", "app default")


def note(event_id: str, user: str = "alice", *, push: bool = False, app: str = "app1") -> InboxWrite:
    event = Event(
        id=event_id,
        app=app,
        type="post.liked",
        accepted_at=0.0,
        recipients=(user,),
        actor={"id": "bob", "name": "Bob"},
    )
    return InboxWrite(app, user, event, channels=(PUSH,) if push else (), reason="recipient")


async def notify(store: Store, user: str, count: int, *, start: int = 0, push: bool = False) -> None:
    await store.inbox.write([note(f"{user}-{i}", user, push=push) for i in range(start, start + count)])


async def seqs(store: Store, user: str) -> list[int]:
    return [n.seq for n in await store.inbox.backlog("app1", user, 0, 10_000)]


async def sweep_all(store: Store, limits: Limits, *, users: int = 100, budget: int = 1000) -> list[int]:
    """Batches until the pass is done; returns the rows each batch deleted."""
    done, after, rows = False, None, []
    for _ in range(1000):  # bounded
        swept = await store.retention.sweep("app1", after, limits, users=users, budget=budget)
        rows.append(swept.rows)
        if swept.done:
            done = True
            break
        after = swept.next_after
    assert done
    return rows


async def user_rows(store: Store, user: str, app: str = "app1") -> dict[str, int]:
    """Rows naming the user, per table, in every table of the schema that has a user column."""

    def count(conn: Connection) -> dict[str, int]:
        found = {}
        for table in metadata.sorted_tables:
            if "user_id" in table.c and "app" in table.c:
                where = (table.c.app == app, table.c.user_id == user)
                n = conn.execute(select(func.count()).select_from(table).where(*where)).scalar()
                if n:
                    found[table.name] = int(n)
        return found

    if isinstance(store, SqliteStore):
        return await store.db.read(count)
    assert isinstance(store, PostgresStore)
    result: dict[str, int] = await run_sync(store.db.read)(count)
    return result


# --- the sweep --------------------------------------------------------------------------------------------------


async def test_the_count_limit_keeps_each_users_newest_rows_and_the_floor_says_what_went(
    store: Store,
) -> None:
    await notify(store, "alice", 10)
    await notify(store, "bob", 2)
    assert sum(await sweep_all(store, Limits(max_count=3))) == 7
    assert await seqs(store, "alice") == [8, 9, 10]
    assert await seqs(store, "bob") == [1, 2]
    assert await store.retention.floor("app1", "alice") == 7
    assert await store.retention.floor("app1", "bob") == 0
    assert await store.inbox.last_seq("app1", "alice") == 10  # numbering goes on
    await notify(store, "alice", 1, start=10)
    assert await seqs(store, "alice") == [8, 9, 10, 11]
    assert sum(await sweep_all(store, Limits(max_count=3))) == 1  # a second pass: only what is over
    assert await seqs(store, "alice") == [9, 10, 11]


async def test_the_counters_follow_the_sweep(store: Store) -> None:
    """Unread, unseen and archived counts are kept with the rows: a swept notification leaves them."""
    await notify(store, "alice", 6)
    await store.inbox.mark("app1", "alice", "read", seqs=[1, 5], up_to=None, at=1.0)
    await store.inbox.mark("app1", "alice", "seen", seqs=None, up_to=2, at=1.0)
    await store.inbox.change("app1", "alice", "archive", [3])
    assert await store.inbox.tallies("app1", "alice") == (3, 3, 1)
    assert sum(await sweep_all(store, Limits(max_count=2))) == 4  # seqs 1-4 go: 5 (read) and 6 stay
    assert await store.inbox.tallies("app1", "alice") == (1, 2, 0)
    assert await store.inbox.counts("app1", "alice") == (1, 2)


async def test_the_age_limit_deletes_rows_older_than_it(store: Store, clock: FakeClock) -> None:
    await notify(store, "alice", 4)
    clock.advance(100.0)
    await notify(store, "alice", 3, start=4)
    clock.advance(30.0)
    assert sum(await sweep_all(store, Limits(max_age=60.0))) == 4
    assert await seqs(store, "alice") == [5, 6, 7]
    assert await store.retention.floor("app1", "alice") == 4
    assert sum(await sweep_all(store, Limits(max_age=60.0))) == 0


async def test_batches_delete_at_most_their_budget_and_the_pass_still_finishes(
    store: Store, clock: FakeClock
) -> None:
    for user in ("alice", "bob", "carol"):
        await notify(store, user, 25)
    clock.advance(1000.0)
    rows = await sweep_all(store, Limits(max_age=10.0, max_count=5), users=2, budget=7)
    assert max(rows) <= 7
    assert sum(rows) == 75  # everything expired
    for user in ("alice", "bob", "carol"):
        assert await seqs(store, user) == []
        assert await store.retention.floor("app1", user) == 25
    rows = await sweep_all(store, Limits(max_count=5), users=2, budget=7)
    assert sum(rows) == 0


async def test_writes_during_the_sweep_keep_working_and_stay_gap_free_above_the_floor(store: Store) -> None:
    await notify(store, "alice", 30)

    async def writer() -> None:
        for i in range(30, 60):
            await store.inbox.write([note(f"alice-{i}")])
            await asyncio.sleep(0)

    async def sweeper() -> None:
        for _ in range(15):
            await sweep_all(store, Limits(max_count=10), budget=3)
            await asyncio.sleep(0)

    await asyncio.gather(writer(), sweeper())
    await sweep_all(store, Limits(max_count=10))
    kept = await seqs(store, "alice")
    floor = await store.retention.floor("app1", "alice")
    assert kept == list(range(floor + 1, 61))
    assert kept == list(range(51, 61))


async def test_swept_rows_take_their_pending_offline_deliveries_with_them(store: Store) -> None:
    await notify(store, "alice", 4, push=True)
    assert len(await store.decisions.pending("app1", "alice")) == 4
    await sweep_all(store, Limits(max_count=1))
    assert [d.seq for d in await store.decisions.pending("app1", "alice")] == [4]


async def test_two_sweepers_at_once_delete_each_row_once(store: Store) -> None:
    await notify(store, "alice", 50)
    first, second = await asyncio.gather(
        sweep_all(store, Limits(max_count=5), budget=4), sweep_all(store, Limits(max_count=5), budget=4)
    )
    assert sum(first) + sum(second) == 45
    assert await seqs(store, "alice") == list(range(46, 51))
    assert await store.retention.floor("app1", "alice") == 45


# --- erasure and export -----------------------------------------------------------------------------------------


async def everything_about(store: Store, clock: FakeClock, user: str) -> None:
    """One row of each kind of data the store holds about ``user``."""
    out = store.outbound
    await out.set_profile(Profile("app1", user, f"{user}@example.org", "fr", "Europe/Paris", user.title()))
    await out.add_subscription(
        PushSubscription(
            f"s-{user}", "app1", user, f"https://push.example/secret-{user}", "p256", "authk", 1.0
        )
    )
    await out.add_device(Device(f"d-{user}", "app1", user, "android", f"token-{user}", 1.0))
    await store.preferences.set_user("app1", user, UserPreferences(muted_actors=frozenset({"mallory"})))
    await store.topics.subscribe("app1", "followers:bob", user)
    await store.apps.issue_ticket(f"ticket-{user}", "app1", user, clock.time() + 60)
    await notify(store, user, 3, push=True)
    await out.claim("sender", clock.time(), 30.0, 1)  # one deferred row becomes a delivery in the ledger
    await store.decisions.record([Decision("app1", f"ev-{user}", user, "suppress", "muted", at=clock.time())])
    await sweep_all(store, Limits(max_count=2))


async def test_erasure_leaves_no_row_of_the_user_in_any_table_and_others_untouched(
    store: Store, clock: FakeClock
) -> None:
    await everything_about(store, clock, "alice")
    await everything_about(store, clock, "bob")
    before = await user_rows(store, "alice")
    assert set(before) >= {
        "inbox",
        "user_seqs",
        "inbox_floors",
        "user_preferences",
        "user_profiles",
        "push_subscriptions",
        "devices",
        "topic_subscribers",
        "deferred",
        "deliveries",
        "stream_tickets",
        "decisions",
    }, before
    bob = await user_rows(store, "bob")
    erased = await store.user_data.erase("app1", "alice", batch=1)
    assert erased["inbox"] == 2
    assert erased["profile"] == erased["devices"] == erased["push_subscriptions"] == 1
    assert await user_rows(store, "alice") == {}
    assert await user_rows(store, "bob") == bob
    again = await store.user_data.erase("app1", "alice")
    assert set(again.values()) == {0}
    assert await store.inbox.last_seq("app1", "alice") == 0
    await notify(store, "alice", 1)  # a later event starts a new inbox
    assert await seqs(store, "alice") == [1]


async def test_erasure_is_scoped_to_the_app(store: Store) -> None:
    await store.inbox.write([note("x1", app="app2")])
    await store.user_data.erase("app1", "alice")
    assert len(await store.inbox.backlog("app2", "alice", 0, 10)) == 1


async def test_export_holds_each_kind_of_data_without_secrets(store: Store, clock: FakeClock) -> None:
    await everything_about(store, clock, "alice")
    await store.inbox.mark("app1", "alice", "read", seqs=[3], up_to=None, at=clock.time())
    data: dict[str, Any] = await store.user_data.export("app1", "alice")
    assert data["profile"]["email"] == "alice@example.org"
    assert data["preferences"]["mutes"]["actors"] == ["mallory"]
    assert data["inbox"]["last_seq"] == 3
    assert data["inbox"]["swept_to"] == 1
    [newest, older] = data["inbox"]["notifications"]
    assert (newest["seq"], older["seq"]) == (3, 2)
    assert newest["read_at"] is not None
    assert older["read_at"] is None
    assert newest["notification"]["actors"] == [{"id": "bob", "name": "Bob"}]
    assert data["push_subscriptions"] == [
        {"id": "s-alice", "endpoint_origin": "https://push.example", "created_at": 1.0}
    ]
    assert data["devices"] == [{"id": "d-alice", "platform": "android", "created_at": 1.0}]
    assert data["topics"] == ["followers:bob"]
    assert [d["seq"] for d in data["pending_deliveries"]] == [2]  # 3 was read: its push is cancelled
    assert data["deliveries"][0]["channel"] == "web_push"
    assert {d["kind"] for d in data["decisions"]} >= {"suppress"}
    assert data["truncated"] is False
    text = repr(data)
    for secret in ("secret-alice", "p256", "authk", "token-alice"):
        assert secret not in text
    assert (await store.user_data.export("app1", "nobody"))["inbox"]["notifications"] == []

"""``ports.Inbox`` on PostgreSQL: the inbox write path (seq allocation under per-user counter locks,
aggregation, deferrals, cap counters) and its reads.

Invariant: every user's seqs are 1, 2, 3, ... without gaps, whatever number of processes write. A write
transaction first locks the counter rows of its users (``user_seqs``), in one fixed order (app, user_id), and
only then reads anything of theirs; so concurrent writers take turns per user and never deadlock with each
other, and a redelivery racing the first delivery finds its row. Marking rows read or seen takes the same
lock, so it never interleaves with a write that moves the pending deliveries of an aggregate. Batches travel
as arrays (``arrays.py``), the new rows, their pending deliveries and their decisions as binary ``COPY``
(``arrays.copy_records``); the statements shared with SQLite come from ``sql.queries``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from sqlalchemy import and_, any_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends.sql import backlog, lifecycle, queries
from tidings.backends.sql.inbox_ops import InboxLifecycle, on_async
from tidings.backends.sql.postgres.arrays import (
    Columns,
    copy_records,
    insert_arrays,
    rows_of,
    text_array,
    unnest_sql,
)
from tidings.backends.sql.postgres.database import PostgresDatabase, fetch_all
from tidings.backends.sql.postgres.decisions import record_decisions
from tidings.backends.sql.rows import (
    DEFERRED_COLUMNS,
    INBOX_COLUMNS,
    InboxKey,
    UserKey,
    deferred_of,
    items_of,
    notifications_of,
)
from tidings.core import aggregation
from tidings.core.clock import Clock
from tidings.core.models import InboxItem, InboxWrite, StoredNotification
from tidings.core.rules import Deferred
from tidings.db.schema import deferred, inbox, user_seqs
from tidings.ports import Opening, OpenRequest

LAST_SEQS_CHUNK = 5000  # users per ``last_seqs`` statement (one array parameter: bounds one statement's time)


class PostgresInbox(InboxLifecycle):
    """``ports.Inbox``. A write transaction locks the counter rows of its users (``user_seqs``) before it
    reads them, in one fixed order (app, user_id), so concurrent writers on any number of processes take
    turns per user, never deadlock with each other, and every user's seqs stay 1, 2, 3, ... without gaps."""

    def __init__(self, db: PostgresDatabase, clock: Clock) -> None:
        super().__init__(on_async(db.write), on_async(db.read), clock)
        self._db = db
        self._clock = clock

    async def write(self, writes: Sequence[InboxWrite]) -> list[StoredNotification]:
        if not writes:
            return []
        return await self._db.write(partial(_write_batch, writes=writes, clock=self._clock))

    async def backlog(self, app: str, user: str, after: int, limit: int) -> list[StoredNotification]:
        query = queries.backlog_query(app, user, after, limit)
        return notifications_of(app, user, await self._db.read(partial(fetch_all, query=query)))

    async def page(
        self,
        app: str,
        user: str,
        *,
        after: int | None,
        before: int | None,
        limit: int,
        unread_only: bool,
        status: queries.Status = "all",
        types: Sequence[str] | None = None,
    ) -> list[InboxItem]:
        query = queries.page_query(
            app,
            user,
            after=after,
            before=before,
            limit=limit,
            unread_only=unread_only,
            status=status,
            types=types,
        )
        return items_of(await self._db.read(partial(fetch_all, query=query)))

    async def last_seq(self, app: str, user: str) -> int:
        rows = await self._db.read(partial(fetch_all, query=queries.last_seq_query(app, user)))
        return int(rows[0].last_seq) if rows else 0

    async def openings(self, requests: Sequence[OpenRequest], limit: int) -> list[Opening]:
        """Many streams' opening reads in one statement (``backends.sql.backlog``)."""
        return await self._db.read(partial(backlog.postgres_openings, requests=requests, limit=limit))

    async def last_seqs(self, users: Sequence[UserKey]) -> dict[UserKey, int]:
        """Many users' ``last_seq``: one statement per chunk of users of an app, the ids as one array."""
        found: dict[UserKey, int] = await self._db.read(partial(_last_seqs_of, users=users))
        return found


async def _last_seqs_of(conn: AsyncConnection, *, users: Sequence[UserKey]) -> dict[UserKey, int]:
    found = dict.fromkeys(users, 0)
    for app, ids in queries.by_app(users, LAST_SEQS_CHUNK):
        query = queries.last_seqs_query(app, user_seqs.c.user_id == any_(text_array("users", ids)))
        for user, last in await conn.execute(query):
            found[(app, user)] = int(last)
    return found


# --- the write path -----------------------------------------------------------------------------------------


async def _write_batch(
    conn: AsyncConnection, *, writes: Sequence[InboxWrite], clock: Clock
) -> list[StoredNotification]:
    """Existing rows come back unchanged; new ones get the next seqs in batch order, aggregated, deferred and
    recorded as ``core.aggregation.plan_commit`` plans (see ``ports.Inbox``).

    The existing rows are looked up only after the counters are locked: a concurrent write of the same
    event for the same user has then committed (READ COMMITTED: each statement sees the latest commits),
    so a redelivery racing the first delivery still finds its row instead of numbering it twice. The same
    locks make the aggregates, pending deliveries and cap counters read here the latest of their users.
    """
    keys = [(w.app, w.user, w.event.id) for w in writes]
    users = sorted({key[:2] for key in keys})
    # Retracted events write nothing; their shared locks come before the counter locks (as a retraction's).
    gone = await conn.run_sync(partial(lifecycle.admit, writes=writes, now=clock.time()))
    last = await _lock_counters(conn, users)
    stored = await _existing_rows(conn, list(dict.fromkeys(keys)))
    stored.update(
        {key: StoredNotification(*key[:2], 0, key[2], b"", "gone") for key in keys if key[2] in gone}
    )
    fresh = {key: w for key, w in zip(keys, writes, strict=True) if key not in stored}
    if fresh:
        now = clock.time()  # read after the locks, so created_at follows seq order per user
        current = await _current_aggregates(conn, fresh.values())
        plan = aggregation.plan_commit(
            list(fresh.values()),
            last=last,
            current=current,
            pending=await _pending_of(conn, [(a, u, c.seq) for (a, u, _), c in current.items()]),
            usage=await _usage_of(conn, fresh.values()),
            now=now,
            new_id=aggregation.id_source(now),
        )
        await _apply_plan(conn, plan, now)
        await _save_counters(conn, {user: last[user] for user in {key[:2] for key in fresh}}, plan.counters)
        stored.update(plan.stored)
    return [stored[key] for key in keys]


async def _current_aggregates(
    conn: AsyncConnection, writes: Iterable[InboxWrite]
) -> dict[aggregation.GroupKey, aggregation.Current]:
    """The newest row of each group the writes may join (the newest row of a group is never replaced)."""
    groups = sorted(
        {(w.app, w.user, w.event.group_key) for w in writes if w.event.group_key and w.aggregate_window > 0}
    )
    if not groups:
        return {}
    wanted = rows_of(
        "g",
        app=("text", [g[0] for g in groups]),
        user_id=("text", [g[1] for g in groups]),
        group_key=("text", [g[2] for g in groups]),
    )
    newest_of = inbox.alias("newest")
    n = newest_of.c
    newest = (
        select(func.max(n.seq))
        .where(n.app == wanted.c.app, n.user_id == wanted.c.user_id, n.group_key == wanted.c.group_key)
        .correlate(wanted)
        .scalar_subquery()
    )
    c = inbox.c
    # max(seq) of a group is one probe of ux_inbox_group (app, user_id, group_key, seq).
    joined = wanted.join(inbox, and_(c.app == wanted.c.app, c.user_id == wanted.c.user_id, c.seq == newest))
    query = select(
        wanted.c.group_key,
        c.app,
        c.user_id,
        c.seq,
        c.payload,
        c.group_started_at,
        c.chain,
        c.read_at,
        c.seen_at,
        c.archived_at,
    ).select_from(joined)
    found: dict[aggregation.GroupKey, aggregation.Current] = {}
    for row in await conn.execute(query):
        state = aggregation.row_state(row.read_at, row.seen_at, row.archived_at)
        current = aggregation.current_from_row(row.seq, row.payload, row.group_started_at, row.chain, state)
        if current is not None:
            found[(row.app, row.user_id, row.group_key)] = current
    return found


async def _pending_of(
    conn: AsyncConnection, rows: Sequence[aggregation.RowKey]
) -> dict[aggregation.RowKey, list[Deferred]]:
    if not rows:
        return {}
    wanted = rows_of(
        "p",
        app=("text", [r[0] for r in rows]),
        user_id=("text", [r[1] for r in rows]),
        seq=("bigint", [r[2] for r in rows]),
    )
    d = deferred.c
    query = select(deferred).join(
        wanted, and_(d.app == wanted.c.app, d.user_id == wanted.c.user_id, d.seq == wanted.c.seq)
    )
    found: dict[aggregation.RowKey, list[Deferred]] = {}
    for row in await conn.execute(query):
        found.setdefault((row.app, row.user_id, row.seq), []).append(deferred_of(row))
    return found


async def _usage_of(
    conn: AsyncConnection, writes: Iterable[InboxWrite]
) -> dict[aggregation.UsageKey, aggregation.Usage]:
    keys = sorted({(w.app, w.user, p.channel) for w in writes for p in w.channels if p.cap > 0})
    if not keys:
        return {}
    rows: Any = await conn.exec_driver_sql(
        USAGE_SQL, tuple(list(column) for column in zip(*keys, strict=True))
    )
    return {(r[0], r[1], r[2]): aggregation.Usage(r[3], r[4]) for r in rows}  # (``r.count`` is Row.count)


async def _apply_plan(conn: AsyncConnection, plan: aggregation.CommitPlan, now: float) -> None:
    await _insert_rows(conn, plan.rows, now)
    if plan.replaced:
        await _set_by_row(conn, inbox, "replaced_by", plan.replaced)
    if plan.moved:
        await _set_by_row(conn, deferred, "seq", plan.moved)
    if plan.deferred:
        await copy_records(conn, "deferred", DEFERRED_COLUMNS, deferred_records(plan.deferred, now))
    if plan.usage:
        await _save_usage(conn, plan.usage)
    await record_decisions(conn, plan.decisions)


async def _set_by_row(
    conn: AsyncConnection, table: Any, column: str, pairs: Sequence[tuple[aggregation.RowKey, int]]
) -> None:
    """``UPDATE table SET column = new`` for each ((app, user, seq), new): one statement for the batch."""
    new = rows_of(
        "r",
        app=("text", [a for (a, _, _), _ in pairs]),
        user_id=("text", [u for (_, u, _), _ in pairs]),
        seq=("bigint", [s for (_, _, s), _ in pairs]),
        new=("bigint", [value for _, value in pairs]),
    )
    t = table.c
    await conn.execute(
        update(table)
        .where(t.app == new.c.app, t.user_id == new.c.user_id, t.seq == new.c.seq)
        .values({column: new.c.new})
    )


async def _save_usage(conn: AsyncConnection, usage: dict[aggregation.UsageKey, aggregation.Usage]) -> None:
    items = sorted(usage.items())
    columns: Columns = {
        "app": ("text", [a for (a, _, _), _ in items]),
        "user_id": ("text", [u for (_, u, _), _ in items]),
        "channel": ("text", [c for (_, _, c), _ in items]),
        "window_start": ("float", [used.window_start for _, used in items]),
        "count": ("bigint", [used.count for _, used in items]),
    }
    upsert = (
        " ON CONFLICT (app, user_id, channel)"
        " DO UPDATE SET window_start = excluded.window_start, count = excluded.count"
    )
    await insert_arrays(conn, "channel_usage", columns, upsert)


def deferred_records(items: Sequence[Deferred], now: float) -> list[tuple[Any, ...]]:
    """New pending deliveries as rows of ``DEFERRED_COLUMNS`` (a fresh row's deliveries cannot exist yet)."""
    return [
        (
            d.app,
            d.user,
            d.seq,
            d.channel,
            d.event_id,
            d.due_at,
            d.reason,
            d.digest,
            now,
            d.traceparent,
            d.tracestate,
        )
        for d in items
    ]


async def _lock_counters(conn: AsyncConnection, users: Sequence[UserKey]) -> dict[UserKey, int]:
    """Ensures a counter row per user, then locks them all in (app, user_id) order; returns their values.

    The fixed order is what keeps two batches sharing users from deadlocking: each waits for the other at
    the first user they share, never while holding a user the other waits for.
    """
    arrays = ([app for app, _ in users], [user for _, user in users])
    await conn.exec_driver_sql(ENSURE_COUNTERS_SQL, arrays)
    return {
        (r.app, r.user_id): int(r.last_seq) for r in await conn.exec_driver_sql(LOCK_COUNTERS_SQL, arrays)
    }


async def _existing_rows(
    conn: AsyncConnection, keys: Sequence[InboxKey]
) -> dict[InboxKey, StoredNotification]:
    arrays = tuple(list(column) for column in zip(*keys, strict=True))
    return {  # a removed row comes back as 'gone': nothing to publish again
        (r.app, r.user_id, r.event_id): StoredNotification(
            r.app, r.user_id, r.seq, r.event_id, r.payload, "notification" if r.removed_at is None else "gone"
        )
        for r in await conn.exec_driver_sql(EXISTING_SQL, arrays)
    }


async def _insert_rows(conn: AsyncConnection, rows: Sequence[aggregation.NewRow], now: float) -> None:
    """One binary COPY for the whole batch (no ON CONFLICT needed: under the counter locks, the rows that
    exist were found first, and a fresh row's (app, user, seq) is the next of its user)."""
    records = [
        (
            r.write.app,
            r.write.user,
            r.seq,
            r.id,
            r.write.event.id,
            r.payload,
            r.write.event.group_key,
            now,
            r.replaces,
            r.replaced_by,
            r.group_started_at,
            r.write.event.type,
            r.chain,
            r.contrib,
        )
        for r in rows
    ]
    await copy_records(conn, "inbox", INBOX_COLUMNS, records)


async def _save_counters(
    conn: AsyncConnection, last: dict[UserKey, int], counters: dict[UserKey, list[int]]
) -> None:
    """The users' last seqs, and their counts changed by the commit's deltas (under the same locks)."""
    items = sorted(last.items())
    zero = [0, 0, 0]
    deltas = [counters.get(user, zero) for user, _ in items]
    arrays = (
        [app for (app, _), _ in items],
        [user for (_, user), _ in items],
        [seq for _, seq in items],
        [d[0] for d in deltas],
        [d[1] for d in deltas],
        [d[2] for d in deltas],
    )
    await conn.exec_driver_sql(SAVE_COUNTERS_SQL, arrays)


# The write path's statements as driver SQL (``arrays.insert_arrays`` says why): each array is one parameter.
ENSURE_COUNTERS_SQL = (
    "INSERT INTO user_seqs (app, user_id, last_seq) SELECT u.app, u.user_id, 0 FROM "
    + unnest_sql("u", [("app", "text"), ("user_id", "text")])
    + " ORDER BY u.app, u.user_id ON CONFLICT DO NOTHING"
)
LOCK_COUNTERS_SQL = (
    "SELECT c.app, c.user_id, c.last_seq FROM user_seqs AS c JOIN "
    + unnest_sql("u", [("app", "text"), ("user_id", "text")])
    + " ON c.app = u.app AND c.user_id = u.user_id ORDER BY c.app, c.user_id FOR UPDATE OF c"
)
EXISTING_SQL = (
    "SELECT c.app, c.user_id, c.seq, c.event_id, c.payload, c.removed_at FROM "
    + unnest_sql("k", [("app", "text"), ("user_id", "text"), ("event_id", "text")])
    + " JOIN inbox AS c ON c.app = k.app AND c.user_id = k.user_id AND c.event_id = k.event_id"
)
USAGE_SQL = (
    "SELECT c.app, c.user_id, c.channel, c.window_start, c.count FROM "
    + unnest_sql("k", [("app", "text"), ("user_id", "text"), ("channel", "text")])
    + " JOIN channel_usage AS c ON c.app = k.app AND c.user_id = k.user_id AND c.channel = k.channel"
)
SAVE_COUNTERS_SQL = (
    "UPDATE user_seqs AS c SET last_seq = v.last_seq, unread = c.unread + v.unread,"
    " unseen = c.unseen + v.unseen, archived = c.archived + v.archived FROM "
    + unnest_sql(
        "v",
        [
            ("app", "text"),
            ("user_id", "text"),
            ("last_seq", "bigint"),
            ("unread", "bigint"),
            ("unseen", "bigint"),
            ("archived", "bigint"),
        ],
    )
    + " WHERE c.app = v.app AND c.user_id = v.user_id"
)

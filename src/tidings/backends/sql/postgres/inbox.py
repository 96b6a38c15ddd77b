"""``ports.Inbox`` on PostgreSQL: the inbox write path (seq allocation under per-user counter locks,
aggregation, deferrals, cap counters) and its reads.

Invariant: every user's seqs are 1, 2, 3, ... without gaps, whatever number of processes write. A write
transaction first locks the counter rows of its users (``user_seqs``), in one fixed order (app, user_id), and
only then reads anything of theirs; so concurrent writers take turns per user and never deadlock with each
other, and a redelivery racing the first delivery finds its row. Marking rows read or seen takes the same
lock, so it never interleaves with a write that moves the pending deliveries of an aggregate. Batches travel
as arrays (``arrays.py``); the statements shared with SQLite come from ``sql.queries``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, Literal

from sqlalchemy import BigInteger, and_, any_, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends.sql import queries
from tidings.backends.sql.postgres.arrays import Columns, bigint_array, insert_unnest, rows_of
from tidings.backends.sql.postgres.database import PostgresDatabase, fetch_all
from tidings.backends.sql.postgres.decisions import record_decisions
from tidings.backends.sql.rows import (
    InboxKey,
    UserKey,
    cancel_decision,
    deferred_of,
    items_of,
    notifications_of,
)
from tidings.core import aggregation
from tidings.core.clock import Clock
from tidings.core.models import InboxItem, InboxWrite, StoredNotification
from tidings.core.rules import Deferred
from tidings.db.schema import channel_usage, deferred, inbox, user_seqs


class PostgresInbox:
    """``ports.Inbox``. A write transaction locks the counter rows of its users (``user_seqs``) before it
    reads them, in one fixed order (app, user_id), so concurrent writers on any number of processes take
    turns per user, never deadlock with each other, and every user's seqs stay 1, 2, 3, ... without gaps."""

    def __init__(self, db: PostgresDatabase, clock: Clock) -> None:
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
        self, app: str, user: str, *, after: int | None, before: int | None, limit: int, unread_only: bool
    ) -> list[InboxItem]:
        query = queries.page_query(
            app, user, after=after, before=before, limit=limit, unread_only=unread_only
        )
        return items_of(await self._db.read(partial(fetch_all, query=query)))

    async def counts(self, app: str, user: str) -> tuple[int, int]:
        [row] = await self._db.read(partial(fetch_all, query=queries.counts_query(app, user)))
        return int(row[0]), int(row[1])

    async def mark(
        self,
        app: str,
        user: str,
        field: Literal["read", "seen"],
        *,
        seqs: Sequence[int] | None,
        up_to: int | None,
        at: float,
    ) -> int:
        if not seqs and up_to is None:
            return 0
        work = partial(_mark, app=app, user=user, field=field, seqs=seqs, up_to=up_to, at=at)
        return await self._db.write(work)

    async def last_seq(self, app: str, user: str) -> int:
        rows = await self._db.read(partial(fetch_all, query=queries.last_seq_query(app, user)))
        return int(rows[0].last_seq) if rows else 0


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
    last = await _lock_counters(conn, users)
    stored = await _existing_rows(conn, list(dict.fromkeys(keys)))
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
        await _save_counters(conn, {user: last[user] for user in {key[:2] for key in fresh}})
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
    query = select(wanted.c.group_key, c.app, c.user_id, c.seq, c.payload, c.group_started_at).select_from(
        joined
    )
    found: dict[aggregation.GroupKey, aggregation.Current] = {}
    for row in await conn.execute(query):
        current = aggregation.current_from_row(row.seq, row.payload, row.group_started_at)
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
    wanted = rows_of(
        "c",
        app=("text", [k[0] for k in keys]),
        user_id=("text", [k[1] for k in keys]),
        channel=("text", [k[2] for k in keys]),
    )
    u = channel_usage.c
    query = select(u.app, u.user_id, u.channel, u.window_start, u.count).join(
        wanted, and_(u.app == wanted.c.app, u.user_id == wanted.c.user_id, u.channel == wanted.c.channel)
    )
    rows = await conn.execute(query)
    return {(a, user, ch): aggregation.Usage(start, count) for a, user, ch, start, count in rows}


async def _apply_plan(conn: AsyncConnection, plan: aggregation.CommitPlan, now: float) -> None:
    await _insert_rows(conn, plan.rows, now)
    if plan.replaced:
        await _set_by_row(conn, inbox, "replaced_by", plan.replaced)
    if plan.moved:
        await _set_by_row(conn, deferred, "seq", plan.moved)
    if plan.deferred:
        await conn.execute(insert_unnest(deferred, "d", deferred_columns(plan.deferred, now)))
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
    upsert = insert_unnest(channel_usage, "u", columns)
    await conn.execute(
        upsert.on_conflict_do_update(
            index_elements=["app", "user_id", "channel"],
            set_={"window_start": upsert.excluded.window_start, "count": upsert.excluded.count},
        )
    )


def deferred_columns(items: Sequence[Deferred], now: float) -> Columns:
    return {
        "app": ("text", [d.app for d in items]),
        "user_id": ("text", [d.user for d in items]),
        "seq": ("bigint", [d.seq for d in items]),
        "channel": ("text", [d.channel for d in items]),
        "event_id": ("text", [d.event_id for d in items]),
        "due_at": ("float", [d.due_at for d in items]),
        "reason": ("text", [d.reason for d in items]),
        "digest": ("bool", [d.digest for d in items]),
        "created_at": ("float", [now] * len(items)),
        "traceparent": ("text", [d.traceparent for d in items]),
        "tracestate": ("text", [d.tracestate for d in items]),
    }


async def _lock_counters(conn: AsyncConnection, users: Sequence[UserKey]) -> dict[UserKey, int]:
    """Ensures a counter row per user, then locks them all in (app, user_id) order; returns their values.

    The fixed order is what keeps two batches sharing users from deadlocking: each waits for the other at
    the first user they share, never while holding a user the other waits for.
    """
    app_ids = ("text", [app for app, _ in users])
    user_ids = ("text", [user for _, user in users])
    wanted = rows_of("u", app=app_ids, user_id=user_ids)
    ensure = (
        pg_insert(user_seqs)
        .from_select(
            ["app", "user_id", "last_seq"],
            select(wanted.c.app, wanted.c.user_id, literal(0, BigInteger)).order_by(
                wanted.c.app, wanted.c.user_id
            ),
        )
        .on_conflict_do_nothing()
    )
    await conn.execute(ensure)
    c = user_seqs.c
    lock = (
        select(c.app, c.user_id, c.last_seq)
        .join(wanted, and_(c.app == wanted.c.app, c.user_id == wanted.c.user_id))
        .order_by(c.app, c.user_id)
        .with_for_update(of=user_seqs)
    )
    return {(r.app, r.user_id): int(r.last_seq) for r in await conn.execute(lock)}


async def _existing_rows(
    conn: AsyncConnection, keys: Sequence[InboxKey]
) -> dict[InboxKey, StoredNotification]:
    wanted = rows_of(
        "k",
        app=("text", [k[0] for k in keys]),
        user_id=("text", [k[1] for k in keys]),
        event_id=("text", [k[2] for k in keys]),
    )
    c = inbox.c
    query = select(c.app, c.user_id, c.seq, c.event_id, c.payload).join(
        wanted, and_(c.app == wanted.c.app, c.user_id == wanted.c.user_id, c.event_id == wanted.c.event_id)
    )
    return {
        (r.app, r.user_id, r.event_id): StoredNotification(r.app, r.user_id, r.seq, r.event_id, r.payload)
        for r in await conn.execute(query)
    }


async def _insert_rows(conn: AsyncConnection, rows: Sequence[aggregation.NewRow], now: float) -> None:
    """One INSERT ... SELECT FROM unnest(...) for the whole batch."""
    columns: Columns = {
        "app": ("text", [r.write.app for r in rows]),
        "user_id": ("text", [r.write.user for r in rows]),
        "seq": ("bigint", [r.seq for r in rows]),
        "id": ("text", [r.id for r in rows]),
        "event_id": ("text", [r.write.event.id for r in rows]),
        "payload": ("bytes", [r.payload for r in rows]),
        "group_key": ("text", [r.write.event.group_key for r in rows]),
        "created_at": ("float", [now] * len(rows)),
        "replaces": ("bigint", [r.replaces for r in rows]),
        "replaced_by": ("bigint", [r.replaced_by for r in rows]),
        "group_started_at": ("float", [r.group_started_at for r in rows]),
    }
    await conn.execute(insert_unnest(inbox, "n", columns))


async def _save_counters(conn: AsyncConnection, last: dict[UserKey, int]) -> None:
    items = sorted(last.items())
    new = rows_of(
        "v",
        app=("text", [app for (app, _), _ in items]),
        user_id=("text", [user for (_, user), _ in items]),
        last_seq=("bigint", [seq for _, seq in items]),
    )
    c = user_seqs.c
    await conn.execute(
        update(user_seqs)
        .where(c.app == new.c.app, c.user_id == new.c.user_id)
        .values(last_seq=new.c.last_seq)
    )


# --- marks ---------------------------------------------------------------------------------------------------


async def _mark(
    conn: AsyncConnection,
    *,
    app: str,
    user: str,
    field: Literal["read", "seen"],
    seqs: Sequence[int] | None,
    up_to: int | None,
    at: float,
) -> int:
    """Sets the field only where it is unset (the first read time stays); ``seqs`` and ``up_to`` add up.
    Cancels the pending offline deliveries of those seqs, holding the user's counter lock so that a write
    moving them to an aggregate's new seq (under the same lock) goes entirely before or after."""
    await conn.execute(queries.last_seq_query(app, user).with_for_update())
    unset = queries.unset_statement(app, user, field, at)
    changed = 0
    if up_to is not None:
        changed += (await conn.execute(unset.where(inbox.c.seq <= up_to))).rowcount
    if seqs:
        wanted = bigint_array("seqs", sorted(set(seqs)))  # one array: any length
        changed += (await conn.execute(unset.where(inbox.c.seq == any_(wanted)))).rowcount
    await _cancel_pending(conn, app, user, field, seqs, up_to, at)
    return changed


async def _cancel_pending(
    conn: AsyncConnection,
    app: str,
    user: str,
    field: str,
    seqs: Sequence[int] | None,
    up_to: int | None,
    at: float,
) -> None:
    """Deletes the pending deliveries of the marked seqs (one statement) and records each cancellation."""
    d = deferred.c
    which = []
    if up_to is not None:
        which.append(d.seq <= up_to)
    if seqs:
        which.append(d.seq == any_(bigint_array("cancel_seqs", sorted(set(seqs)))))
    gone = await conn.execute(queries.take_pending(app, user, or_(*which)))
    await record_decisions(conn, [cancel_decision(app, user, field, row, at) for row in gone])

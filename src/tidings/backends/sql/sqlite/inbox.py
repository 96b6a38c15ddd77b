"""``ports.Inbox`` on SQLite: the inbox write path (seq allocation, aggregation, deferrals, cap counters) and
its reads.

Invariant: every user's seqs are 1, 2, 3, ... without gaps. A write reads the user's counter (``user_seqs``),
numbers the new rows and saves the counter in one transaction on the single writer thread, so nothing else
writes in between; ``BEGIN IMMEDIATE`` does the same across processes. A redelivered event finds its row and
comes back unchanged. The statements shared with PostgreSQL come from ``sql.queries``; the batches travel as
``sql.sqlite.batches`` describes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from sqlalchemy import Connection

from tidings.backends.sql import backlog, lifecycle, queries
from tidings.backends.sql.inbox_ops import InboxLifecycle
from tidings.backends.sql.rows import (
    DEFERRED_COLUMNS,
    INBOX_COLUMNS,
    InboxKey,
    UserKey,
    items_of,
    notifications_of,
)
from tidings.backends.sql.sqlite.batches import LOOKUP_CHUNK, insert_many, padded, rows_matching
from tidings.backends.sql.sqlite.database import SqliteDatabase
from tidings.backends.sql.sqlite.decisions import record_decisions
from tidings.core import aggregation
from tidings.core.clock import Clock
from tidings.core.models import InboxItem, InboxWrite, StoredNotification
from tidings.core.rules import Deferred
from tidings.db.schema import channel_usage, deferred, inbox, user_seqs
from tidings.ports import Opening, OpenRequest

LAST_SEQS_CHUNK = 500  # users per ``last_seqs`` statement (a bound parameter each; SQLite allows 32,766)
# Big batches are inserted as plain tuples in these column orders (see ``batches.insert_many``).
USAGE_COLUMNS = ("app", "user_id", "channel", "window_start", "count")
USAGE_UPSERT = (
    " ON CONFLICT (app, user_id, channel)"
    " DO UPDATE SET window_start = excluded.window_start, count = excluded.count"
)


class SqliteInbox(InboxLifecycle):
    """``ports.Inbox``: per-user gap-free seqs allocated inside the write transaction (the single writer
    thread makes read-counter-then-insert race-free; ``BEGIN IMMEDIATE`` does so across processes)."""

    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        super().__init__(db.write, db.read, clock)
        self._db = db
        self._clock = clock

    async def write(self, writes: Sequence[InboxWrite]) -> list[StoredNotification]:
        if not writes:
            return []
        return await self._db.write(partial(_write_batch, writes=writes, clock=self._clock))

    async def backlog(self, app: str, user: str, after: int, limit: int) -> list[StoredNotification]:
        query = queries.backlog_query(app, user, after, limit)
        return await self._db.read(lambda conn: notifications_of(app, user, conn.execute(query)))

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
        return await self._db.read(lambda conn: items_of(conn.execute(query)))

    async def last_seq(self, app: str, user: str) -> int:
        query = queries.last_seq_query(app, user)
        return await self._db.read(lambda conn: int(conn.execute(query).scalar() or 0))

    async def openings(self, requests: Sequence[OpenRequest], limit: int) -> list[Opening]:
        """Many streams' opening reads in one reader-thread hop (``backends.sql.backlog``)."""
        return await self._db.read(partial(backlog.sqlite_openings, requests=requests, limit=limit))

    async def last_seqs(self, users: Sequence[UserKey]) -> dict[UserKey, int]:
        """Many users' ``last_seq`` in one reader-thread hop and one read transaction."""
        return await self._db.read(partial(_last_seqs_of, users=users))


def _last_seqs_of(conn: Connection, *, users: Sequence[UserKey]) -> dict[UserKey, int]:
    found = dict.fromkeys(users, 0)
    for app, ids in queries.by_app(users, LAST_SEQS_CHUNK):
        for user, last in conn.execute(queries.last_seqs_query(app, user_seqs.c.user_id.in_(ids))):
            found[(app, user)] = int(last)
    return found


# --- the write path -----------------------------------------------------------------------------------------


def _write_batch(conn: Connection, *, writes: Sequence[InboxWrite], clock: Clock) -> list[StoredNotification]:
    """Existing rows come back unchanged; new ones get the next seqs in batch order, aggregated, deferred and
    recorded as ``core.aggregation.plan_commit`` plans (see ``ports.Inbox``)."""
    keys = [(w.app, w.user, w.event.id) for w in writes]
    gone = lifecycle.admit(conn, writes, clock.time())  # retracted events: no row, whatever the order
    stored = _existing_rows(conn, list(dict.fromkeys(keys)))
    stored.update(
        {key: StoredNotification(*key[:2], 0, key[2], b"", "gone") for key in keys if key[2] in gone}
    )
    fresh = {key: w for key, w in zip(keys, writes, strict=True) if key not in stored}
    if fresh:
        now = clock.time()  # read inside the transaction, so created_at follows commit order
        users = list(dict.fromkeys((app, user) for app, user, _ in fresh))
        last = _last_seqs(conn, users)
        current = _current_aggregates(conn, fresh.values())
        plan = aggregation.plan_commit(
            list(fresh.values()),
            last=last,
            current=current,
            pending=_pending_of(conn, [(a, u, c.seq) for (a, u, _), c in current.items()]),
            usage=_usage_of(conn, fresh.values()),
            now=now,
            new_id=aggregation.id_source(now),
        )
        _apply_plan(conn, plan, now)
        _save_last_seqs(conn, {user_key: last[user_key] for user_key in users}, plan.counters)
        stored.update(plan.stored)
    return [stored[key] for key in keys]


def _existing_rows(conn: Connection, keys: Sequence[InboxKey]) -> dict[InboxKey, StoredNotification]:
    """Rows written already; a removed one comes back as 'gone' (nothing to publish again)."""
    columns = ("app", "user_id", "seq", "event_id", "payload", "removed_at")
    rows = rows_matching(conn, inbox, ("app", "user_id", "event_id"), columns, keys)
    return {
        (app, user, event): StoredNotification(
            app, user, seq, event, payload, "notification" if removed is None else "gone"
        )
        for app, user, seq, event, payload, removed in rows
    }


def _last_seqs(conn: Connection, users: Sequence[UserKey]) -> dict[UserKey, int]:
    rows = rows_matching(conn, user_seqs, ("app", "user_id"), ("app", "user_id", "last_seq"), users)
    return {(app, user): int(last) for app, user, last in rows}


def _save_last_seqs(conn: Connection, last: dict[UserKey, int], counters: dict[UserKey, list[int]]) -> None:
    """The users' last seqs and their counters changed by the commit's deltas (same transaction)."""
    zero = [0, 0, 0]
    rows = [(a, u, seq, *counters.get((a, u), zero)) for (a, u), seq in last.items()]
    upsert = (
        " ON CONFLICT (app, user_id) DO UPDATE SET last_seq = excluded.last_seq,"
        " unread = user_seqs.unread + excluded.unread, unseen = user_seqs.unseen + excluded.unseen,"
        " archived = user_seqs.archived + excluded.archived"
    )
    columns = ("app", "user_id", "last_seq", "unread", "unseen", "archived")
    insert_many(conn, "user_seqs", columns, rows, upsert)


def _current_aggregates(
    conn: Connection, writes: Iterable[InboxWrite]
) -> dict[aggregation.GroupKey, aggregation.Current]:
    """The newest row of each group the writes may join (the newest row of a group is never replaced)."""
    groups = list(
        dict.fromkeys(
            (w.app, w.user, w.event.group_key)
            for w in writes
            if w.event.group_key is not None and w.aggregate_window > 0
        )
    )
    found: dict[aggregation.GroupKey, aggregation.Current] = {}
    for start in range(0, len(groups), LOOKUP_CHUNK):
        chunk = padded(groups[start : start + LOOKUP_CHUNK])
        params = tuple(v for key in chunk for v in key)
        for row in conn.exec_driver_sql(_current_sql(len(chunk)), params):
            app, user, group, seq, payload, started, chain, read_at, seen_at, archived_at = row
            state = aggregation.row_state(read_at, seen_at, archived_at)
            current = aggregation.current_from_row(seq, payload, started, chain, state)
            if current is not None:
                found[(app, user, group)] = current
    return found


@functools.lru_cache(maxsize=32)
def _current_sql(rows: int) -> str:
    # max(seq) of a group is one probe of ux_inbox_group (app, user_id, group_key, seq).
    values = ", ".join(["(?, ?, ?)"] * rows)
    return (
        "SELECT t.app, t.user_id, t.group_key, t.seq, t.payload, t.group_started_at, "
        "t.chain, t.read_at, t.seen_at, t.archived_at "
        f"FROM (VALUES {values}) AS k CROSS JOIN inbox AS t "
        "ON t.app = k.column1 AND t.user_id = k.column2 AND t.seq = ("
        "SELECT max(g.seq) FROM inbox AS g "
        "WHERE g.app = k.column1 AND g.user_id = k.column2 AND g.group_key = k.column3)"
    )


def _pending_of(
    conn: Connection, rows: Sequence[aggregation.RowKey]
) -> dict[aggregation.RowKey, list[Deferred]]:
    if not rows:
        return {}
    columns = (
        "app",
        "user_id",
        "seq",
        "channel",
        "event_id",
        "due_at",
        "reason",
        "digest",
        "traceparent",
        "tracestate",
    )
    found: dict[aggregation.RowKey, list[Deferred]] = {}
    for r in rows_matching(conn, deferred, ("app", "user_id", "seq"), columns, rows):
        item = Deferred(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9])
        items = found.setdefault((item.app, item.user, item.seq), [])
        if item not in items:  # lookups are padded with repeats
            items.append(item)
    return found


def _usage_of(
    conn: Connection, writes: Iterable[InboxWrite]
) -> dict[aggregation.UsageKey, aggregation.Usage]:
    keys = list(dict.fromkeys((w.app, w.user, p.channel) for w in writes for p in w.channels if p.cap > 0))
    if not keys:
        return {}
    columns = ("app", "user_id", "channel", "window_start", "count")
    rows = rows_matching(conn, channel_usage, ("app", "user_id", "channel"), columns, keys)
    return {(a, u, c): aggregation.Usage(start, count) for a, u, c, start, count in rows}


def _apply_plan(conn: Connection, plan: aggregation.CommitPlan, now: float) -> None:
    insert_many(conn, "inbox", INBOX_COLUMNS, [_inbox_row(row, now) for row in plan.rows])
    if plan.replaced:
        sql = "UPDATE inbox SET replaced_by = ? WHERE app = ? AND user_id = ? AND seq = ?"
        conn.exec_driver_sql(sql, [(new, a, u, seq) for (a, u, seq), new in plan.replaced])
    if plan.moved:
        sql = "UPDATE deferred SET seq = ? WHERE app = ? AND user_id = ? AND seq = ?"
        conn.exec_driver_sql(sql, [(new, a, u, seq) for (a, u, seq), new in plan.moved])
    insert_many(conn, "deferred", DEFERRED_COLUMNS, [deferred_row(item, now) for item in plan.deferred])
    rows = [(a, u, ch, used.window_start, used.count) for (a, u, ch), used in plan.usage.items()]
    insert_many(conn, "channel_usage", USAGE_COLUMNS, rows, USAGE_UPSERT)
    record_decisions(conn, plan.decisions)


def _inbox_row(row: aggregation.NewRow, now: float) -> tuple[Any, ...]:
    write = row.write
    event = write.event
    return (
        write.app,
        write.user,
        row.seq,
        row.id,
        event.id,
        row.payload,
        event.group_key,
        now,
        row.replaces,
        row.replaced_by,
        row.group_started_at,
        event.type,
        row.chain,
        row.contrib,
    )


def deferred_row(item: Deferred, now: float) -> tuple[Any, ...]:
    return (
        item.app,
        item.user,
        item.seq,
        item.channel,
        item.event_id,
        item.due_at,
        item.reason,
        item.digest,
        now,
        item.traceparent,
        item.tracestate,
    )

"""The storage ports on PostgreSQL: ``PostgresInbox``, ``PostgresApps``, ``PostgresTopics``,
``PostgresIdempotency``, ``PostgresPreferences``, ``PostgresDecisions`` (see ``backends/postgres.py`` for the
engine, transactions, retries and errors). The dialect-neutral queries of the decision log, pending deliveries
and topic boundaries are shared with ``sqlite_store``.

Each public method is one unit of work: an async function of a connection, run in one transaction
(``db.write``) or as one autocommit statement (``db.read``). Batches travel as arrays (``unnest``), so a
batch is a fixed number of statements whatever its size. Every query is scoped by ``app``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    LargeBinary,
    String,
    and_,
    any_,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends.sqlite_store import (
    boundaries_query,
    cancel_decision,
    decision_of,
    decisions_query,
    deferred_of,
    pending_query,
    prune_statements,
)
from tidings.core import aggregation
from tidings.core.clock import Clock
from tidings.core.models import App, InboxItem, InboxWrite, StoredNotification
from tidings.core.rules import (
    AppRules,
    Decision,
    Deferred,
    UserPreferences,
    prefs_from_json,
    prefs_to_json,
    rules_from_json,
    rules_to_json,
)
from tidings.db.schema import (
    app_rules,
    apps,
    channel_usage,
    decisions,
    deferred,
    idempotency_keys,
    inbox,
    stream_tickets,
    topic_subscribers,
    user_preferences,
    user_seqs,
)
from tidings.errors import AppExistsError, ConflictError
from tidings.ports import Claim

if TYPE_CHECKING:
    from sqlalchemy.sql.selectable import TableValuedAlias

    from tidings.backends.postgres import PostgresDatabase

InboxKey = tuple[str, str, str]  # (app, user, event id)
UserKey = tuple[str, str]  # (app, user)
Columns = dict[str, tuple[str, Sequence[Any]]]  # column name -> (array kind, values), see rows_of

ARRAY_TYPES: dict[str, ARRAY[Any]] = {
    "text": ARRAY(String),
    "bigint": ARRAY(BigInteger),
    "bytes": ARRAY(LargeBinary),
    "float": ARRAY(Float),
    "bool": ARRAY(Boolean),
}


def rows_of(name: str, **columns: tuple[str, Sequence[Any]]) -> TableValuedAlias:
    """``unnest(:a, :b, ...) AS name(a, b, ...)``: parallel arrays as a table, one array per column; each
    column is given as (element kind, values), the kind naming the array's SQL type."""
    arrays = [
        bindparam(f"{name}_{column}", list(values), type_=ARRAY_TYPES[kind])
        for column, (kind, values) in columns.items()
    ]
    return func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


# --- inbox -------------------------------------------------------------------------------------------------


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
        c = inbox.c
        query = (
            select(c.seq, c.event_id, c.payload)
            .where(_shown(app, user), c.seq > after)
            .order_by(c.seq)
            .limit(limit)
        )
        rows = await self._db.read(partial(_all, query=query))
        return [StoredNotification(app, user, r.seq, r.event_id, r.payload) for r in rows]

    async def page(
        self, app: str, user: str, *, after: int | None, before: int | None, limit: int, unread_only: bool
    ) -> list[InboxItem]:
        """Oldest first from ``after`` when it is given, else newest first (below ``before`` when given)."""
        c = inbox.c
        query = select(c.seq, c.payload, c.read_at, c.seen_at).where(_shown(app, user)).limit(limit)
        if after is not None:
            query = query.where(c.seq > after)
        if before is not None:
            query = query.where(c.seq < before)
        if unread_only:
            query = query.where(c.read_at.is_(None))
        query = query.order_by(c.seq if after is not None else c.seq.desc())
        rows = await self._db.read(partial(_all, query=query))
        return [InboxItem(r.seq, r.payload, r.read_at, r.seen_at) for r in rows]

    async def counts(self, app: str, user: str) -> tuple[int, int]:
        c = inbox.c
        unread = func.count().filter(c.read_at.is_(None))
        unseen = func.count().filter(c.seen_at.is_(None))
        [row] = await self._db.read(partial(_all, query=select(unread, unseen).where(_shown(app, user))))
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
        c = user_seqs.c
        query = select(c.last_seq).where(c.app == app, c.user_id == user)
        rows = await self._db.read(partial(_all, query=query))
        return int(rows[0].last_seq) if rows else 0


async def _all(conn: AsyncConnection, *, query: Any) -> list[Any]:
    return list((await conn.execute(query)).all())


def _of_user(app: str, user: str) -> ColumnElement[bool]:
    return and_(inbox.c.app == app, inbox.c.user_id == user)


def _shown(app: str, user: str) -> ColumnElement[bool]:
    """The user's rows that nothing replaced: what backlogs, lists and counts see."""
    return and_(_of_user(app, user), inbox.c.replaced_by.is_(None))


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


def insert_unnest(table: Any, name: str, columns: Columns) -> Any:
    """``INSERT INTO table (columns) SELECT * FROM unnest(arrays)``: one statement for any batch size."""
    new = rows_of(name, **columns)
    return pg_insert(table).from_select(list(columns), select(*(new.c[c] for c in columns)))


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
    }


async def record_decisions(conn: AsyncConnection, items: Sequence[Decision]) -> None:
    """Inserts decisions; one already recorded for its (app, event, user, kind, channel) stays as it is.
    Sorted by that key, so concurrent inserts of overlapping decisions cannot deadlock."""
    if not items:
        return
    rows = sorted(
        {(d.app, d.event_id, d.user, d.kind, d.channel): d for d in items}.values(), key=_decision_key
    )
    columns: Columns = {
        "app": ("text", [d.app for d in rows]),
        "event_id": ("text", [d.event_id for d in rows]),
        "user_id": ("text", [d.user for d in rows]),
        "kind": ("text", [d.kind for d in rows]),
        "channel": ("text", [d.channel for d in rows]),
        "reason": ("text", [d.reason for d in rows]),
        "seq": ("bigint", [d.seq for d in rows]),
        "detail": ("text", [orjson.dumps(d.detail).decode() if d.detail is not None else None for d in rows]),
        "at": ("float", [d.at for d in rows]),
    }
    await conn.execute(insert_unnest(decisions, "dl", columns).on_conflict_do_nothing())


def _decision_key(d: Decision) -> tuple[str, str, str, str, str]:
    return (d.app, d.event_id, d.user, d.kind, d.channel)


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
    c = user_seqs.c
    await conn.execute(select(c.last_seq).where(c.app == app, c.user_id == user).with_for_update())
    column = inbox.c.read_at if field == "read" else inbox.c.seen_at
    unset = update(inbox).where(_of_user(app, user), column.is_(None)).values({column: at})
    changed = 0
    if up_to is not None:
        changed += (await conn.execute(unset.where(inbox.c.seq <= up_to))).rowcount
    if seqs:
        wanted = bindparam("seqs", sorted(set(seqs)), type_=ARRAY(BigInteger))  # one array: any length
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
    d = deferred.c
    which = []
    if up_to is not None:
        which.append(d.seq <= up_to)
    if seqs:
        which.append(d.seq == any_(bindparam("cancel_seqs", sorted(set(seqs)), type_=ARRAY(BigInteger))))
    gone = await conn.execute(
        delete(deferred)
        .where(d.app == app, d.user_id == user, or_(*which))
        .returning(d.seq, d.channel, d.event_id)
    )
    await record_decisions(conn, [cancel_decision(app, user, field, row, at) for row in gone])


# --- apps and stream tickets --------------------------------------------------------------------------------


class PostgresApps:
    """``ports.Apps``. ``origins`` are stored as a JSON list. Expired tickets are deleted whenever a ticket is
    issued or redeemed, so the table holds only live ones (tickets live for seconds)."""

    def __init__(self, db: PostgresDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def create(self, app: App) -> None:
        await self._db.write(partial(_create_app, app=app))

    async def get(self, name: str) -> App | None:
        return _app_of(await self._db.read(partial(_all, query=select(apps).where(apps.c.name == name))))

    async def by_key_hash(self, key_hash: str) -> App | None:
        query = select(apps).where(apps.c.api_key_hash == key_hash)
        return _app_of(await self._db.read(partial(_all, query=query)))

    async def issue_ticket(self, ticket_hash: str, app: str, user: str, expires_at: float) -> None:
        row = {"ticket_hash": ticket_hash, "app": app, "user_id": user, "expires_at": expires_at}
        await self._db.write(partial(_issue_ticket, row=row, now=self._clock.time()))

    async def redeem_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        return await self._db.write(partial(_redeem_ticket, ticket_hash=ticket_hash, now=now))


async def _create_app(conn: AsyncConnection, *, app: App) -> None:
    """ON CONFLICT DO NOTHING covers both unique keys (name, key hash) and a concurrent create alike."""
    row = {
        "name": app.name,
        "api_key_hash": app.api_key_hash,
        "jwt_secret": app.jwt_secret,
        "origins": orjson.dumps(list(app.origins)).decode(),
        "created_at": app.created_at,
    }
    created = await conn.execute(pg_insert(apps).values(row).on_conflict_do_nothing().returning(apps.c.name))
    if created.first() is not None:
        return
    if (await conn.execute(select(apps.c.name).where(apps.c.name == app.name))).first() is not None:
        raise AppExistsError(f"an app named {app.name!r} exists already", app=app.name)
    raise ConflictError("that API key is in use")


def _app_of(rows: list[Any]) -> App | None:
    if not rows:
        return None
    row = rows[0]
    return App(row.name, row.api_key_hash, row.jwt_secret, tuple(orjson.loads(row.origins)), row.created_at)


async def _issue_ticket(conn: AsyncConnection, *, row: dict[str, object], now: float) -> None:
    await _drop_expired_tickets(conn, now)
    await conn.execute(pg_insert(stream_tickets).values(row).on_conflict_do_nothing())


async def _redeem_ticket(conn: AsyncConnection, *, ticket_hash: str, now: float) -> tuple[str, str] | None:
    """DELETE ... RETURNING: of concurrent redeems, one deletes the row; the others wait, then find none."""
    c = stream_tickets.c
    taken = (
        await conn.execute(
            delete(stream_tickets)
            .where(c.ticket_hash == ticket_hash)
            .returning(c.app, c.user_id, c.expires_at)
        )
    ).first()
    await _drop_expired_tickets(conn, now)
    if taken is None or taken.expires_at <= now:
        return None
    return taken.app, taken.user_id


async def _drop_expired_tickets(conn: AsyncConnection, now: float) -> None:
    await conn.execute(delete(stream_tickets).where(stream_tickets.c.expires_at <= now))


# --- topics -------------------------------------------------------------------------------------------------


class PostgresTopics:
    """``ports.Topics``: subscribers are read in keyset pages (``user_id > after``) along the primary key,
    so a page costs the same at any depth of a topic with millions of subscribers."""

    def __init__(self, db: PostgresDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def subscribe(self, app: str, topic: str, user: str) -> bool:
        row = {"app": app, "topic": topic, "user_id": user, "created_at": self._clock.time()}
        statement = pg_insert(topic_subscribers).values(row).on_conflict_do_nothing()
        return await self._db.write(partial(_changed, statement=statement))

    async def unsubscribe(self, app: str, topic: str, user: str) -> bool:
        c = topic_subscribers.c
        statement = delete(topic_subscribers).where(c.app == app, c.topic == topic, c.user_id == user)
        return await self._db.write(partial(_changed, statement=statement))

    async def page(self, app: str, topic: str, after: str | None, limit: int) -> list[str]:
        c = topic_subscribers.c
        query = select(c.user_id).where(c.app == app, c.topic == topic).order_by(c.user_id).limit(limit)
        if after is not None:
            query = query.where(c.user_id > after)
        return [row.user_id for row in await self._db.read(partial(_all, query=query))]

    async def subscribe_many(self, app: str, topic: str, users: Sequence[str]) -> int:
        """One INSERT ... ON CONFLICT DO NOTHING of the sorted ids (concurrent imports cannot deadlock)."""
        if not users:
            return 0
        ids = sorted(set(users))
        columns: Columns = {
            "app": ("text", [app] * len(ids)),
            "topic": ("text", [topic] * len(ids)),
            "user_id": ("text", ids),
            "created_at": ("float", [self._clock.time()] * len(ids)),
        }
        statement = insert_unnest(topic_subscribers, "s", columns).on_conflict_do_nothing()
        return await self._db.write(partial(_rowcount, statement=statement))

    async def boundaries(self, app: str, topic: str, after: str | None, every: int, limit: int) -> list[str]:
        query = boundaries_query(app, topic, after, every, limit)
        return [row.user_id for row in await self._db.read(partial(_all, query=query))]


async def _changed(conn: AsyncConnection, *, statement: Any) -> bool:
    return bool((await conn.execute(statement)).rowcount > 0)


# --- idempotency keys (for broker event logs) ----------------------------------------------------------------


class PostgresIdempotency:
    """``ports.Idempotency``. A claim inserts its keys with ON CONFLICT DO NOTHING, which is atomic per key
    across processes: of two concurrent claims of one key, the second waits for the first to commit and
    then finds its row. Keys are inserted in sorted order, so concurrent batches cannot deadlock."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def claim(self, claims: Sequence[Claim], now: float) -> list[Claim | None]:
        if not claims:
            return []
        return await self._db.write(partial(_claim, claims=claims, now=now))

    async def prune(self, older_than: float) -> int:
        c = idempotency_keys.c
        statement = delete(idempotency_keys).where(c.created_at < older_than)
        return await self._db.write(partial(_rowcount, statement=statement))


async def _rowcount(conn: AsyncConnection, *, statement: Any) -> int:
    return int((await conn.execute(statement)).rowcount)


# A key found neither inserted nor stored was pruned between the two statements: try it again, boundedly.
CLAIM_ROUNDS = 3


async def _claim(conn: AsyncConnection, *, claims: Sequence[Claim], now: float) -> list[Claim | None]:
    firsts: dict[tuple[str, str], Claim] = {}
    for claim in claims:
        firsts.setdefault(
            (claim.app, claim.key), claim
        )  # a later claim of a key in this batch sees the first
    recorded: dict[tuple[str, str], Claim | None] = {}
    pending = sorted(firsts)
    for _ in range(CLAIM_ROUNDS):
        inserted = await _insert_claims(conn, [firsts[key] for key in pending], now)
        recorded.update(dict.fromkeys(inserted))
        stored = await _stored_claims(conn, [key for key in pending if key not in inserted])
        recorded.update(stored)
        pending = [key for key in pending if key not in recorded]
        if not pending:
            break
    else:
        raise ConflictError("idempotency keys kept disappearing while being claimed")
    results: list[Claim | None] = []
    seen: set[tuple[str, str]] = set()
    for claim in claims:
        key = (claim.app, claim.key)
        # None only for the first use of a key this call recorded; a repeat in the batch gets that first claim.
        results.append(recorded[key] or (firsts[key] if key in seen else None))
        seen.add(key)
    return results


async def _insert_claims(conn: AsyncConnection, claims: Sequence[Claim], now: float) -> set[tuple[str, str]]:
    if not claims:
        return set()
    new = rows_of(
        "c",
        app=("text", [c.app for c in claims]),
        key=("text", [c.key for c in claims]),
        event_id=("text", [c.event_id for c in claims]),
        body_hash=("text", [c.body_hash for c in claims]),
    )
    columns = ["app", "key", "event_id", "body_hash"]
    source = select(*(new.c[name] for name in columns), literal(now, Float)).order_by(new.c.app, new.c.key)
    statement = (
        pg_insert(idempotency_keys)
        .from_select([*columns, "created_at"], source)
        .on_conflict_do_nothing()
        .returning(idempotency_keys.c.app, idempotency_keys.c.key)
    )
    return {(row.app, row.key) for row in await conn.execute(statement)}


async def _stored_claims(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Claim]:
    if not keys:
        return {}
    wanted = rows_of("w", app=("text", [app for app, _ in keys]), key=("text", [key for _, key in keys]))
    c = idempotency_keys.c
    query = select(c.app, c.key, c.body_hash, c.event_id).join(
        wanted, and_(c.app == wanted.c.app, c.key == wanted.c.key)
    )
    return {(r.app, r.key): Claim(r.app, r.key, r.body_hash, r.event_id) for r in await conn.execute(query)}


# --- preferences and app rules ------------------------------------------------------------------------------


class PostgresPreferences:
    """``ports.Preferences``: each user's preferences and each app's rules as one JSON document."""

    def __init__(self, db: PostgresDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def user(self, app: str, user: str) -> UserPreferences | None:
        return (await self.users(app, [user])).get(user)

    async def users(self, app: str, users: Sequence[str]) -> dict[str, UserPreferences]:
        if not users:
            return {}
        p = user_preferences.c
        ids = bindparam("pref_users", sorted(set(users)), type_=ARRAY(String))
        query = select(p.user_id, p.body).where(p.app == app, p.user_id == any_(ids))
        rows = await self._db.read(partial(_all, query=query))
        return {row.user_id: prefs_from_json(orjson.loads(row.body)) for row in rows}

    async def set_user(self, app: str, user: str, prefs: UserPreferences) -> None:
        row = {"app": app, "user_id": user, "body": orjson.dumps(prefs_to_json(prefs)).decode()}
        await self._db.write(partial(_upsert_body, table=user_preferences, row=row, now=self._clock.time()))

    async def rules(self, app: str) -> AppRules | None:
        rows = await self._db.read(
            partial(_all, query=select(app_rules.c.body).where(app_rules.c.app == app))
        )
        return rules_from_json(orjson.loads(rows[0].body)) if rows else None

    async def set_rules(self, app: str, rules: AppRules) -> None:
        row = {"app": app, "body": orjson.dumps(rules_to_json(rules)).decode()}
        await self._db.write(partial(_upsert_body, table=app_rules, row=row, now=self._clock.time()))


async def _upsert_body(conn: AsyncConnection, *, table: Any, row: dict[str, str], now: float) -> None:
    upsert = pg_insert(table).values({**row, "updated_at": now})
    keys = list(table.primary_key.columns)
    await conn.execute(
        upsert.on_conflict_do_update(index_elements=keys, set_={"body": row["body"], "updated_at": now})
    )


# --- the decision log and pending offline deliveries ----------------------------------------------------------


class PostgresDecisions:
    """``ports.Decisions``."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def record(self, items: Sequence[Decision]) -> None:
        if items:
            await self._db.write(partial(record_decisions, items=items))

    async def for_event(
        self, app: str, event_id: str, *, user: str | None, after: tuple[str, str, str] | None, limit: int
    ) -> list[Decision]:
        query = decisions_query(app, event_id, user=user, after=after, limit=limit)
        return [decision_of(row) for row in await self._db.read(partial(_all, query=query))]

    async def pending(self, app: str, user: str) -> list[Deferred]:
        query = pending_query(app, user)
        return [deferred_of(row) for row in await self._db.read(partial(_all, query=query))]

    async def prune(self, older_than: float) -> int:
        return await self._db.write(partial(_prune, older_than=older_than))


async def _prune(conn: AsyncConnection, *, older_than: float) -> int:
    return sum([int((await conn.execute(s)).rowcount) for s in prune_statements(older_than)])

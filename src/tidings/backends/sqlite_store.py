"""The storage ports on SQLite: ``SqliteInbox``, ``SqliteApps``, ``SqliteTopics``, ``SqliteIdempotency``,
``SqlitePreferences``, ``SqliteDecisions`` (see ``backends/sqlite.py`` for the file, its threads and its error
translation).

Each public method is one unit of work: a sync function of a ``Connection`` that runs in one transaction on
the writer thread (writes) or a reader thread (reads). Every query is scoped by ``app``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tidings.core import aggregation
from tidings.core.clock import Clock
from tidings.core.models import App, InboxItem, InboxWrite, StoredNotification
from tidings.core.rules import (
    CANCEL,
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
    from tidings.backends.sqlite import SqliteDatabase

# Keys looked up per statement: 3 columns x 256 rows stays under SQLite's historical limit of 999 variables.
LOOKUP_CHUNK = 256

InboxKey = tuple[str, str, str]  # (app, user, event id)
UserKey = tuple[str, str]  # (app, user)


def rows_matching(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    columns: Sequence[str],
    values: Sequence[tuple[Any, ...]],
) -> list[Any]:
    """The rows of ``table`` whose ``keys`` columns equal one of ``values`` (a batch lookup by unique key).

    Written as a join of the indexed table to a VALUES list, in plain SQL: each key is one index probe, and
    the text is cached per shape. (Built as SQLAlchemy expressions, a 256-key OR chain costs ~30 ms of
    Python per statement; SQLite scans the table for a row-value ``IN (VALUES ...)``.)
    """
    found: list[Any] = []  # rows, each unpackable as ``columns``
    for start in range(0, len(values), LOOKUP_CHUNK):
        chunk = list(values[start : start + LOOKUP_CHUNK])
        size = 1 << (len(chunk) - 1).bit_length()  # pad to a power of two: few distinct statements
        chunk += [chunk[-1]] * (size - len(chunk))
        sql = _join_values_sql(table.name, tuple(keys), tuple(columns), size)
        found.extend(conn.exec_driver_sql(sql, tuple(v for row in chunk for v in row)).all())
    return found


@functools.lru_cache(maxsize=128)
def _join_values_sql(table: str, keys: tuple[str, ...], columns: tuple[str, ...], rows: int) -> str:
    one = "(" + ", ".join("?" * len(keys)) + ")"
    on = " AND ".join(f't."{key}" = k.column{i}' for i, key in enumerate(keys, start=1))
    selected = ", ".join(f't."{column}"' for column in columns)
    # CROSS JOIN fixes the join order: SQLite walks the VALUES list and probes the table's index.
    return f'SELECT {selected} FROM (VALUES {", ".join([one] * rows)}) AS k CROSS JOIN "{table}" AS t ON {on}'


# --- inbox -------------------------------------------------------------------------------------------------


class SqliteInbox:
    """``ports.Inbox``: per-user gap-free seqs allocated inside the write transaction (the single writer
    thread makes read-counter-then-insert race-free; ``BEGIN IMMEDIATE`` does so across processes)."""

    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def write(self, writes: Sequence[InboxWrite]) -> list[StoredNotification]:
        if not writes:
            return []
        return await self._db.write(partial(_write_batch, writes=writes, clock=self._clock))

    async def backlog(self, app: str, user: str, after: int, limit: int) -> list[StoredNotification]:
        return await self._db.read(partial(_backlog, app=app, user=user, after=after, limit=limit))

    async def page(
        self, app: str, user: str, *, after: int | None, before: int | None, limit: int, unread_only: bool
    ) -> list[InboxItem]:
        query = partial(
            _page, app=app, user=user, after=after, before=before, limit=limit, unread=unread_only
        )
        return await self._db.read(query)

    async def counts(self, app: str, user: str) -> tuple[int, int]:
        return await self._db.read(partial(_counts, app=app, user=user))

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
        return await self._db.read(partial(_last_seq, app=app, user=user))


def _write_batch(conn: Connection, *, writes: Sequence[InboxWrite], clock: Clock) -> list[StoredNotification]:
    """Existing rows come back unchanged; new ones get the next seqs in batch order, aggregated, deferred and
    recorded as ``core.aggregation.plan_commit`` plans (see ``ports.Inbox``)."""
    keys = [(w.app, w.user, w.event.id) for w in writes]
    stored = _existing_rows(conn, list(dict.fromkeys(keys)))
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
        _save_last_seqs(conn, {user_key: last[user_key] for user_key in users})
        stored.update(plan.stored)
    return [stored[key] for key in keys]


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
        chunk = groups[start : start + LOOKUP_CHUNK]
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += [chunk[-1]] * (size - len(chunk))
        params = tuple(v for key in chunk for v in key)
        for app, user, group, seq, payload, started in conn.exec_driver_sql(_current_sql(size), params):
            current = aggregation.current_from_row(seq, payload, started)
            if current is not None:
                found[(app, user, group)] = current
    return found


@functools.lru_cache(maxsize=32)
def _current_sql(rows: int) -> str:
    # max(seq) of a group is one probe of ux_inbox_group (app, user_id, group_key, seq).
    values = ", ".join(["(?, ?, ?)"] * rows)
    return (
        "SELECT t.app, t.user_id, t.group_key, t.seq, t.payload, t.group_started_at "
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
    columns = ("app", "user_id", "seq", "channel", "event_id", "due_at", "reason", "digest")
    found: dict[aggregation.RowKey, list[Deferred]] = {}
    for r in rows_matching(conn, deferred, ("app", "user_id", "seq"), columns, rows):
        item = Deferred(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]))
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


# Big batches are inserted as plain tuples through the driver's executemany: SQLAlchemy's per-row parameter
# processing would cost more than SQLite's own insert (it was 2/3 of a 1,000-row fan-out commit).
INBOX_COLUMNS = (
    "app",
    "user_id",
    "seq",
    "id",
    "event_id",
    "payload",
    "group_key",
    "created_at",
    "replaces",
    "replaced_by",
    "group_started_at",
)
DEFERRED_COLUMNS = (
    "app",
    "user_id",
    "seq",
    "channel",
    "event_id",
    "due_at",
    "reason",
    "digest",
    "created_at",
)
DECISION_COLUMNS = ("app", "event_id", "user_id", "kind", "channel", "reason", "seq", "detail", "at")
USAGE_COLUMNS = ("app", "user_id", "channel", "window_start", "count")
USAGE_UPSERT = (
    " ON CONFLICT (app, user_id, channel)"
    " DO UPDATE SET window_start = excluded.window_start, count = excluded.count"
)


@functools.lru_cache(maxsize=16)
def _insert_sql(table: str, columns: tuple[str, ...], tail: str) -> str:
    names = ", ".join(f'"{column}"' for column in columns)
    return f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))}){tail}'


def insert_many(
    conn: Connection, table: str, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]], tail: str = ""
) -> None:
    if rows:
        conn.exec_driver_sql(_insert_sql(table, columns, tail), list(rows))


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
    )


def decision_row(d: Decision) -> tuple[Any, ...]:
    detail = orjson.dumps(d.detail).decode() if d.detail is not None else None
    return (d.app, d.event_id, d.user, d.kind, d.channel, d.reason, d.seq, detail, d.at)


def record_decisions(conn: Connection, items: Sequence[Decision]) -> None:
    """Inserts decisions; one already recorded for its (app, event, user, kind, channel) stays as it is."""
    rows = [decision_row(d) for d in items]
    insert_many(conn, "decisions", DECISION_COLUMNS, rows, " ON CONFLICT DO NOTHING")


def _existing_rows(conn: Connection, keys: Sequence[InboxKey]) -> dict[InboxKey, StoredNotification]:
    columns = ("app", "user_id", "seq", "event_id", "payload")
    rows = rows_matching(conn, inbox, ("app", "user_id", "event_id"), columns, keys)
    return {
        (app, user, event): StoredNotification(app, user, seq, event, payload)
        for app, user, seq, event, payload in rows
    }


def _last_seqs(conn: Connection, users: Sequence[UserKey]) -> dict[UserKey, int]:
    rows = rows_matching(conn, user_seqs, ("app", "user_id"), ("app", "user_id", "last_seq"), users)
    return {(app, user): int(last) for app, user, last in rows}


def _save_last_seqs(conn: Connection, last: dict[UserKey, int]) -> None:
    rows = [(a, u, seq) for (a, u), seq in last.items()]
    upsert = " ON CONFLICT (app, user_id) DO UPDATE SET last_seq = excluded.last_seq"
    insert_many(conn, "user_seqs", ("app", "user_id", "last_seq"), rows, upsert)


def _of_user(app: str, user: str) -> ColumnElement[bool]:
    return and_(inbox.c.app == app, inbox.c.user_id == user)


def _shown(app: str, user: str) -> ColumnElement[bool]:
    """The user's rows that nothing replaced: what backlogs, lists and counts see."""
    return and_(_of_user(app, user), inbox.c.replaced_by.is_(None))


def _backlog(conn: Connection, *, app: str, user: str, after: int, limit: int) -> list[StoredNotification]:
    c = inbox.c
    query = (
        select(c.seq, c.event_id, c.payload)
        .where(_shown(app, user), c.seq > after)
        .order_by(c.seq)
        .limit(limit)
    )
    return [StoredNotification(app, user, r.seq, r.event_id, r.payload) for r in conn.execute(query)]


def _page(
    conn: Connection,
    *,
    app: str,
    user: str,
    after: int | None,
    before: int | None,
    limit: int,
    unread: bool,
) -> list[InboxItem]:
    """Oldest first from ``after`` when it is given, else newest first (below ``before`` when given)."""
    c = inbox.c
    query = select(c.seq, c.payload, c.read_at, c.seen_at).where(_shown(app, user)).limit(limit)
    if after is not None:
        query = query.where(c.seq > after)
    if before is not None:
        query = query.where(c.seq < before)
    if unread:
        query = query.where(c.read_at.is_(None))
    query = query.order_by(c.seq if after is not None else c.seq.desc())
    return [InboxItem(r.seq, r.payload, r.read_at, r.seen_at) for r in conn.execute(query)]


def _counts(conn: Connection, *, app: str, user: str) -> tuple[int, int]:
    c = inbox.c
    unread = func.count().filter(c.read_at.is_(None))
    unseen = func.count().filter(c.seen_at.is_(None))
    row = conn.execute(select(unread, unseen).where(_shown(app, user))).one()
    return int(row[0]), int(row[1])


def _mark(
    conn: Connection,
    *,
    app: str,
    user: str,
    field: Literal["read", "seen"],
    seqs: Sequence[int] | None,
    up_to: int | None,
    at: float,
) -> int:
    """Sets the field only where it is unset (the first read time stays); ``seqs`` and ``up_to`` add up.
    Cancels the pending offline deliveries of those seqs (see ``ports.Inbox``)."""
    column = inbox.c.read_at if field == "read" else inbox.c.seen_at
    unset = update(inbox).where(_of_user(app, user), column.is_(None)).values({column: at})
    changed = 0
    if up_to is not None:
        changed += conn.execute(unset.where(inbox.c.seq <= up_to)).rowcount
    wanted = sorted(set(seqs or ()))
    for start in range(0, len(wanted), LOOKUP_CHUNK):  # bounded statement size for any list length
        changed += conn.execute(unset.where(inbox.c.seq.in_(wanted[start : start + LOOKUP_CHUNK]))).rowcount
    _cancel_pending(conn, app, user, field, wanted, up_to, at)
    return changed


def _cancel_pending(
    conn: Connection, app: str, user: str, field: str, seqs: Sequence[int], up_to: int | None, at: float
) -> None:
    """Deletes the pending deliveries of the marked seqs and records each cancellation."""
    d = deferred.c
    mine = and_(d.app == app, d.user_id == user)
    selections = [d.seq <= up_to] if up_to is not None else []
    selections += [d.seq.in_(seqs[i : i + LOOKUP_CHUNK]) for i in range(0, len(seqs), LOOKUP_CHUNK)]
    for which in selections:
        gone = conn.execute(delete(deferred).where(mine, which).returning(d.seq, d.channel, d.event_id)).all()
        record_decisions(conn, [cancel_decision(app, user, field, row, at) for row in gone])


def cancel_decision(app: str, user: str, field: str, row: Any, at: float) -> Decision:
    reason = f"the user has {field} the notification: no {row.channel} needed"
    return Decision(app, row.event_id, user, CANCEL, reason, row.channel, row.seq, at)


def _last_seq(conn: Connection, *, app: str, user: str) -> int:
    c = user_seqs.c
    value = conn.execute(select(c.last_seq).where(c.app == app, c.user_id == user)).scalar()
    return int(value or 0)


# --- apps and stream tickets --------------------------------------------------------------------------------


class SqliteApps:
    """``ports.Apps``. ``origins`` are stored as a JSON list. Expired tickets are deleted whenever a ticket is
    issued or redeemed, so the table holds only live ones (tickets live for seconds)."""

    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def create(self, app: App) -> None:
        await self._db.write(partial(_create_app, app=app))

    async def get(self, name: str) -> App | None:
        return await self._db.read(partial(_app_where, match=apps.c.name == name))

    async def by_key_hash(self, key_hash: str) -> App | None:
        return await self._db.read(partial(_app_where, match=apps.c.api_key_hash == key_hash))

    async def issue_ticket(self, ticket_hash: str, app: str, user: str, expires_at: float) -> None:
        row = {"ticket_hash": ticket_hash, "app": app, "user_id": user, "expires_at": expires_at}
        await self._db.write(partial(_issue_ticket, row=row, now=self._clock.time()))

    async def redeem_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        return await self._db.write(partial(_redeem_ticket, ticket_hash=ticket_hash, now=now))


def _create_app(conn: Connection, *, app: App) -> None:
    if conn.execute(select(apps.c.name).where(apps.c.name == app.name)).first() is not None:
        raise AppExistsError(f"an app named {app.name!r} exists already", app=app.name)
    if conn.execute(select(apps.c.name).where(apps.c.api_key_hash == app.api_key_hash)).first() is not None:
        raise ConflictError("that API key is in use")
    row = {
        "name": app.name,
        "api_key_hash": app.api_key_hash,
        "jwt_secret": app.jwt_secret,
        "origins": orjson.dumps(list(app.origins)).decode(),
        "created_at": app.created_at,
    }
    conn.execute(insert(apps).values(row))


def _app_where(conn: Connection, *, match: ColumnElement[bool]) -> App | None:
    row = conn.execute(select(apps).where(match)).first()
    if row is None:
        return None
    origins = tuple(orjson.loads(row.origins))
    return App(row.name, row.api_key_hash, row.jwt_secret, origins, row.created_at)


def _issue_ticket(conn: Connection, *, row: dict[str, object], now: float) -> None:
    _drop_expired_tickets(conn, now)
    conn.execute(sqlite_insert(stream_tickets).values(row).on_conflict_do_nothing())


def _redeem_ticket(conn: Connection, *, ticket_hash: str, now: float) -> tuple[str, str] | None:
    c = stream_tickets.c
    taken = conn.execute(
        delete(stream_tickets).where(c.ticket_hash == ticket_hash).returning(c.app, c.user_id, c.expires_at)
    ).first()
    _drop_expired_tickets(conn, now)
    if taken is None or taken.expires_at <= now:
        return None
    return taken.app, taken.user_id


def _drop_expired_tickets(conn: Connection, now: float) -> None:
    conn.execute(delete(stream_tickets).where(stream_tickets.c.expires_at <= now))


# --- topics -------------------------------------------------------------------------------------------------


class SqliteTopics:
    """``ports.Topics``: subscribers are read in keyset pages (``user_id > after``), so a page costs the same
    at any depth of a topic with millions of subscribers."""

    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def subscribe(self, app: str, topic: str, user: str) -> bool:
        return await self._db.write(partial(_subscribe, app=app, topic=topic, user=user, clock=self._clock))

    async def unsubscribe(self, app: str, topic: str, user: str) -> bool:
        return await self._db.write(partial(_unsubscribe, app=app, topic=topic, user=user))

    async def page(self, app: str, topic: str, after: str | None, limit: int) -> list[str]:
        return await self._db.read(partial(_topic_page, app=app, topic=topic, after=after, limit=limit))

    async def subscribe_many(self, app: str, topic: str, users: Sequence[str]) -> int:
        if not users:
            return 0
        now = self._clock.time()
        rows = [{"app": app, "topic": topic, "user_id": u, "created_at": now} for u in dict.fromkeys(users)]
        return await self._db.write(partial(_subscribe_many, rows=rows))

    async def boundaries(self, app: str, topic: str, after: str | None, every: int, limit: int) -> list[str]:
        query = boundaries_query(app, topic, after, every, limit)
        return await self._db.read(lambda conn: list(conn.execute(query).scalars()))


def _subscribe_many(conn: Connection, *, rows: list[dict[str, object]]) -> int:
    # executemany: the rowcount is the sum over the rows, i.e. the rows that were new.
    return int(conn.execute(sqlite_insert(topic_subscribers).on_conflict_do_nothing(), rows).rowcount)


def boundaries_query(app: str, topic: str, after: str | None, every: int, limit: int) -> Any:
    """Every ``every``-th subscriber id after ``after`` (see ``ports.Topics.boundaries``); the same SQL serves
    SQLite and PostgreSQL: a bounded scan of the primary key, numbered by a window function."""
    c = topic_subscribers.c
    scan = select(c.user_id).where(c.app == app, c.topic == topic).order_by(c.user_id).limit(every * limit)
    if after is not None:
        scan = scan.where(c.user_id > after)
    ids = scan.subquery("ids")
    numbered = select(ids.c.user_id, func.row_number().over(order_by=ids.c.user_id).label("n")).subquery("n")
    return select(numbered.c.user_id).where(numbered.c.n % every == 0).order_by(numbered.c.user_id)


def _subscribe(conn: Connection, *, app: str, topic: str, user: str, clock: Clock) -> bool:
    row = {"app": app, "topic": topic, "user_id": user, "created_at": clock.time()}
    return conn.execute(sqlite_insert(topic_subscribers).values(row).on_conflict_do_nothing()).rowcount > 0


def _unsubscribe(conn: Connection, *, app: str, topic: str, user: str) -> bool:
    c = topic_subscribers.c
    return (
        conn.execute(
            delete(topic_subscribers).where(c.app == app, c.topic == topic, c.user_id == user)
        ).rowcount
        > 0
    )


def _topic_page(conn: Connection, *, app: str, topic: str, after: str | None, limit: int) -> list[str]:
    c = topic_subscribers.c
    query = select(c.user_id).where(c.app == app, c.topic == topic).order_by(c.user_id).limit(limit)
    if after is not None:
        query = query.where(c.user_id > after)
    return list(conn.execute(query).scalars())


# --- idempotency keys (for broker event logs) ----------------------------------------------------------------


class SqliteIdempotency:
    """``ports.Idempotency``: a claim is one writer transaction, so it is atomic per key (and per batch)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def claim(self, claims: Sequence[Claim], now: float) -> list[Claim | None]:
        if not claims:
            return []
        return await self._db.write(partial(_claim, claims=claims, now=now))

    async def prune(self, older_than: float) -> int:
        return await self._db.write(partial(_prune_keys, older_than=older_than))


def _claim(conn: Connection, *, claims: Sequence[Claim], now: float) -> list[Claim | None]:
    keys = sorted({(c.app, c.key) for c in claims})
    found = rows_matching(
        conn, idempotency_keys, ("app", "key"), ("app", "key", "body_hash", "event_id"), keys
    )
    recorded = {(app, key): Claim(app, key, body_hash, event_id) for app, key, body_hash, event_id in found}
    results: list[Claim | None] = []
    new_rows = []
    for claim in claims:
        earlier = recorded.get((claim.app, claim.key))
        results.append(earlier)
        if earlier is None:  # a later claim of the same key in this batch sees this one
            recorded[(claim.app, claim.key)] = claim
            new_rows.append({**_claim_row(claim), "created_at": now})
    if new_rows:
        conn.execute(insert(idempotency_keys), new_rows)
    return results


def _claim_row(claim: Claim) -> dict[str, str]:
    return {"app": claim.app, "key": claim.key, "event_id": claim.event_id, "body_hash": claim.body_hash}


def _prune_keys(conn: Connection, *, older_than: float) -> int:
    return conn.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)).rowcount


# --- preferences and app rules ------------------------------------------------------------------------------


class SqlitePreferences:
    """``ports.Preferences``: each user's preferences and each app's rules as one JSON document."""

    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def user(self, app: str, user: str) -> UserPreferences | None:
        return (await self.users(app, [user])).get(user)

    async def users(self, app: str, users: Sequence[str]) -> dict[str, UserPreferences]:
        if not users:
            return {}
        keys = [(app, user) for user in dict.fromkeys(users)]
        columns = ("user_id", "body")
        rows = await self._db.read(
            lambda conn: rows_matching(conn, user_preferences, ("app", "user_id"), columns, keys)
        )
        return {user: prefs_from_json(orjson.loads(body)) for user, body in rows}

    async def set_user(self, app: str, user: str, prefs: UserPreferences) -> None:
        row = {"app": app, "user_id": user, "body": orjson.dumps(prefs_to_json(prefs)).decode()}
        await self._db.write(partial(_upsert_body, table=user_preferences, row=row, now=self._clock.time()))

    async def rules(self, app: str) -> AppRules | None:
        query = select(app_rules.c.body).where(app_rules.c.app == app)
        body = await self._db.read(lambda conn: conn.execute(query).scalar())
        return None if body is None else rules_from_json(orjson.loads(body))

    async def set_rules(self, app: str, rules: AppRules) -> None:
        row = {"app": app, "body": orjson.dumps(rules_to_json(rules)).decode()}
        await self._db.write(partial(_upsert_body, table=app_rules, row=row, now=self._clock.time()))


def _upsert_body(conn: Connection, *, table: Table, row: Mapping[str, str], now: float) -> None:
    upsert = sqlite_insert(table).values({**row, "updated_at": now})
    keys = list(table.primary_key.columns)
    conn.execute(
        upsert.on_conflict_do_update(index_elements=keys, set_={"body": row["body"], "updated_at": now})
    )


# --- the decision log and pending offline deliveries ----------------------------------------------------------


class SqliteDecisions:
    """``ports.Decisions``."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def record(self, items: Sequence[Decision]) -> None:
        if items:
            await self._db.write(lambda conn: record_decisions(conn, items))

    async def for_event(
        self, app: str, event_id: str, *, user: str | None, after: tuple[str, str, str] | None, limit: int
    ) -> list[Decision]:
        query = decisions_query(app, event_id, user=user, after=after, limit=limit)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [decision_of(row) for row in rows]

    async def pending(self, app: str, user: str) -> list[Deferred]:
        query = pending_query(app, user)
        return [deferred_of(row) for row in await self._db.read(lambda conn: conn.execute(query).all())]

    async def prune(self, older_than: float) -> int:
        statements = prune_statements(older_than)
        return await self._db.write(lambda conn: sum(int(conn.execute(s).rowcount) for s in statements))


def prune_statements(older_than: float) -> tuple[Any, Any]:
    """Decisions made before ``older_than``; pending deliveries due before it that no sender took."""
    return (
        delete(decisions).where(decisions.c.at < older_than),
        delete(deferred).where(deferred.c.due_at < older_than),
    )


def decisions_query(
    app: str, event_id: str, *, user: str | None, after: tuple[str, str, str] | None, limit: int
) -> Any:
    """An event's decisions in (user, kind, channel) order: keyset pages along the primary key."""
    c = decisions.c
    query = select(decisions).where(c.app == app, c.event_id == event_id)
    if user is not None:
        query = query.where(c.user_id == user)
    if after is not None:
        query = query.where(tuple_(c.user_id, c.kind, c.channel) > tuple_(*after))
    return query.order_by(c.user_id, c.kind, c.channel).limit(limit)


def decision_of(row: Any) -> Decision:
    detail = orjson.loads(row.detail) if row.detail is not None else None
    return Decision(
        row.app, row.event_id, row.user_id, row.kind, row.reason, row.channel, row.seq, row.at, detail
    )


def pending_query(app: str, user: str) -> Any:
    d = deferred.c
    return select(deferred).where(d.app == app, d.user_id == user).order_by(d.seq, d.channel)


def deferred_of(row: Any) -> Deferred:
    return Deferred(
        row.app, row.user_id, row.seq, row.channel, row.event_id, row.due_at, row.reason, bool(row.digest)
    )

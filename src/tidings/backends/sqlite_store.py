"""The storage ports on SQLite: ``SqliteInbox``, ``SqliteApps``, ``SqliteTopics`` (see ``backends/sqlite.py``
for the file, its threads and its error translation).

Each public method is one unit of work: a sync function of a ``Connection`` that runs in one transaction on
the writer thread (writes) or a reader thread (reads). Every query is scoped by ``app``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import orjson
from sqlalchemy import ColumnElement, Connection, Table, and_, delete, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tidings.core.clock import Clock
from tidings.core.ids import new_id
from tidings.core.models import App, InboxItem, InboxWrite, StoredNotification, render_notification
from tidings.db.schema import apps, idempotency_keys, inbox, stream_tickets, topic_subscribers, user_seqs
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
    values: Sequence[tuple[str, ...]],
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
    """Existing rows come back unchanged; new ones get the next seqs in batch order (see ``ports.Inbox``)."""
    keys = [(w.app, w.user, w.event.id) for w in writes]
    stored = _existing_rows(conn, list(dict.fromkeys(keys)))
    fresh = {key: w for key, w in zip(keys, writes, strict=True) if key not in stored}
    if fresh:
        now = clock.time()  # read inside the transaction, so created_at follows commit order
        last = _last_seqs(conn, list(dict.fromkeys((app, user) for app, user, _ in fresh)))
        rows = []
        for key, w in fresh.items():
            seq = last[key[:2]] = last.get(key[:2], 0) + 1  # the user's next seq, in batch order
            notification_id = new_id(now)
            payload = render_notification(w, seq=seq, notification_id=notification_id, created_at=now)
            stored[key] = StoredNotification(w.app, w.user, seq, w.event.id, payload)
            rows.append(_inbox_row(w, seq, notification_id, payload, now))
        conn.execute(insert(inbox), rows)
        _save_last_seqs(conn, {user_key: last[user_key] for user_key in {key[:2] for key in fresh}})
    return [stored[key] for key in keys]


def _inbox_row(
    write: InboxWrite, seq: int, notification_id: str, payload: bytes, now: float
) -> dict[str, object]:
    return {
        "app": write.app,
        "user_id": write.user,
        "seq": seq,
        "id": notification_id,
        "event_id": write.event.id,
        "payload": payload,
        "group_key": write.event.group_key,
        "created_at": now,
    }


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
    upsert = sqlite_insert(user_seqs)
    upsert = upsert.on_conflict_do_update(
        index_elements=[user_seqs.c.app, user_seqs.c.user_id], set_={"last_seq": upsert.excluded.last_seq}
    )
    conn.execute(upsert, [{"app": a, "user_id": u, "last_seq": seq} for (a, u), seq in last.items()])


def _of_user(app: str, user: str) -> ColumnElement[bool]:
    return and_(inbox.c.app == app, inbox.c.user_id == user)


def _backlog(conn: Connection, *, app: str, user: str, after: int, limit: int) -> list[StoredNotification]:
    c = inbox.c
    query = (
        select(c.seq, c.event_id, c.payload)
        .where(_of_user(app, user), c.seq > after)
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
    query = select(c.seq, c.payload, c.read_at, c.seen_at).where(_of_user(app, user)).limit(limit)
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
    row = conn.execute(select(unread, unseen).where(_of_user(app, user))).one()
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
    """Sets the field only where it is unset (the first read time stays); ``seqs`` and ``up_to`` add up."""
    column = inbox.c.read_at if field == "read" else inbox.c.seen_at
    unset = update(inbox).where(_of_user(app, user), column.is_(None)).values({column: at})
    changed = 0
    if up_to is not None:
        changed += conn.execute(unset.where(inbox.c.seq <= up_to)).rowcount
    wanted = sorted(set(seqs or ()))
    for start in range(0, len(wanted), LOOKUP_CHUNK):  # bounded statement size for any list length
        changed += conn.execute(unset.where(inbox.c.seq.in_(wanted[start : start + LOOKUP_CHUNK]))).rowcount
    return changed


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

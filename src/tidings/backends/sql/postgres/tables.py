"""The small tables on PostgreSQL: ``PostgresApps`` (apps and stream tickets), ``PostgresTopics``,
``PostgresIdempotency`` (for broker event logs) and ``PostgresPreferences`` (user preferences, app rules).

Invariant: what SQLite gets from its single writer, these get from the database, since any number of
processes write: a unique key decides a race (``INSERT ... ON CONFLICT DO NOTHING``, ``DELETE ... RETURNING``),
and a batch touches its keys in sorted order, so concurrent batches cannot deadlock. The statements shared
with SQLite come from ``sql.queries``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from sqlalchemy import Float, and_, any_, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends.sql import queries
from tidings.backends.sql.postgres.arrays import Columns, insert_unnest, rows_of, text_array
from tidings.backends.sql.postgres.database import PostgresDatabase, changed, fetch_all, rowcount
from tidings.backends.sql.rows import (
    app_of,
    app_row,
    prefs_of,
    prefs_row,
    redeemed,
    rules_of,
    rules_row,
    subscriber_row,
    ticket_row,
)
from tidings.core.clock import Clock
from tidings.core.models import App
from tidings.core.rules import AppRules, UserPreferences
from tidings.db.schema import (
    app_rules,
    apps,
    idempotency_keys,
    stream_tickets,
    topic_subscribers,
    user_preferences,
)
from tidings.errors import AppExistsError, ConflictError
from tidings.ports import Claim

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
        return _first_app(
            await self._db.read(partial(fetch_all, query=queries.app_query(apps.c.name == name)))
        )

    async def by_key_hash(self, key_hash: str) -> App | None:
        query = queries.app_query(queries.with_key(key_hash))
        return _first_app(await self._db.read(partial(fetch_all, query=query)))

    async def all(self) -> list[App]:
        return [app_of(row) for row in await self._db.read(partial(fetch_all, query=queries.all_apps()))]

    async def rotate_key(self, name: str, key_hash: str, previous_until: float) -> bool:
        statement = queries.rotate_key(name, key_hash, previous_until)
        return await self._db.write(partial(changed, statement=statement))

    async def rotate_secret(self, name: str, jwt_secret: str, previous_until: float) -> bool:
        statement = queries.rotate_secret(name, jwt_secret, previous_until)
        return await self._db.write(partial(changed, statement=statement))

    async def delete(self, name: str) -> bool:
        return await self._db.write(partial(_delete_app, name=name))

    async def issue_ticket(self, ticket_hash: str, app: str, user: str, expires_at: float) -> None:
        row = ticket_row(ticket_hash, app, user, expires_at)
        await self._db.write(partial(_issue_ticket, row=row, now=self._clock.time()))

    async def redeem_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        return await self._db.write(partial(_redeem_ticket, ticket_hash=ticket_hash, now=now))


async def _create_app(conn: AsyncConnection, *, app: App) -> None:
    """ON CONFLICT DO NOTHING covers both unique keys (name, key hash) and a concurrent create alike."""
    insert = pg_insert(apps).values(app_row(app)).on_conflict_do_nothing().returning(apps.c.name)
    created = await conn.execute(insert)
    if created.first() is not None:
        return
    if (await conn.execute(queries.app_named(app.name))).first() is not None:
        raise AppExistsError(f"an app named {app.name!r} exists already", app=app.name)
    raise ConflictError("that API key is in use")


async def _delete_app(conn: AsyncConnection, *, name: str) -> bool:
    """One transaction: the row and the tickets go together (a concurrent delete finds no row)."""
    app_row_gone, tickets_gone = queries.delete_app(name)
    await conn.execute(tickets_gone)
    return (await conn.execute(app_row_gone)).rowcount > 0


def _first_app(rows: list[Any]) -> App | None:
    return app_of(rows[0]) if rows else None


async def _issue_ticket(conn: AsyncConnection, *, row: dict[str, object], now: float) -> None:
    await conn.execute(queries.drop_expired_tickets(now))
    await conn.execute(pg_insert(stream_tickets).values(row).on_conflict_do_nothing())


async def _redeem_ticket(conn: AsyncConnection, *, ticket_hash: str, now: float) -> tuple[str, str] | None:
    """DELETE ... RETURNING: of concurrent redeems, one deletes the row; the others wait, then find none."""
    taken = (await conn.execute(queries.take_ticket(ticket_hash))).first()
    await conn.execute(queries.drop_expired_tickets(now))
    return redeemed(taken, now)


# --- topics -------------------------------------------------------------------------------------------------


class PostgresTopics:
    """``ports.Topics``: subscribers are read in keyset pages (``user_id > after``) along the primary key,
    so a page costs the same at any depth of a topic with millions of subscribers."""

    def __init__(self, db: PostgresDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def subscribe(self, app: str, topic: str, user: str) -> bool:
        row = subscriber_row(app, topic, user, self._clock.time())
        statement = pg_insert(topic_subscribers).values(row).on_conflict_do_nothing()
        return await self._db.write(partial(changed, statement=statement))

    async def unsubscribe(self, app: str, topic: str, user: str) -> bool:
        statement = queries.unsubscribe_statement(app, topic, user)
        return await self._db.write(partial(changed, statement=statement))

    async def page(self, app: str, topic: str, after: str | None, limit: int) -> list[str]:
        query = queries.subscribers_page(app, topic, after, limit)
        return [row.user_id for row in await self._db.read(partial(fetch_all, query=query))]

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
        return await self._db.write(partial(rowcount, statement=statement))

    async def boundaries(self, app: str, topic: str, after: str | None, every: int, limit: int) -> list[str]:
        query = queries.boundaries_query(app, topic, after, every, limit)
        return [row.user_id for row in await self._db.read(partial(fetch_all, query=query))]


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
        return await self._db.write(partial(rowcount, statement=queries.prune_keys(older_than)))


# A key found neither inserted nor stored was pruned between the two statements: try it again, boundedly.
CLAIM_ROUNDS = 3


async def _claim(conn: AsyncConnection, *, claims: Sequence[Claim], now: float) -> list[Claim | None]:
    firsts: dict[tuple[str, str], Claim] = {}
    for claim in claims:  # a later claim of a key in this batch sees the first
        firsts.setdefault((claim.app, claim.key), claim)
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
        ids = text_array("pref_users", sorted(set(users)))
        query = select(p.user_id, p.body).where(p.app == app, p.user_id == any_(ids))
        rows = await self._db.read(partial(fetch_all, query=query))
        return {row.user_id: prefs_of(row.body) for row in rows}

    async def set_user(self, app: str, user: str, prefs: UserPreferences) -> None:
        row = prefs_row(app, user, prefs)
        statement = queries.upsert_body(pg_insert, user_preferences, row, self._clock.time())
        await self._db.write(partial(rowcount, statement=statement))

    async def rules(self, app: str) -> AppRules | None:
        rows = await self._db.read(partial(fetch_all, query=queries.rules_query(app)))
        return rules_of(rows[0].body) if rows else None

    async def set_rules(self, app: str, rules: AppRules) -> None:
        row = rules_row(app, rules)
        statement = queries.upsert_body(pg_insert, app_rules, row, self._clock.time())
        await self._db.write(partial(rowcount, statement=statement))

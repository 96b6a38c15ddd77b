"""The small tables on SQLite: ``SqliteApps`` (apps and stream tickets), ``SqliteTopics``,
``SqliteIdempotency`` (for broker event logs) and ``SqlitePreferences`` (user preferences, app rules).

Each public method is one unit of work on ``SqliteDatabase``: a write is one transaction on the single writer
thread, so a check-then-insert (an app's unique name and key, a batch of idempotency claims) is atomic without
further locking. The statements shared with PostgreSQL come from ``sql.queries``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from sqlalchemy import ColumnElement, Connection, insert, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tidings.backends.sql import queries
from tidings.backends.sql.rows import (
    app_of,
    app_row,
    claim_row,
    prefs_of,
    prefs_row,
    redeemed,
    rules_of,
    rules_row,
    subscriber_row,
    ticket_row,
)
from tidings.backends.sql.sqlite.batches import rows_matching
from tidings.backends.sql.sqlite.database import SqliteDatabase
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
        return await self._db.read(partial(_app_where, match=queries.with_key(key_hash)))

    async def all(self) -> list[App]:
        return await self._db.read(lambda conn: [app_of(row) for row in conn.execute(queries.all_apps())])

    async def rotate_key(self, name: str, key_hash: str, previous_until: float) -> bool:
        statement = queries.rotate_key(name, key_hash, previous_until)
        return await self._db.write(lambda conn: conn.execute(statement).rowcount > 0)

    async def rotate_secret(self, name: str, jwt_secret: str, previous_until: float) -> bool:
        statement = queries.rotate_secret(name, jwt_secret, previous_until)
        return await self._db.write(lambda conn: conn.execute(statement).rowcount > 0)

    async def delete(self, name: str) -> bool:
        app_row_gone, tickets_gone = queries.delete_app(name)

        def run(conn: Connection) -> bool:
            conn.execute(tickets_gone)
            return conn.execute(app_row_gone).rowcount > 0

        return await self._db.write(run)

    async def issue_ticket(self, ticket_hash: str, app: str, user: str, expires_at: float) -> None:
        row = ticket_row(ticket_hash, app, user, expires_at)
        await self._db.write(partial(_issue_ticket, row=row, now=self._clock.time()))

    async def redeem_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None:
        return await self._db.write(partial(_redeem_ticket, ticket_hash=ticket_hash, now=now))


def _create_app(conn: Connection, *, app: App) -> None:
    if conn.execute(queries.app_named(app.name)).first() is not None:
        raise AppExistsError(f"an app named {app.name!r} exists already", app=app.name)
    if conn.execute(select(apps.c.name).where(apps.c.api_key_hash == app.api_key_hash)).first() is not None:
        raise ConflictError("that API key is in use")
    conn.execute(insert(apps).values(app_row(app)))


def _app_where(conn: Connection, *, match: ColumnElement[bool]) -> App | None:
    row = conn.execute(queries.app_query(match)).first()
    return None if row is None else app_of(row)


def _issue_ticket(conn: Connection, *, row: dict[str, object], now: float) -> None:
    conn.execute(queries.drop_expired_tickets(now))
    conn.execute(sqlite_insert(stream_tickets).values(row).on_conflict_do_nothing())


def _redeem_ticket(conn: Connection, *, ticket_hash: str, now: float) -> tuple[str, str] | None:
    taken = conn.execute(queries.take_ticket(ticket_hash)).first()
    conn.execute(queries.drop_expired_tickets(now))
    return redeemed(taken, now)


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
        statement = queries.unsubscribe_statement(app, topic, user)
        return await self._db.write(lambda conn: conn.execute(statement).rowcount > 0)

    async def page(self, app: str, topic: str, after: str | None, limit: int) -> list[str]:
        query = queries.subscribers_page(app, topic, after, limit)
        return await self._db.read(lambda conn: list(conn.execute(query).scalars()))

    async def subscribe_many(self, app: str, topic: str, users: Sequence[str]) -> int:
        if not users:
            return 0
        now = self._clock.time()
        rows = [{"app": app, "topic": topic, "user_id": u, "created_at": now} for u in dict.fromkeys(users)]
        return await self._db.write(partial(_subscribe_many, rows=rows))

    async def boundaries(self, app: str, topic: str, after: str | None, every: int, limit: int) -> list[str]:
        query = queries.boundaries_query(app, topic, after, every, limit)
        return await self._db.read(lambda conn: list(conn.execute(query).scalars()))


def _subscribe(conn: Connection, *, app: str, topic: str, user: str, clock: Clock) -> bool:
    row = subscriber_row(app, topic, user, clock.time())  # read inside the transaction: commit order
    return conn.execute(sqlite_insert(topic_subscribers).values(row).on_conflict_do_nothing()).rowcount > 0


def _subscribe_many(conn: Connection, *, rows: list[dict[str, object]]) -> int:
    # executemany: the rowcount is the sum over the rows, i.e. the rows that were new.
    return int(conn.execute(sqlite_insert(topic_subscribers).on_conflict_do_nothing(), rows).rowcount)


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
        statement = queries.prune_keys(older_than)
        return await self._db.write(lambda conn: conn.execute(statement).rowcount)


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
            new_rows.append({**claim_row(claim), "created_at": now})
    if new_rows:
        conn.execute(insert(idempotency_keys), new_rows)
    return results


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
        return {user: prefs_of(body) for user, body in rows}

    async def set_user(self, app: str, user: str, prefs: UserPreferences) -> None:
        row = prefs_row(app, user, prefs)
        statement = queries.upsert_body(sqlite_insert, user_preferences, row, self._clock.time())
        await self._db.write(lambda conn: conn.execute(statement).rowcount)

    async def rules(self, app: str) -> AppRules | None:
        query = queries.rules_query(app)
        body = await self._db.read(lambda conn: conn.execute(query).scalar())
        return None if body is None else rules_of(body)

    async def set_rules(self, app: str, rules: AppRules) -> None:
        row = rules_row(app, rules)
        statement = queries.upsert_body(sqlite_insert, app_rules, row, self._clock.time())
        await self._db.write(lambda conn: conn.execute(statement).rowcount)

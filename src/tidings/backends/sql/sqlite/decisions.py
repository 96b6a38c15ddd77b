"""``ports.Decisions`` on SQLite: the decision log and the pending offline deliveries.

Invariant: one decision per (app, event, user, kind, channel); recording it again leaves the first as it is
(``ON CONFLICT DO NOTHING``), so a redelivered event does not rewrite its history. ``record_decisions`` is also
how the inbox write path records its decisions, in the same transaction as the rows they are about.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from tidings.backends.sql import queries
from tidings.backends.sql.rows import DECISION_COLUMNS, decision_of, deferred_of, detail_json
from tidings.backends.sql.sqlite.batches import insert_many
from tidings.backends.sql.sqlite.database import SqliteDatabase
from tidings.core.rules import Decision, Deferred


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
        query = queries.decisions_query(app, event_id, user=user, after=after, limit=limit)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [decision_of(row) for row in rows]

    async def pending(self, app: str, user: str) -> list[Deferred]:
        query = queries.pending_query(app, user)
        return [deferred_of(row) for row in await self._db.read(lambda conn: conn.execute(query).all())]

    async def prune(self, older_than: float) -> int:
        statements = queries.prune_statements(older_than)
        return await self._db.write(lambda conn: sum(int(conn.execute(s).rowcount) for s in statements))


def decision_row(d: Decision) -> tuple[Any, ...]:
    return (d.app, d.event_id, d.user, d.kind, d.channel, d.reason, d.seq, detail_json(d), d.at)


def record_decisions(conn: Connection, items: Sequence[Decision]) -> None:
    """Inserts decisions; one already recorded for its (app, event, user, kind, channel) stays as it is."""
    rows = [decision_row(d) for d in items]
    insert_many(conn, "decisions", DECISION_COLUMNS, rows, " ON CONFLICT DO NOTHING")

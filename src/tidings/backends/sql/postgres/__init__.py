"""The scale-out store: ``PostgresStore`` on PostgreSQL, for any number of API and worker processes.

``PostgresStore`` composes the parts, each on the one ``PostgresDatabase`` (``database``: the pool, the
namespace, migrations, retries, errors): ``inbox`` (the write path: per-user counter locks in a fixed order),
``tables`` (apps, topics, idempotency keys, preferences), ``decisions`` and ``outbound`` (the senders'
targets and ledger: shared synchronous SQL, run here through ``AsyncConnection.run_sync``);
``partitions`` is the opt-in hash partitioning of the per-user tables. Invariant: every unit of work is
one transaction (or one autocommit read), safe to retry from its start, and correct with other processes
writing the same namespace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends.sql.erasure import SqlUserData
from tidings.backends.sql.outbound import SqlOutbound
from tidings.backends.sql.postgres.database import (
    PARTITIONS_ENV,
    PostgresDatabase,
    partitions_from_env,
    quoted,
    select_one,
)
from tidings.backends.sql.postgres.decisions import PostgresDecisions
from tidings.backends.sql.postgres.inbox import PostgresInbox
from tidings.backends.sql.postgres.tables import (
    PostgresApps,
    PostgresIdempotency,
    PostgresPreferences,
    PostgresTopics,
)
from tidings.backends.sql.retention import SqlRetention
from tidings.core.clock import Clock, SystemClock
from tidings.settings import Settings

__all__ = ["PARTITIONS_ENV", "PostgresDatabase", "PostgresStore", "partitions_from_env", "quoted"]


def run_sync(
    runner: Callable[[Any], Awaitable[Any]],
) -> Callable[[Callable[[Connection], Any]], Awaitable[Any]]:
    """A runner of synchronous units of work (``backends.sql.outbound``) on top of an async one."""

    def run(work: Callable[[Connection], Any]) -> Awaitable[Any]:
        async def on(conn: AsyncConnection) -> Any:
            return await conn.run_sync(work)

        return runner(on)

    return run


class PostgresStore:
    """``ports.Store`` on PostgreSQL. Open with ``await PostgresStore.open(url, settings)``."""

    def __init__(self, db: PostgresDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.inbox = PostgresInbox(db, clock)
        self.apps = PostgresApps(db, clock)
        self.topics = PostgresTopics(db, clock)
        self.idempotency = PostgresIdempotency(db)
        self.preferences = PostgresPreferences(db, clock)
        self.decisions = PostgresDecisions(db)
        self.outbound = SqlOutbound(run_sync(db.write), run_sync(db.read), clock)
        self.retention = SqlRetention(run_sync(db.write), run_sync(db.read), clock)
        self.user_data = SqlUserData(run_sync(db.write), run_sync(db.read), clock)

    @classmethod
    async def open(
        cls, url: str, settings: Settings, clock: Clock | None = None, *, partitions: int | None = None
    ) -> PostgresStore:
        """``partitions``: hash partitions for a fresh namespace (default: ``TIDINGS_PG_PARTITIONS``, or 0)."""
        db = await PostgresDatabase.open(url, settings, partitions=partitions)
        return cls(db, clock or SystemClock())

    async def ping(self) -> None:
        await self.db.read(select_one)

    async def close(self) -> None:
        await self.db.close()

"""The embedded backend: one SQLite file in WAL mode holds the store (inbox, apps, topics...) and the event log.

``SqliteStore`` composes the parts, each on the one ``SqliteDatabase`` (``database``: the file, its writer
thread and reader threads): ``inbox`` (the write path: seqs from the single writer), ``tables`` (apps,
topics, idempotency keys, preferences), ``decisions``, ``outbound`` (the senders' targets and ledger,
shared SQL in ``backends.sql.outbound``) and, for ``memory://`` as broker, ``log``
(``SqliteEventLog``, sharing the writer thread). Invariant: every write of the store and of its log runs on
that one writer thread, so SQLite's single-writer lock is never contended within the process.
"""

from __future__ import annotations

from tidings.backends.sql.erasure import SqlUserData
from tidings.backends.sql.outbound import SqlOutbound
from tidings.backends.sql.retention import SqlRetention
from tidings.backends.sql.sqlite.database import SqliteDatabase, select_one
from tidings.backends.sql.sqlite.decisions import SqliteDecisions
from tidings.backends.sql.sqlite.inbox import SqliteInbox
from tidings.backends.sql.sqlite.log import SqliteEventLog
from tidings.backends.sql.sqlite.tables import SqliteApps, SqliteIdempotency, SqlitePreferences, SqliteTopics
from tidings.core.clock import Clock, SystemClock
from tidings.settings import Settings

__all__ = ["SqliteDatabase", "SqliteEventLog", "SqliteStore"]


class SqliteStore:
    """``ports.Store`` on one SQLite file. Open with ``await SqliteStore.open(url, settings)``."""

    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.inbox = SqliteInbox(db, clock)
        self.apps = SqliteApps(db, clock)
        self.topics = SqliteTopics(db, clock)
        self.idempotency = SqliteIdempotency(db)
        self.preferences = SqlitePreferences(db, clock)
        self.decisions = SqliteDecisions(db)
        self.outbound = SqlOutbound(db.write, db.read, clock)
        self.retention = SqlRetention(db.write, db.read, clock)
        self.user_data = SqlUserData(db.write, db.read, clock)

    @classmethod
    async def open(cls, url: str, settings: Settings, clock: Clock | None = None) -> SqliteStore:
        return cls(await SqliteDatabase.open(url, settings), clock or SystemClock())

    def embedded_log(self, settings: Settings, consumer: str = "fanout") -> SqliteEventLog:
        """The event log in this store's file, sharing its writer thread (see ``backends.open_log``)."""
        return SqliteEventLog(self, settings, consumer=consumer)

    async def ping(self) -> None:
        await self.db.read(select_one)

    async def close(self) -> None:
        """Close the event log on this store first: it writes through the same writer thread."""
        await self.db.close()

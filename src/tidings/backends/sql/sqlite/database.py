"""One SQLite file in WAL mode: its writer thread and connection, its reader threads, pragmas and migration.

Threads. SQLite has a single writer, so every write transaction runs on ONE dedicated writer thread with ONE
connection, and opens with ``BEGIN IMMEDIATE``: the write lock is taken up front, so a writer in another
process (``tidings apps create`` while the server runs) waits up to ``busy_timeout`` instead of failing
halfway through. Reads run on a small pool of reader threads, each with its own connection (``query_only``):
WAL lets them proceed while a write commits. The event loop never waits on SQLite; each unit of work is one
sync function of a ``Connection`` run on those threads, in one transaction.

Durability. ``PRAGMA synchronous`` comes from ``Settings.sqlite_synchronous``: FULL (the default) makes a
commit survive power loss; NORMAL only a crash of the process, for a faster commit.

Errors of SQLite come out as ``tidings.errors``: ``ConflictError`` for a violated constraint,
``UnavailableError`` otherwise.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc, make_url, text
from sqlalchemy.engine import URL

from tidings.db import migrate
from tidings.errors import ConfigError, ConflictError, TidingsError, UnavailableError
from tidings.settings import Settings

__all__ = ["SqliteDatabase", "select_one", "sqlite_path"]

T = TypeVar("T")

SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
BUSY_TIMEOUT_MS = 5000
READERS = 4


def sqlite_path(url: str) -> Path:
    """The file behind a ``sqlite:///path`` URL. In-memory databases are refused: each connection would get
    its own empty database, and the writer and readers must share one."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as error:
        raise ConfigError(f"not a database URL: {url!r}") from error
    if parsed.get_backend_name() != "sqlite":
        raise ConfigError(f"not a sqlite URL: {url!r}")
    if not parsed.database or parsed.database == ":memory:":
        raise ConfigError("the sqlite store needs a file: sqlite:///path/to/tidings.db")
    return Path(parsed.database)


def _synchronous(settings: Settings) -> str:
    level = settings.sqlite_synchronous.strip().upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise ConfigError(f"sqlite_synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, not {level!r}")
    return level


def _engine(path: Path, *, pool_size: int, begin: str, pragmas: tuple[str, ...]) -> Engine:
    """An engine whose connections run ``pragmas`` once and open every transaction with ``begin``.

    pysqlite's own transaction handling is switched off (``isolation_level = None``): it does not begin
    before every statement kind, and it cannot say IMMEDIATE per transaction.
    """
    engine = create_engine(
        URL.create("sqlite+pysqlite", database=str(path)),
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.isolation_level = None
        for pragma in pragmas:
            dbapi_connection.execute(pragma)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(begin)

    return engine


def _translate(error: Exception) -> TidingsError:
    if isinstance(error, exc.IntegrityError | sqlite3.IntegrityError):
        return ConflictError("the write conflicts with a stored row")
    return UnavailableError("the sqlite database is unavailable")


class SqliteDatabase:
    """One SQLite file: a writer thread and connection, a pool of reader threads and connections."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", readers: int = READERS) -> None:
        common = (f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",)
        self.path = path
        self._writer = _engine(
            path,
            pool_size=1,
            begin="BEGIN IMMEDIATE",
            pragmas=(*common, "PRAGMA journal_mode = WAL", f"PRAGMA synchronous = {synchronous}"),
        )
        # query_only: a read that tried to write would bypass the writer thread and its lock discipline.
        self._readers = _engine(
            path, pool_size=readers, begin="BEGIN", pragmas=(*common, "PRAGMA query_only = 1")
        )
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="tidings-sqlite-writer")
        self._read_threads = ThreadPoolExecutor(readers, thread_name_prefix="tidings-sqlite-reader")
        self._closed = False

    @classmethod
    async def open(cls, url: str, settings: Settings) -> SqliteDatabase:
        """Opens (creating if needed) the file at ``url`` and migrates it to the newest schema."""
        path = sqlite_path(url)
        db = cls(path, synchronous=_synchronous(settings))
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            await db.write(migrate.upgrade_connection)
        except BaseException:
            await db.close()
            raise
        return db

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Runs ``work`` in one write transaction on the writer thread; commits when it returns."""
        return await self._submit(self._write_thread, self._in_write, work)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Runs ``work`` in one read transaction (a consistent snapshot) on a reader thread."""
        return await self._submit(self._read_threads, self._in_read, work)

    async def close(self) -> None:
        """Waits for the work in hand, then closes every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for executor in (self._write_thread, self._read_threads):
            await asyncio.to_thread(executor.shutdown, wait=True)
        self._writer.dispose()
        self._readers.dispose()

    async def _submit(
        self,
        executor: ThreadPoolExecutor,
        runner: Callable[[Callable[[Connection], T]], T],
        work: Callable[[Connection], T],
    ) -> T:
        if self._closed:
            raise UnavailableError("the sqlite database is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, runner, work)
        except (exc.SQLAlchemyError, sqlite3.Error) as error:
            raise _translate(error) from error

    def _in_write(self, work: Callable[[Connection], T]) -> T:
        with self._writer.begin() as connection:
            return work(connection)

    def _in_read(self, work: Callable[[Connection], T]) -> T:
        with self._readers.connect() as connection:
            return work(connection)  # leaving the block rolls the read transaction back


def select_one(connection: Connection) -> None:
    """The unit of work of a ping: a read that touches the file."""
    connection.execute(text("SELECT 1"))

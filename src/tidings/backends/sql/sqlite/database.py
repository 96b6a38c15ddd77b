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
import contextlib
import errno
import os
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

__all__ = ["SqliteDatabase", "check_directory", "select_one", "sqlite_path"]

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
        """Opens (creating if needed) the file at ``url`` and migrates it to the newest schema.

        A directory that cannot hold the file ends start-up with a ``ConfigError`` that names the path, what is
        wrong and what to do (``check_directory``), not with SQLite's "unable to open database file"."""
        path = sqlite_path(url)
        elsewhere = "--data another directory" if not settings.store else "--store another sqlite:///path"
        hint = f"pass {elsewhere} this process can write"
        await asyncio.to_thread(check_directory, path.parent, hint)
        db = cls(path, synchronous=_synchronous(settings))
        try:
            await db.write(migrate.upgrade_connection)
        except UnavailableError as error:
            await db.close()
            cause = error.__cause__
            detail = str(getattr(cause, "orig", None) or cause or error.message)
            raise UnavailableError(
                f"cannot open the sqlite database {path}: {detail}: move it aside or pass {elsewhere}"
            ) from cause
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


# What the data directory's failure to take a write means, and what to do about it (before the hint).
_DIRECTORY_ERRORS = {
    errno.EROFS: ("is on a read-only filesystem", "remount it read-write or"),
    errno.EACCES: ("is not writable by this user", "fix its permissions or"),
    errno.EPERM: ("cannot be written (permissions or an immutable attribute)", "fix its attributes or"),
    errno.ENOSPC: ("is on a full disk", "free some space there or"),
    errno.EDQUOT: ("is over its disk quota", "free some space there or"),
}
PROBE_BYTES = 64 * 1024  # about what creating the database and its WAL writes first


def check_directory(
    directory: Path, hint: str = "pass --data another directory this process can write"
) -> None:
    """Creates ``directory`` if needed and proves it takes a write: a probe file of ``PROBE_BYTES``, then
    removed. Raises ``ConfigError`` with one line (the path, what is wrong, what to do) when it is a file,
    under a file, read-only, not writable, or on a full disk. Checked at start-up, so a server never reports
    ready on a store that cannot commit; a disk that fills later gives 503s until space is freed."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"the data directory {directory} is a file, not a directory: {hint}") from None
    except NotADirectoryError:
        blocker = next((p for p in directory.parents if p.exists() and not p.is_dir()), directory)
        raise ConfigError(f"the data directory {directory} is under a file ({blocker}): {hint}") from None
    except OSError as error:
        raise _unusable(directory, error, hint) from None
    probe = directory / f".tidings-write-check-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(
                fd, bytes(PROBE_BYTES)
            )  # a full disk refuses the blocks here (no fsync: start-up stays fast)
        finally:
            os.close(fd)
    except OSError as error:
        raise _unusable(directory, error, hint) from None
    finally:
        with contextlib.suppress(OSError):  # a read-only filesystem cannot have created it either
            probe.unlink(missing_ok=True)


def _unusable(directory: Path, error: OSError, hint: str) -> ConfigError:
    what, fix = _DIRECTORY_ERRORS.get(error.errno or 0, (f"cannot be written ({error.strerror})", ""))
    return ConfigError(f"the data directory {directory} {what}: {fix + ' ' if fix else ''}{hint}")


def select_one(connection: Connection) -> None:
    """The unit of work of a ping: a read that touches the file."""
    connection.execute(text("SELECT 1"))

"""PostgreSQL through SQLAlchemy Core on an async engine over asyncpg: the pool, the namespace, migrations,
transactions with retries, and the translation of errors.

URLs. ``postgresql://``, ``postgres://`` and ``postgresql+asyncpg://`` all mean asyncpg; query parameters
(``?ssl=require``...) go to ``asyncpg.connect``. The tables (``tidings.db.schema``) live in the PostgreSQL
schema named ``Settings.namespace`` (default ``tidings``), created when missing; every connection sets its
``search_path`` to it, so one database can hold many namespaces (the tests use one per test).

Migrations. ``open`` runs the same Alembic migrations as SQLite, in one transaction that first takes
``pg_advisory_xact_lock`` on the namespace: when many processes start at once, one migrates and the others
wait, then find the schema at head and do nothing (PostgreSQL DDL is transactional, so a crash half-way
leaves nothing behind). With ``TIDINGS_PG_PARTITIONS=N`` the same transaction hash-partitions the per-user
tables of a fresh namespace (``partitions.py``).

Concurrency. Every write is one transaction on a pooled connection (READ COMMITTED); every read is one
statement in autocommit mode. A process keeps ``Settings.pg_pool_size`` connections and opens up to
``pg_pool_overflow`` more under load; a call that finds them all busy for ``pg_pool_timeout`` seconds fails with
``UnavailableError`` (a 503 with Retry-After, or a stream's ``unavailable`` end), never with a driver's error.
Inbox writes from any number of processes keep each user's seq gap-free because each transaction locks the
user's counter row (``user_seqs``) before reading it; see ``inbox.py``.

Errors. Serialization failures and deadlocks are retried a bounded number of times. Other errors of asyncpg
and SQLAlchemy come out as ``UnavailableError``; or ``ConflictError`` for a violated constraint; or
``InvalidInputError`` for a value PostgreSQL cannot store (a NUL character in a text, which SQLite stores; a
string longer than its column, which SQLite does not check). A database that cannot be reached fails within
``CONNECT_TIMEOUT`` seconds, a statement within ``COMMAND_TIMEOUT``; pooled connections are pinged on
checkout, so once a restarted server is back, no request fails on a dead connection.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from alembic.migration import MigrationContext
from sqlalchemy import Connection, exc, func, make_url, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tidings.backends.sql.postgres.partitions import partition_per_user_tables
from tidings.db import migrate
from tidings.errors import ConfigError, ConflictError, InvalidInputError, TidingsError, UnavailableError
from tidings.settings import Settings

__all__ = [
    "PARTITIONS_ENV",
    "PostgresDatabase",
    "asyncpg_url",
    "partitions_from_env",
    "quoted",
    "schema_of",
    "sqlstate_of",
]

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[T]]

CONNECT_TIMEOUT = 3.0  # seconds to open a connection: a down database fails fast
COMMAND_TIMEOUT = 10.0  # seconds per statement (lock waits included): a frozen server cannot hang a call
# A transaction left open by a client that vanished (a partition ate its FIN, a proxy in between kept its side of
# the connection) would hold its row locks until TCP noticed, hours later, and every later writer of those rows
# would time out behind it (tests/chaos: a worker cut from PostgreSQL never caught up). PostgreSQL rolls such a
# transaction back after this long; ours never wait between statements for anything near it.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
ATTEMPTS = 5  # tries of a transaction that failed on a serialization failure or a deadlock
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
PARTITIONS_ENV = "TIDINGS_PG_PARTITIONS"
DRIVERS = ("postgresql", "postgres", "postgresql+asyncpg")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")


def asyncpg_url(url: str) -> URL:
    """``postgresql://`` (or ``postgres://``, ``postgresql+asyncpg://``) as a ``postgresql+asyncpg`` URL."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as error:
        raise ConfigError(f"not a database URL: {url!r}") from error
    if parsed.drivername not in DRIVERS:
        raise ConfigError(
            f"the PostgreSQL store speaks asyncpg: use postgresql://, not {parsed.drivername}://"
        )
    return parsed.set(drivername="postgresql+asyncpg")


def schema_of(namespace: str) -> str:
    """The PostgreSQL schema of a namespace. Limited to a plain identifier (it is quoted anyway)."""
    if not _SCHEMA_NAME.fullmatch(namespace):
        raise ConfigError(f"namespace {namespace!r} is not usable as a PostgreSQL schema name")
    return namespace


def quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def partitions_from_env() -> int:
    """``TIDINGS_PG_PARTITIONS`` (0 when unset): hash partitions of a fresh namespace's per-user tables."""
    raw = os.environ.get(PARTITIONS_ENV, "").strip() or "0"
    try:
        count = int(raw)
    except ValueError as error:
        raise ConfigError(f"{PARTITIONS_ENV}={raw!r} is not a number") from error
    if not 0 <= count <= 1024:
        raise ConfigError(f"{PARTITIONS_ENV} must be between 0 and 1024, not {count}")
    return count


def _engine(url: URL, schema: str, settings: Settings) -> AsyncEngine:
    if settings.pg_pool_size < 1 or settings.pg_pool_overflow < 0 or not settings.pg_pool_timeout > 0:
        raise ConfigError(
            "the PostgreSQL pool needs pg_pool_size >= 1, pg_pool_overflow >= 0 and pg_pool_timeout > 0"
        )
    server_settings = {
        "search_path": quoted(schema),
        "application_name": "tidings",
        "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS),
    }
    return create_async_engine(
        url,
        pool_size=settings.pg_pool_size,
        max_overflow=settings.pg_pool_overflow,
        pool_timeout=settings.pg_pool_timeout,  # seconds to wait for a pooled connection when all are busy
        pool_pre_ping=True,
        connect_args={
            "timeout": CONNECT_TIMEOUT,
            "command_timeout": COMMAND_TIMEOUT,
            "server_settings": server_settings,
        },
    )


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE behind a SQLAlchemy error from asyncpg (None for errors without one)."""
    orig = getattr(error, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state if isinstance(state, str) else None


def _translate(error: BaseException) -> TidingsError:
    state = sqlstate_of(error) or ""
    if isinstance(error, exc.IntegrityError) or state.startswith("23"):
        return ConflictError("the write conflicts with a stored row")
    if state.startswith("22"):  # data_exception: a NUL in a text, a string too long, a number out of range
        return InvalidInputError("a value cannot be stored: not valid text, too long or out of range")
    return UnavailableError(f"the PostgreSQL database is unavailable ({type(error).__name__})")


# The errors of the database and of the way to it; anything else (a bug, a TidingsError) passes through.
DATABASE_ERRORS = (exc.SQLAlchemyError, OSError, asyncio.TimeoutError)


class PostgresDatabase:
    """One async engine (a connection pool) on one namespace; runs units of work as transactions."""

    def __init__(self, engine: AsyncEngine, schema: str) -> None:
        self.engine = engine
        self.schema = schema
        # Reads are single statements: autocommit spares them the BEGIN and ROLLBACK round trips.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._closed = False
        self.found_revision: str | None = None  # the schema's revision before this open migrated it

    @classmethod
    async def open(cls, url: str, settings: Settings, *, partitions: int | None = None) -> PostgresDatabase:
        """Connects to the namespace's schema, creating and migrating it when needed (see module docstring)."""
        schema = schema_of(settings.namespace)
        db = cls(_engine(asyncpg_url(url), schema, settings), schema)
        try:
            count = partitions_from_env() if partitions is None else partitions
            db.found_revision = await db.write(lambda conn: _migrate(conn, schema, count), retry=False)
        except BaseException:
            await db.close()
            raise
        return db

    async def write(self, work: Work[T], *, retry: bool = True) -> T:
        """Runs ``work`` in one transaction, committed when it returns; again (bounded) after a deadlock or a
        serialization failure, so ``work`` must be safe to repeat from the start."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self._transaction(work)
            except exc.DBAPIError as error:
                if not (retry and attempt < ATTEMPTS and sqlstate_of(error) in RETRYABLE_SQLSTATES):
                    raise _translate(error) from error
            # Jitter: the transactions that collided should not collide again in lockstep.
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AssertionError("unreachable: the last attempt raises")

    async def read(self, work: Work[T]) -> T:
        """Runs ``work`` (one statement, or statements that need no common snapshot) in autocommit mode."""
        self._check_open()
        try:
            async with self._reader.connect() as conn:
                return await work(conn)
        except DATABASE_ERRORS as error:
            raise _translate(error) from error

    async def close(self) -> None:
        """Closes every pooled connection. Idempotent; later calls fail with ``UnavailableError``."""
        if self._closed:
            return
        self._closed = True
        await self.engine.dispose()

    async def _transaction(self, work: Work[T]) -> T:
        self._check_open()
        try:
            async with self.engine.begin() as conn:
                return await work(conn)
        except exc.DBAPIError:
            raise  # write() decides: retry or translate
        except DATABASE_ERRORS as error:
            raise _translate(error) from error

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the PostgreSQL store is closed")


async def _migrate(conn: AsyncConnection, schema: str, partitions: int) -> str | None:
    """Creates the schema if missing and upgrades it to head, holding the namespace's migration lock until
    commit; returns the revision it found (None: a fresh namespace)."""
    lock_key = func.hashtext(f"tidings.migrate:{schema}")
    await conn.execute(select(func.pg_advisory_xact_lock(lock_key)))
    exists = text("SELECT 1 FROM pg_namespace WHERE nspname = :schema")
    # Looked up first: CREATE SCHEMA IF NOT EXISTS needs the CREATE right even when the schema exists.
    if (await conn.execute(exists, {"schema": schema})).first() is None:
        await conn.execute(text(f"CREATE SCHEMA {quoted(schema)}"))
    found = await conn.run_sync(_upgrade)
    if partitions:
        await partition_per_user_tables(conn, partitions)
    return found


def _upgrade(connection: Connection) -> str | None:
    found = MigrationContext.configure(connection).get_current_revision()
    migrate.upgrade_connection(connection)
    return found


# --- units of work shared by the parts ------------------------------------------------------------------------


async def select_one(conn: AsyncConnection) -> Any:
    """The unit of work of a ping."""
    return (await conn.execute(text("SELECT 1"))).scalar()


async def fetch_all(conn: AsyncConnection, *, query: Any) -> list[Any]:
    """Every row of ``query``."""
    return list((await conn.execute(query)).all())


async def rowcount(conn: AsyncConnection, *, statement: Any) -> int:
    """How many rows ``statement`` changed."""
    return int((await conn.execute(statement)).rowcount)


async def changed(conn: AsyncConnection, *, statement: Any) -> bool:
    """Whether ``statement`` changed any row."""
    return bool((await conn.execute(statement)).rowcount > 0)

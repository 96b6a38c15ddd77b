"""How a batch travels on PostgreSQL: as parallel arrays, one per column, turned into rows by ``unnest``; or,
for the inbox write path's plain inserts, as binary ``COPY`` (``copy_records``).

A batch is then a fixed number of statements whatever its size (no per-row statements, no statement text that
grows with the batch), and each array is one bound parameter of a declared SQL type.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import BigInteger, Boolean, Float, LargeBinary, String, bindparam, exc, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection
    from sqlalchemy.sql.selectable import TableValuedAlias

Columns = dict[str, tuple[str, Sequence[Any]]]  # column name -> (array kind, values), see rows_of

ARRAY_TYPES: dict[str, ARRAY[Any]] = {
    "text": ARRAY(String),
    "bigint": ARRAY(BigInteger),
    "bytes": ARRAY(LargeBinary),
    "float": ARRAY(Float),
    "bool": ARRAY(Boolean),
}


def rows_of(name: str, **columns: tuple[str, Sequence[Any]]) -> TableValuedAlias:
    """``unnest(:a, :b, ...) AS name(a, b, ...)``: parallel arrays as a table, one array per column; each
    column is given as (element kind, values), the kind naming the array's SQL type."""
    arrays = [
        bindparam(f"{name}_{column}", list(values), type_=ARRAY_TYPES[kind])
        for column, (kind, values) in columns.items()
    ]
    return func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


def insert_unnest(table: Any, name: str, columns: Columns) -> Any:
    """``INSERT INTO table (columns) SELECT * FROM unnest(arrays)``: one statement for any batch size."""
    new = rows_of(name, **columns)
    return pg_insert(table).from_select(list(columns), select(*(new.c[c] for c in columns)))


def bigint_array(name: str, values: Sequence[int]) -> Any:
    """One ``bigint[]`` parameter: a list of any length in one statement (``column = ANY(:name)``)."""
    return bindparam(name, values, type_=ARRAY(BigInteger))


def text_array(name: str, values: Sequence[str]) -> Any:
    """One ``text[]`` parameter (``column = ANY(:name)``)."""
    return bindparam(name, values, type_=ARRAY(String))


# --- the same as driver SQL ------------------------------------------------------------------------------------
# The inbox write path runs these once per chunk: plain SQL text (cached per shape) with each array bound as one
# parameter, so no SQLAlchemy statement is built, compiled or type-processed per element, and nothing is left
# behind in reference cycles holding the chunk's arrays (see ``worker.FanoutWorker._collect_garbage``).

SQL_ARRAY_TYPES = {
    "text": "text[]",
    "bigint": "bigint[]",
    "bytes": "bytea[]",
    "float": "float8[]",
    "bool": "boolean[]",
}


def unnest_sql(name: str, columns: Sequence[tuple[str, str]], first: int = 1) -> str:
    """``unnest($1::text[], ...) AS name(a, ...)`` for (column, kind) pairs, parameters from ``$first``."""
    arrays = ", ".join(f"${i}::{SQL_ARRAY_TYPES[kind]}" for i, (_, kind) in enumerate(columns, start=first))
    return f"unnest({arrays}) AS {name}({', '.join(column for column, _ in columns)})"


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[tuple[str, str], ...], tail: str) -> str:
    names = ", ".join(f'"{column}"' for column, _ in columns)
    return f'INSERT INTO "{table}" ({names}) SELECT * FROM {unnest_sql("n", columns)}{tail}'


def arrays_of(columns: Columns) -> tuple[list[Any], ...]:
    """The parameters of a statement over ``columns``: one list per column, in order."""
    return tuple(list(values) for _, values in columns.values())


async def insert_arrays(conn: AsyncConnection, table: str, columns: Columns, tail: str = "") -> None:
    """``INSERT INTO table (columns) SELECT * FROM unnest(arrays) tail`` as driver SQL, one statement for any
    batch; ``tail`` is an ON CONFLICT clause or empty."""
    shape = tuple((column, kind) for column, (kind, _) in columns.items())
    await conn.exec_driver_sql(_insert_sql(table, shape, tail), arrays_of(columns))


# --- binary COPY ------------------------------------------------------------------------------------------------
# asyncpg encodes an array parameter element by element, and asks each element whether it is itself a sequence
# (``isinstance`` against ``collections.abc`` classes: a Python call per element); ``COPY`` in binary encodes each
# value with its column's codec and nothing else. For the inbox rows, their pending deliveries and their decisions
# (~40 values per inbox row) that is most of what the driver costs. COPY has no ON CONFLICT: tables whose rows may
# already exist are copied into a temporary table first (``STAGED_DECISIONS``), then inserted from it.


async def copy_records(
    conn: AsyncConnection,
    table: str,
    columns: Sequence[str],
    records: Sequence[tuple[Any, ...]],
    *,
    schema: str | None = None,
) -> None:
    """``COPY table (columns) FROM STDIN (FORMAT binary)`` of ``records`` on the transaction of ``conn``.

    The transaction must have run a statement already (SQLAlchemy's asyncpg adapter begins it at the first
    one); asyncpg's errors come out as SQLAlchemy's ``DBAPIError`` with the error as ``orig``, as those of any
    statement, so ``PostgresDatabase.write`` retries deadlocks and translates the rest the same way."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    assert driver.is_in_transaction(), "copy_records runs inside a begun transaction"
    try:
        await driver.copy_records_to_table(table, records=records, columns=list(columns), schema_name=schema)
    except COPY_ERRORS as error:
        # SQLAlchemy did not see this error, so it cannot tell a lost or confused connection: anything but an
        # error the server reported on a connection still open throws the connection away (as SQLAlchemy
        # does on a disconnect), instead of handing it to the next transaction in an unknown state.
        broken = not isinstance(error, asyncpg.PostgresError) or driver.is_closed() or _lost(error)
        if broken:
            await conn.invalidate()
        raise exc.DBAPIError(f"COPY {table}", None, error, connection_invalidated=broken) from error


COPY_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)


def _lost(error: BaseException) -> bool:
    """A server error that ends the session: connection exceptions (08), an operator's intervention (57)."""
    state = getattr(error, "sqlstate", None) or ""
    return state.startswith(("08", "57"))

"""Opt-in hash partitioning of the per-user tables (``TIDINGS_PG_PARTITIONS=N``), a PostgreSQL-only step of
the migration that ``postgres.PostgresDatabase.open`` runs under the namespace's migration lock.

``inbox`` and ``user_seqs`` become ``PARTITION BY HASH (app, user_id)`` tables with N partitions each
(``inbox_p0`` ... ``inbox_p{N-1}``), with the same columns, keys and constraint names as the Alembic
migrations create: their keys start with (app, user_id), which PostgreSQL requires of a partitioned table's
unique indexes. Only an empty, not yet partitioned table is recreated; anything else is left alone (see the
``postgres`` module docstring for converting a namespace that has rows).
"""

from __future__ import annotations

import structlog
from sqlalchemy import MetaData, Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateTable, DropTable

from tidings.db.schema import inbox, user_seqs

log = structlog.get_logger("tidings.store")

PER_USER_TABLES = (inbox, user_seqs)
PARTITION_KEY = "HASH (app, user_id)"


async def partition_per_user_tables(conn: AsyncConnection, partitions: int) -> None:
    """Recreates each still-empty per-user table as a hash-partitioned one, in the caller's transaction."""
    for table in PER_USER_TABLES:
        kind = await _relkind(conn, table.name)
        if kind == "p":
            continue  # partitioned already (the count it was made with stays)
        if (await conn.execute(select(1).select_from(table).limit(1))).first() is not None:
            log.warning("pg_partitions_skipped", table=table.name, reason="the table has rows already")
            continue
        await conn.execute(DropTable(table))
        await conn.execute(CreateTable(partitioned(table)))
        for remainder in range(partitions):
            await conn.execute(text(partition_ddl(table.name, partitions, remainder)))


def partitioned(table: Table) -> Table:
    """A copy of ``table`` (columns, keys, constraint names) that PostgreSQL creates partitioned."""
    copy = table.to_metadata(MetaData())
    copy.dialect_options["postgresql"]["partition_by"] = PARTITION_KEY
    return copy


def partition_ddl(name: str, modulus: int, remainder: int) -> str:
    return (
        f'CREATE TABLE "{name}_p{remainder}" PARTITION OF "{name}" '
        f"FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})"
    )


async def _relkind(conn: AsyncConnection, name: str) -> str | None:
    """'r' for a plain table, 'p' for a partitioned one; looked up through the connection's search_path."""
    query = text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:name)")
    value = (await conn.execute(query, {"name": f'"{name}"'})).scalar()
    return None if value is None else str(value)

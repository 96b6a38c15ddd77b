"""Opt-in hash partitioning of the per-user tables (``TIDINGS_PG_PARTITIONS=N``), a PostgreSQL-only step of
the migration that ``PostgresDatabase.open`` runs under the namespace's migration lock.

Why it needs no query to change. Every primary key and unique index of the per-user tables (``inbox``,
``user_seqs``) starts with (app, user_id), and every per-user query names both (``sql.queries``), so both
tables can be ``PARTITION BY HASH (app, user_id)``: PostgreSQL prunes each read to one partition, and a write's
rows and locks land in the partitions of its users.

What it does. On a fresh namespace, ``inbox`` and ``user_seqs`` become partitioned tables with N partitions
each (``inbox_p0`` ... ``inbox_p{N-1}``), with the same columns, keys and constraint names as the Alembic
migrations create. Only an empty, not yet partitioned table is recreated; anything else is left as it is
(with a warning). Set the variable on every process from the first start: a process that opened the namespace
before the tables were recreated holds prepared statements on the old ones.

Converting a namespace that has rows: create ``inbox_new (LIKE inbox INCLUDING ALL) PARTITION BY HASH (app,
user_id)`` and its ``PARTITION OF ... FOR VALUES WITH (MODULUS n, REMAINDER r)`` tables, copy the rows over
while writers are stopped (or in batches of users, then a final pass under ``LOCK TABLE``), swap the names in
one transaction; likewise ``user_seqs``. Past one server, the same columns distribute the tables (Citus:
``user_id`` as the distribution column of both, co-located, so a user's counter and rows share a node; a
batch of many users then commits across nodes).
"""

from __future__ import annotations

import structlog
from sqlalchemy import MetaData, Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

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
        copy = partitioned(table)
        await conn.execute(CreateTable(copy))
        for index in copy.indexes:  # created on the parent, PostgreSQL makes one per partition
            await conn.execute(CreateIndex(index))
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

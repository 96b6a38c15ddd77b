"""The PostgreSQL store, on the shared server (127.0.0.1:5432, database ``test``): one schema per test."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]

from tidings.backends.sql.postgres import PostgresStore, quoted
from tidings.core.clock import Clock
from tidings.ports import Store
from tidings.settings import Settings

NAME = "postgres"
URL = "postgresql://postgres@127.0.0.1:5432/test"
DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def available() -> bool:
    try:
        conn = await asyncpg.connect(DSN, timeout=2)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def open_store(settings: Settings, clock: Clock, ns: str) -> Store:
    return await PostgresStore.open(URL, settings.replace(store=URL, namespace=ns), clock)


async def cleanup(ns: str) -> None:
    conn = await asyncpg.connect(DSN, timeout=5)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(ns)} CASCADE")
    finally:
        await conn.close()

"""The embedded backends: SQLite store and event log (in the store's file), in-process bus."""

from __future__ import annotations

from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.clock import Clock
from tidings.ports import Bus, EventLog, Store
from tidings.settings import Settings

NAME = "sqlite"


async def open_store(settings: Settings, clock: Clock, ns: str) -> Store:
    return await SqliteStore.open(settings.store_url, settings, clock)


async def open_log(settings: Settings, store: Store, ns: str) -> EventLog:
    assert isinstance(store, SqliteStore)
    return store.embedded_log(settings)


async def open_bus(settings: Settings, ns: str) -> Bus:
    return MemoryBus()


async def cleanup(ns: str) -> None:
    return None  # everything lives in the test's tmp_path

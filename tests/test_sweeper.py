"""The sweeper over a real SQLite store: each app's limits (its rules over the settings' defaults), apps without
limits left alone, a pass that ends, and a stop that ends ``run``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tidings.auth import create_app_record
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import Event, InboxWrite
from tidings.core.rules import AppRules
from tidings.settings import Settings
from tidings.sweeper import Sweeper
from tidings.testing import FakeClock


async def _store(tmp_path: Path, clock: FakeClock) -> SqliteStore:
    settings = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL")
    store = await SqliteStore.open(settings.store_url, settings, clock)
    for app in ("keeps3", "default", "forever"):
        await create_app_record(store, app, [], clock.time())
    return store


async def _notify(store: SqliteStore, app: str, user: str, n: int) -> None:
    writes = [
        InboxWrite(
            app, user, Event(id=f"{app}{user}{i}", app=app, type="t", accepted_at=0.0, recipients=(user,))
        )
        for i in range(n)
    ]
    await store.inbox.write(writes)


async def _kept(store: SqliteStore, app: str, user: str) -> list[int]:
    return [n.seq for n in await store.inbox.backlog(app, user, 0, 1000)]


async def test_each_app_is_swept_by_its_own_limits_and_apps_without_any_are_left_alone(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = await _store(tmp_path, clock)
    try:
        await store.preferences.set_rules("keeps3", AppRules(retention_max_count=3))
        await store.preferences.set_rules("forever", AppRules(retention_max_age=0.0, retention_max_count=0))
        for app in ("keeps3", "default", "forever"):
            for user in ("alice", "bob"):
                await _notify(store, app, user, 8)
        settings = Settings(retention_max_count=5, retention_batch=4, retention_users=1, retention_pause=0.0)
        sweeper = Sweeper(store, settings, clock)
        assert await sweeper.sweep_all() == 2 * 5 + 2 * 3
        assert await _kept(store, "keeps3", "alice") == [6, 7, 8]
        assert await _kept(store, "default", "bob") == [4, 5, 6, 7, 8]
        assert await _kept(store, "forever", "alice") == list(range(1, 9))
        assert sweeper.batches > 4  # bounded: 4 rows and 1 user per batch at most
        assert await sweeper.sweep_all() == 0
    finally:
        await store.close()


async def test_nothing_is_swept_without_limits_and_stop_ends_run(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await _store(tmp_path, clock)
    try:
        await _notify(store, "default", "alice", 3)
        sweeper = Sweeper(store, Settings(retention_interval=3600.0), clock)
        task = asyncio.create_task(sweeper.run())
        for _ in range(200):  # bounded: until the first pass is over
            if sweeper.passes:
                break
            await asyncio.sleep(0.01)
        sweeper.stop()
        await asyncio.wait_for(task, timeout=5.0)
        assert sweeper.passes == 1
        assert sweeper.swept == 0
        assert await _kept(store, "default", "alice") == [1, 2, 3]
    finally:
        await store.close()

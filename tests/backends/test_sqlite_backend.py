"""What is particular to the embedded SQLite backend: its pragmas, locking with other processes, error
translation, group commit, cross-process reads, closing, and pruning of the event log."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from backend_support import LogHarness, appends, make_event
from sqlalchemy import Connection, text

from tidings.backends.sql.sqlite import SqliteStore
from tidings.backends.sql.sqlite.log import IDEMPOTENCY_WINDOW, SqliteEventLog
from tidings.errors import ConfigError, UnavailableError
from tidings.ports import Appended
from tidings.settings import Settings
from tidings.testing import FakeClock


def scalar(sql: str) -> object:
    def work(conn: Connection) -> object:
        return conn.execute(text(sql)).scalar()

    return work


@pytest.mark.parametrize(("level", "value"), [("FULL", 2), ("normal", 1)])
async def test_the_file_is_in_wal_mode_with_the_configured_synchronous(
    tmp_path: Path, level: str, value: int
) -> None:
    """The writer commits with the durability the operator chose, in WAL mode (readers never block it)."""
    settings = Settings(data=str(tmp_path), sqlite_synchronous=level)
    store = await SqliteStore.open(settings.store_url, settings)
    try:
        assert await store.db.write(scalar("PRAGMA journal_mode")) == "wal"
        assert await store.db.write(scalar("PRAGMA synchronous")) == value
        assert await store.db.write(scalar("PRAGMA busy_timeout")) == 5000
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "synchronous"),
    [("sqlite:///{dir}/t.db", "SOMETIMES"), ("sqlite://", "FULL"), ("sqlite:///:memory:", "FULL")],
)
async def test_bad_settings_are_config_errors(tmp_path: Path, url: str, synchronous: str) -> None:
    """An unknown synchronous level or an in-memory database is refused with a clear message."""
    settings = Settings(data=str(tmp_path), sqlite_synchronous=synchronous)
    with pytest.raises(ConfigError):
        await SqliteStore.open(url.format(dir=tmp_path), settings)


async def test_a_write_waits_for_another_process_holding_the_lock(sqlite_store: SqliteStore) -> None:
    """While another process (e.g. the CLI creating an app) writes, our write waits and then succeeds."""
    other = sqlite3.connect(sqlite_store.db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO user_seqs (app, user_id, last_seq) VALUES ('app1', 'zed', 1)")
    subscribing = asyncio.create_task(sqlite_store.topics.subscribe("app1", "t", "alice"))
    await asyncio.sleep(0.3)  # the other process holds the lock this long
    assert not subscribing.done()
    other.execute("COMMIT")
    other.close()
    assert await subscribing is True
    assert await sqlite_store.inbox.last_seq("app1", "zed") == 1


async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    """SQLite's own errors come out as ``UnavailableError``, not as a library exception."""
    (tmp_path / "tidings.db").write_bytes(b"this is not a database" * 100)
    settings = Settings(data=str(tmp_path))
    with pytest.raises(UnavailableError) as caught:
        await SqliteStore.open(settings.store_url, settings)
    assert caught.value.__cause__ is not None


async def test_a_closed_store_and_log_refuse_work(settings: Settings) -> None:
    """After close, calls fail with ``UnavailableError`` (a 503), never hang."""
    store = await SqliteStore.open(settings.store_url, settings)
    log = store.embedded_log(settings)
    await store.ping()
    await log.close()
    await store.close()
    await store.close()
    with pytest.raises(UnavailableError):
        await store.ping()
    with pytest.raises(UnavailableError):
        await log.append(appends(make_event("e1")))
    with pytest.raises(UnavailableError):
        await log.read(1, 0.1)


async def test_expired_tickets_are_cleaned_away(sqlite_store: SqliteStore, clock: FakeClock) -> None:
    """Tickets nobody redeemed do not pile up: expired ones go when another ticket is issued."""
    for i in range(5):
        await sqlite_store.apps.issue_ticket(f"{i:064d}", "app1", "alice", clock.time() + 60)
    clock.advance(61)
    await sqlite_store.apps.issue_ticket("f" * 64, "app1", "bob", clock.time() + 60)
    assert await sqlite_store.db.read(scalar("SELECT count(*) FROM stream_tickets")) == 1


async def test_concurrent_appends_share_commits(sqlite_logs: LogHarness) -> None:
    """Group commit: 200 appends arriving together take a handful of transactions, not 200."""
    log = await sqlite_logs.open()
    assert isinstance(log, SqliteEventLog)
    await asyncio.gather(*(log.append(appends(make_event(f"e{i}"))) for i in range(200)))
    assert log.flushed_items == 200
    assert log.flushes <= 5


@pytest.mark.serial  # a bound of 1 s on the wall clock
async def test_a_reader_sees_appends_made_by_another_process(sqlite_logs: LogHarness) -> None:
    """The worker of `tidings serve` picks up events another process appended to the file, by polling."""
    reader = await sqlite_logs.open()
    writer = await sqlite_logs.open()  # a second store and log on the same file: another process's view
    waiting = asyncio.create_task(reader.read(10, 5.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await writer.append(appends(make_event("e1")))
    assert [d.event.id for d in await waiting] == ["e1"]
    assert time.monotonic() - started < 1.0


async def test_close_commits_appends_already_queued(sqlite_logs: LogHarness) -> None:
    """Appends in flight when the log closes still complete, and are there after a restart."""
    log = await sqlite_logs.open()
    pending = [asyncio.create_task(log.append(appends(make_event(f"e{i}")))) for i in range(20)]
    await asyncio.sleep(0)  # the appends are queued
    await log.close()
    assert [r for [r] in await asyncio.gather(*pending)] == [Appended(f"e{i}") for i in range(20)]
    log = await sqlite_logs.restart()
    assert len(await log.read(100, 0.1)) == 20


async def test_an_event_id_is_appended_once(sqlite_logs: LogHarness) -> None:
    """Appending an event whose id is in the log already (a retry without key) appends nothing new."""
    log = await sqlite_logs.open()
    await log.append(appends(make_event("e1")))
    assert await log.append(appends(make_event("e1"), make_event("e2"), make_event("e2"))) == [
        Appended("e1", duplicate=True),
        Appended("e2"),
        Appended("e2", duplicate=True),
    ]
    assert await log.lag() == 2


async def test_prune_deletes_only_acked_old_events_and_keeps_keys_a_day(
    sqlite_logs: LogHarness, clock: FakeClock
) -> None:
    """Pruning frees acked events; keys stay a day for producer retries; unacked events always stay."""
    log = await sqlite_logs.open()
    assert isinstance(log, SqliteEventLog)
    t0 = clock.time()
    events = [make_event("plain", accepted_at=t0), make_event("keyed", key="k", accepted_at=t0)]
    events += [make_event("unacked", accepted_at=t0), make_event("newest", accepted_at=t0)]
    await log.append(appends(*events, body_hash="h"))
    got = await log.read(10, 0.1)
    await log.ack(got[:2])
    clock.advance(3600)
    assert await log.prune(older_than=clock.time()) == 1  # "plain"
    retry = await log.append(appends(make_event("again", key="k"), body_hash="h"))
    assert retry == [Appended("keyed", duplicate=True)]
    clock.advance(IDEMPOTENCY_WINDOW)
    assert await log.prune(older_than=clock.time()) == 1  # "keyed", now past the window
    log = await sqlite_logs.restart()
    assert [d.event.id for d in await log.read(10, 0.1)] == ["unacked", "newest"]


async def test_offsets_are_never_reused_after_pruning(sqlite_logs: LogHarness, clock: FakeClock) -> None:
    """With every event acked and pruned, a new event is still delivered (its offset is past the cursor)."""
    log = await sqlite_logs.open()
    assert isinstance(log, SqliteEventLog)
    await log.append(appends(*(make_event(f"e{i}") for i in range(3))))
    await log.ack(await log.read(10, 0.1))
    clock.advance(10)
    assert await log.prune(older_than=clock.time()) == 2  # the newest row stays
    log = await sqlite_logs.restart()
    await log.append(appends(make_event("later")))
    assert [d.event.id for d in await log.read(10, 0.1)] == ["later"]

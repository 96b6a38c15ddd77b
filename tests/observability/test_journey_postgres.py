"""The journey's read-only inbox query on PostgreSQL (the shared server, a schema of its own)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest

from tidings.admin.journey import inbox_rows, journey
from tidings.core.ids import new_id
from tidings.core.models import Event, InboxWrite
from tidings.ports import Store
from tidings.settings import Settings

URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    asyncpg = pytest.importorskip("asyncpg")
    from tidings.backends.sql.postgres import PostgresStore, quoted

    try:
        (await asyncpg.connect(URL, timeout=2)).terminate()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if os.environ.get("TIDINGS_TEST_REQUIRE"):
            pytest.fail(f"PostgreSQL unreachable at {URL}: {exc}; TIDINGS_TEST_REQUIRE is set")
        pytest.skip(f"PostgreSQL unreachable at {URL}")
    namespace = f"obs_{secrets.token_hex(4)}"
    opened = await PostgresStore.open(URL, Settings(store=URL, namespace=namespace))
    try:
        yield opened
    finally:
        await opened.close()
        conn = await asyncpg.connect(URL, timeout=5)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(namespace)} CASCADE")
        finally:
            await conn.close()


async def test_the_journey_reads_the_inbox_rows_of_an_event_from_postgresql(store: Store) -> None:
    """Two recipients' rows of one event are found by its id, and by app and user too."""
    event = Event(id=new_id(1_790_000_000.0), app="acme", type="t", accepted_at=1_790_000_000.0)
    other = Event(id=new_id(1_790_000_001.0), app="acme", type="t", accepted_at=1_790_000_001.0)
    writes = [InboxWrite("acme", user, e) for e in (event, other) for user in ("alice", "bob")]
    await store.inbox.write(writes)

    rows = await inbox_rows(store, event.id)
    assert rows is not None
    assert [(row.user, row.seq) for row in rows] == [("alice", 1), ("bob", 1)]
    alice = await inbox_rows(store, event.id, "acme", "alice")
    assert [row.user for row in alice or []] == ["alice"]
    found = await journey(store, other.id)
    assert found is not None
    assert found["store_searched"] is True
    assert [(row["user"], row["seq"]) for row in found["inbox"]] == [("alice", 2), ("bob", 2)]

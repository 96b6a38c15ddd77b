"""The fan-out worker under backend failures: a failed batch is run again, never dropped while leased."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tidings import worker as worker_module
from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import Event, InboxWrite, StoredNotification
from tidings.errors import InvalidInputError, UnavailableError
from tidings.gateway.hub import Hub
from tidings.ports import Append
from tidings.runtime import Runtime
from tidings.settings import Settings
from tidings.worker import FanoutWorker


class FlakyInbox:
    """Wraps the real inbox: the first ``failures`` writes raise UnavailableError; writes for ``poison`` always
    raise InvalidInputError (as PostgreSQL does for a value it cannot store)."""

    def __init__(self, inner: object, failures: int = 0, poison: str | None = None) -> None:
        self._inner = inner
        self.failures = failures
        self.poison = poison
        self.calls = 0

    async def write(self, writes: Sequence[InboxWrite]) -> list[StoredNotification]:
        self.calls += 1
        if self.calls <= self.failures:
            raise UnavailableError("database down")
        if any(w.event.id == self.poison for w in writes):
            raise InvalidInputError("value the store cannot hold")
        return await self._inner.write(writes)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


@pytest.fixture
async def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runtime]:
    monkeypatch.setattr(worker_module.random, "random", lambda: 0.0)  # no backoff waits in tests
    settings = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL")
    store = await SqliteStore.open(settings.store_url, settings)
    bus = MemoryBus()
    runtime = Runtime(settings=settings, store=store, log=store.embedded_log(settings), bus=bus, hub=Hub(bus))
    yield runtime
    await runtime.log.close()
    await store.close()


async def _append(runtime: Runtime, *ids: str) -> None:
    events = [
        Event(id=i, app="a", type="t", accepted_at=runtime.clock.time(), recipients=("u",)) for i in ids
    ]
    await runtime.log.append([Append(e) for e in events])


async def _run_until_drained(runtime: Runtime, worker: FanoutWorker) -> None:
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            while await runtime.log.lag():  # noqa: ASYNC110 - polling the log is the point
                await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await task


async def test_a_batch_that_failed_is_run_again_and_acked(runtime: Runtime) -> None:
    """Two failed inbox writes later, every event is in the inbox once and acked."""
    flaky = FlakyInbox(runtime.store.inbox, failures=2)
    runtime.store.inbox = flaky  # type: ignore[misc]
    await _append(runtime, "E1", "E2", "E3")
    await _run_until_drained(runtime, FanoutWorker(runtime))
    rows = await flaky.backlog("a", "u", 0, 10)
    assert [r.event_id for r in rows] == ["E1", "E2", "E3"]
    assert flaky.calls == 3


async def test_a_poison_event_is_dropped_alone_after_retries(runtime: Runtime) -> None:
    """An event no store accepts is set aside after a few tries; the events around it are delivered."""
    flaky = FlakyInbox(runtime.store.inbox, poison="E2")
    runtime.store.inbox = flaky  # type: ignore[misc]
    await _append(runtime, "E1", "E2", "E3")
    await _run_until_drained(runtime, FanoutWorker(runtime))
    rows = await flaky.backlog("a", "u", 0, 10)
    assert [r.event_id for r in rows] == ["E1", "E3"]
    dead, events = await runtime.store.outbound.dead("a", 10)
    assert dead == []
    assert [e.event_id for e in events] == ["E2"]  # kept in the dead-letter store, with its error
    assert events[0].error.startswith("invalid_input: ")

"""Fixtures of the backend contract suites: each port's fixture is parametrized over its implementations.

To run the suites against a new backend, add its name to the fixture's ``params`` and a branch that opens it
(PostgreSQL, NATS, Redis and RabbitMQ come here later, each started per test session on a free port).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backend_support import LogHarness

from tidings.backends.memory import MemoryBus
from tidings.backends.sqlite import SqliteStore
from tidings.ports import Bus, Store
from tidings.settings import Settings
from tidings.testing import FakeClock

STORES = ["sqlite"]
LOGS = ["sqlite"]
BUSES = ["memory"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # NORMAL: commits skip the fsync that only a power cut could tell apart (a killed process loses nothing
    # committed in WAL mode either way), which keeps these suites fast; the crash test uses the default FULL.
    return Settings(data=str(tmp_path), sqlite_synchronous="NORMAL")


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, settings: Settings, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await SqliteStore.open(settings.store_url, settings, clock)
    yield opened
    await opened.close()


@pytest.fixture(params=LOGS)
async def logs(
    request: pytest.FixtureRequest, settings: Settings, clock: FakeClock
) -> AsyncIterator[LogHarness]:
    harness = LogHarness(request.param, settings, clock)
    yield harness
    await harness.close()


@pytest.fixture
async def sqlite_store(settings: Settings, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    """For the tests of what is particular to SQLite (the contract suites use ``store``)."""
    opened = await SqliteStore.open(settings.store_url, settings, clock)
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_logs(settings: Settings, clock: FakeClock) -> AsyncIterator[LogHarness]:
    harness = LogHarness("sqlite", settings, clock)
    yield harness
    await harness.close()


@pytest.fixture(params=BUSES)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    opened = MemoryBus()
    yield opened
    await opened.close()

"""Fixtures of the backend contract suites: each port's fixture is parametrized over its implementations,
discovered from the ``provide_<name>.py`` modules (see providers.py). A new backend is done when it passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backend_support import LogHarness
from providers import BUSES, LOGS, PROVIDERS, STORES, namespace, require

from tidings.backends.sql.sqlite import SqliteStore
from tidings.ports import Bus, Store
from tidings.settings import Settings
from tidings.testing import FakeClock


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
    provider = PROVIDERS[request.param]
    await require(provider)
    ns = namespace()
    opened = await provider.open_store(settings, clock, ns)
    yield opened
    await opened.close()
    await provider.cleanup(ns)


# NATS's log runs in make test's serial phase: its partition leases (1 s in these suites) lapse when other
# workers stall this process's loop, and a read just after a restart then finds nothing (seen with 3 workers).
LOG_PARAMS = [pytest.param(name, marks=pytest.mark.serial) if name == "nats" else name for name in LOGS]


@pytest.fixture(params=LOG_PARAMS)
async def logs(
    request: pytest.FixtureRequest, settings: Settings, clock: FakeClock
) -> AsyncIterator[LogHarness]:
    provider = PROVIDERS[request.param]
    await require(provider)
    harness = LogHarness(provider, settings, clock, namespace())
    yield harness
    await harness.close()
    await provider.cleanup(harness.ns)


@pytest.fixture
async def sqlite_store(settings: Settings, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    """For the tests of what is particular to SQLite (the contract suites use ``store``)."""
    opened = await SqliteStore.open(settings.store_url, settings, clock)
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_logs(settings: Settings, clock: FakeClock) -> AsyncIterator[LogHarness]:
    harness = LogHarness(PROVIDERS["sqlite"], settings, clock, namespace())
    yield harness
    await harness.close()


@pytest.fixture(params=BUSES)
async def bus(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Bus]:
    provider = PROVIDERS[request.param]
    await require(provider)
    ns = namespace()
    opened = await provider.open_bus(settings, ns)
    yield opened
    await opened.close()
    await provider.cleanup(ns)

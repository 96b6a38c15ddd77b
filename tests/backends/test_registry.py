"""Backends are chosen by URL; a wrong or unavailable one is a clear ``ConfigError``, never an ImportError."""

from __future__ import annotations

import pytest

from tidings import backends
from tidings.backends import Backend, open_bus, open_log, open_store, scheme_of
from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteEventLog, SqliteStore
from tidings.errors import ConfigError
from tidings.settings import Settings


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("sqlite:////tmp/x.db", "sqlite"),
        ("postgresql+asyncpg://u@h/db", "postgresql"),
        ("postgres://u@h/db", "postgresql"),
        ("rediss://h:6380", "redis"),
        ("amqps://h", "amqp"),
        ("NATS://h:4222", "nats"),
        ("memory://", "memory"),
    ],
)
def test_scheme_of_a_url(url: str, scheme: str) -> None:
    """Driver suffixes and TLS variants select the same backend."""
    assert scheme_of(url) == scheme


async def test_the_embedded_backends_open_by_url(settings: Settings) -> None:
    """``sqlite:///`` store, ``memory://`` broker: the log lives in the store's file, the bus in-process."""
    store = await open_store(settings.store_url, settings)
    log = await open_log("memory://", settings, store)
    bus = await open_bus("memory://", settings)
    try:
        assert isinstance(store, SqliteStore)
        assert isinstance(log, SqliteEventLog)
        assert isinstance(bus, MemoryBus)
        await store.ping()
    finally:
        await bus.close()
        await log.close()
        await store.close()


@pytest.mark.parametrize("url", ["mysql://h/db", "no-scheme", "pulsar://h"])
async def test_an_unknown_scheme_lists_the_known_ones(settings: Settings, url: str) -> None:
    """A typo in a URL says which schemes exist."""
    with pytest.raises(ConfigError, match=r"sqlite://|not a backend URL"):
        await open_store(url, settings)
    with pytest.raises(ConfigError, match=r"memory://.*nats://|not a backend URL"):
        await open_bus(url, settings)


async def test_a_backend_not_written_yet_says_so(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered scheme whose module does not exist yet is reported as not available."""
    monkeypatch.setitem(
        backends.STORES, "future", Backend("tidings.backends.future_db:FutureStore", "future")
    )
    with pytest.raises(ConfigError, match="not available yet"):
        await open_store("future://h", settings)


async def test_a_missing_library_names_the_extra(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend whose library is not installed tells the user which extra to install."""
    monkeypatch.setitem(backends.BUSES, "lib", Backend("no_such_library_xyz.client:Bus", "lib"))
    with pytest.raises(ConfigError, match=r"pip install 'tidings\[lib\]'"):
        await open_bus("lib://h", settings)

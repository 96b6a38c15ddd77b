"""Backends chosen by URL: a scheme -> ``"module:Class"`` registry, imported only when a URL asks for it.

=================  ========================================  ==============================================
URL                store (``--store``)                        broker (``--broker``): event log and live bus
=================  ========================================  ==============================================
``sqlite:///p``    ``SqliteStore`` (embedded)                 -
``postgresql://``  ``PostgresStore`` (extra ``postgres``)     -
``memory://``      -                                          the log in the store's own database (SQLite:
                                                              ``SqliteEventLog``); an in-process bus
``nats://``        -                                          ``NatsEventLog``, ``NatsBus`` (``nats``)
``redis://``       -                                          ``RedisEventLog``, ``RedisBus`` (``redis``)
``amqp://``        -                                          ``RabbitEventLog``, ``RabbitBus`` (``rabbitmq``)
``kafka://``       -                                          ``KafkaEventLog``, ``KafkaBus`` (``kafka``)
=================  ========================================  ==============================================

A class named here has an async classmethod ``open``: ``(url, settings, clock)`` for stores, ``(url, settings,
store)`` for logs, ``(url, settings)`` for buses. A backend whose module is not written yet says so; one whose
library is not installed names the extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol, cast

from tidings.core.clock import Clock
from tidings.errors import ConfigError
from tidings.ports import Bus, EventLog, Store
from tidings.settings import Settings

__all__ = ["EmbeddedLogStore", "open_bus", "open_log", "open_store", "scheme_of"]


@dataclass(frozen=True, slots=True)
class Backend:
    target: str  # "module:Class"
    extra: str | None = None  # the ``pip install 'tidings[extra]'`` that brings its libraries


EMBEDDED = "memory"  # a broker URL meaning: the log in the store's database, the bus in this process

STORES = {
    "sqlite": Backend("tidings.backends.sql.sqlite:SqliteStore"),
    "postgresql": Backend("tidings.backends.sql.postgres:PostgresStore", "postgres"),
}
LOGS = {
    "nats": Backend("tidings.backends.nats.log:NatsEventLog", "nats"),
    "redis": Backend("tidings.backends.redis.log:RedisEventLog", "redis"),
    "amqp": Backend("tidings.backends.rabbitmq.log:RabbitEventLog", "rabbitmq"),
    "kafka": Backend("tidings.backends.kafka.log:KafkaEventLog", "kafka"),
}
BUSES = {
    EMBEDDED: Backend("tidings.backends.memory:MemoryBus"),
    "nats": Backend("tidings.backends.nats.bus:NatsBus", "nats"),
    "redis": Backend("tidings.backends.redis.bus:RedisBus", "redis"),
    "amqp": Backend("tidings.backends.rabbitmq.bus:RabbitBus", "rabbitmq"),
    "kafka": Backend("tidings.backends.kafka.bus:KafkaBus", "kafka"),
}
ALIASES = {"postgres": "postgresql", "rediss": "redis", "amqps": "amqp", "tls": "nats", "kafkas": "kafka"}


class EmbeddedLogStore(Protocol):
    """A store that can keep the event log in its own database (what ``memory://`` as broker means)."""

    def embedded_log(self, settings: Settings) -> EventLog: ...


def scheme_of(url: str) -> str:
    """``postgresql+asyncpg://...`` -> ``postgresql``; aliases (``rediss``, ``amqps``...) folded in."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigError(f"not a backend URL (scheme://...): {url!r}")
    base = scheme.split("+", 1)[0].lower()
    return ALIASES.get(base, base)


async def open_store(url: str, settings: Settings, clock: Clock | None = None) -> Store:
    """Opens the store at ``url`` (migrating its schema first)."""
    cls = _load("store", url, STORES)
    return cast(Store, await cls.open(url, settings, clock))


async def open_log(url: str, settings: Settings, store: Store) -> EventLog:
    """Opens the event log of broker ``url``; ``memory://`` puts it in ``store``'s own database."""
    if scheme_of(url) == EMBEDDED:
        embedded = getattr(store, "embedded_log", None)
        if embedded is None:
            raise ConfigError(
                f"{type(store).__name__} cannot hold the event log: pick a broker ({_known(LOGS)})"
            )
        return cast(EmbeddedLogStore, store).embedded_log(settings)
    cls = _load("event log", url, LOGS)
    return cast(EventLog, await cls.open(url, settings, store))


async def open_bus(url: str, settings: Settings) -> Bus:
    """Opens the live bus of broker ``url`` (``memory://``: within this process only)."""
    cls = _load("live bus", url, BUSES)
    return cast(Bus, await cls.open(url, settings))


def _known(registry: dict[str, Backend]) -> str:
    return ", ".join(f"{scheme}://" for scheme in sorted(registry))


def _load(kind: str, url: str, registry: dict[str, Backend]) -> Any:
    scheme = scheme_of(url)
    backend = registry.get(scheme)
    if backend is None:
        known = _known(registry) + (", memory://" if registry is LOGS else "")
        raise ConfigError(f"unknown {kind} URL scheme {scheme!r}; known: {known}")
    module_name, _, attr = backend.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"the {scheme}:// {kind} is not available yet") from exc
        raise ConfigError(
            f"the {scheme}:// {kind} needs {exc.name}: pip install 'tidings[{backend.extra}]'"
        ) from exc
    return getattr(module, attr)

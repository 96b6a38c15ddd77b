"""One bus subscription per connected user, shared by all of that user's connections in this process.

The hub is the bus's only subscriber (``ports.Bus``): it holds at most one subscription per (app, user) and
fans each message out to that user's connections here (a listener that raises is logged; the others still get
the message). A gateway subscribes only for users connected to it: the subscription is made on the first
connection of a user and closed with the last one. An entry leaves ``_entries`` in the same step as its
subscription's ``close`` starts, and a bus frees the (app, user) before that close first awaits, so a user who
reconnects at once subscribes anew without being refused as a second subscription.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from tidings.core.models import LiveMessage
from tidings.ports import Bus, LiveHandler, Subscription

log = structlog.get_logger("tidings.gateway.hub")

Detach = Callable[[], Awaitable[None]]


class Endable(Protocol):
    def end(self, reason: Any) -> None: ...


@dataclass(eq=False)
class _Entry:
    """One (app, user): its bus subscription (once ``ready``) and the listeners of its connections here."""

    ready: asyncio.Future[Subscription]
    listeners: list[LiveHandler] = field(default_factory=list)

    def dispatch(self, message: LiveMessage) -> None:
        listeners = self.listeners
        if len(listeners) == 1:  # the common case (one connection of this user here): no copy
            try:
                listeners[0](message)
            except Exception:
                log.exception("listener_failed")
            return
        for listener in tuple(listeners):
            try:
                listener(message)
            except Exception:  # one broken connection must not starve the others
                log.exception("listener_failed")


class Hub:
    """The gateway's live routing: (app, user) -> one bus subscription -> that user's connections here."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._streams: set[Endable] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, stream: Endable) -> None:
        self._streams.add(stream)

    def unregister(self, stream: Endable) -> None:
        self._streams.discard(stream)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def drain(self, reason: Any) -> None:
        """Ask every open stream to end (graceful shutdown): clients are told to resume elsewhere."""
        for stream in tuple(self._streams):
            stream.end(reason)

    async def attach(self, app: str, user: str, listener: LiveHandler) -> Detach:
        """Route the user's live messages to ``listener`` from the moment this returns."""
        key = (app, user)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(ready=asyncio.get_running_loop().create_future())
            self._entries[key] = entry
            entry.listeners.append(listener)
            await self._subscribe(key, entry)
        else:
            entry.listeners.append(listener)
            await asyncio.shield(entry.ready)

        async def detach() -> None:
            await self._detach(key, entry, listener)

        return detach

    async def _subscribe(self, key: tuple[str, str], entry: _Entry) -> None:
        try:
            sub = await self._bus.subscribe(key[0], key[1], entry.dispatch)
        except BaseException as exc:
            self._entries.pop(key, None)
            entry.ready.set_exception(exc)
            entry.ready.exception()  # mark retrieved: the waiters re-raise it themselves
            raise
        entry.ready.set_result(sub)

    async def _detach(self, key: tuple[str, str], entry: _Entry, listener: LiveHandler) -> None:
        if listener in entry.listeners:
            entry.listeners.remove(listener)
        if entry.listeners or self._entries.get(key) is not entry:
            return
        del self._entries[key]
        if entry.ready.done() and not entry.ready.exception():
            await entry.ready.result().close()

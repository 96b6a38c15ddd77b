"""The inbox operations both engines share as synchronous SQL (``backends.sql.lifecycle``): retraction,
per-user states, counts, read/seen marks, and the actor scrub. Each is one write (or read) transaction run
by the engine's runner: SQLite's writer thread, or PostgreSQL's ``AsyncConnection.run_sync``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Literal

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends.sql import lifecycle
from tidings.backends.sql.lifecycle import Action, Counts
from tidings.core import aggregation
from tidings.core.clock import Clock
from tidings.core.models import StoredNotification

SyncRunner = Callable[[Callable[[Connection], Any]], Awaitable[Any]]


def on_async(runner: Callable[[Callable[[AsyncConnection], Awaitable[Any]]], Awaitable[Any]]) -> SyncRunner:
    """A runner of synchronous units of work on top of an async one (PostgreSQL)."""

    def run(work: Callable[[Connection], Any]) -> Awaitable[Any]:
        async def on(conn: AsyncConnection) -> Any:
            return await conn.run_sync(work)

        return runner(on)

    return run


class InboxLifecycle:
    """The part of ``ports.Inbox`` after the write: see ``ports.Inbox`` for the contract."""

    def __init__(self, write: SyncRunner, read: SyncRunner, clock: Clock) -> None:
        self._write_sync = write
        self._read_sync = read
        self._clock = clock

    async def retract(
        self, app: str, *, event_ids: Sequence[str], cancel_keys: Sequence[str]
    ) -> list[StoredNotification]:
        if not event_ids and not cancel_keys:
            return []
        at = self._clock.time()
        work = partial(
            lifecycle.retract,
            app=app,
            event_ids=event_ids,
            keys=cancel_keys,
            at=at,
            new_id=aggregation.id_source(at),
        )
        result: list[StoredNotification] = await self._write_sync(work)
        return result

    async def change(
        self, app: str, user: str, action: Action, seqs: Sequence[int]
    ) -> tuple[list[int], Counts]:
        if not seqs:
            return [], await self.tallies(app, user)
        work = partial(lifecycle.change, app=app, user=user, action=action, seqs=seqs, at=self._clock.time())
        result: tuple[list[int], Counts] = await self._write_sync(work)
        return result

    async def tallies(self, app: str, user: str) -> Counts:
        result: Counts = await self._read_sync(partial(lifecycle.counts, app=app, user=user))
        return result

    async def counts(self, app: str, user: str) -> tuple[int, int]:
        unread, unseen, _ = await self.tallies(app, user)
        return unread, unseen

    async def scrub_actor(self, app: str, actor: str) -> list[StoredNotification]:
        at = self._clock.time()
        work = partial(lifecycle.scrub_actor, app=app, actor=actor, at=at, new_id=aggregation.id_source(at))
        result: list[StoredNotification] = await self._write_sync(work)
        return result

    async def mark(
        self,
        app: str,
        user: str,
        field: Literal["read", "seen"],
        *,
        seqs: Sequence[int] | None,
        up_to: int | None,
        at: float,
    ) -> int:
        if not seqs and up_to is None:
            return 0
        work = partial(lifecycle.mark, app=app, user=user, field=field, seqs=seqs, up_to=up_to, at=at)
        result: int = await self._write_sync(work)
        return result

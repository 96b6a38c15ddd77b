"""The retention sweep: every ``retention_interval`` seconds, a pass over every app whose limits are set
(``core.retention``: its rules, else the settings' defaults), in bounded batches.

Each batch is one short transaction of the store (``ports.Retention.sweep``: at most ``retention_users`` users and
``retention_batch`` deleted rows), and the sweeper pauses ``retention_pause`` seconds between batches, so a
fan-out writing the same inboxes waits at most one batch and gets the database most of the time. One sweeper
runs in each process with the worker role (``tidings serve``, ``tidings worker``); several at once are safe
(the store's sweep is idempotent), only redundant. A failed batch (the store unavailable) ends the pass; the
next pass starts over.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from tidings.core.clock import Clock
from tidings.core.retention import Limits, limits_of, users_to_read
from tidings.errors import TidingsError
from tidings.ports import Store
from tidings.settings import Settings

log = structlog.get_logger("tidings.sweeper")


class Sweeper:
    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._stop = asyncio.Event()
        self.swept = 0  # rows deleted since start (for tests and the log)
        self.passes = 0
        self.batches = 0
        self.longest_batch = 0.0  # seconds of the longest batch (its read and its write transaction)

    def stop(self) -> None:
        """Finish the batch in hand, then return from ``run``."""
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = await self.sweep_all()
                if rows:
                    log.info("retention_swept", rows=rows)
            except TidingsError as exc:
                log.warning("retention_failed", error=exc.code)
            self.passes += 1
            await self._pause(self._settings.retention_interval)

    async def sweep_all(self) -> int:
        """One pass over every app with limits; returns the rows deleted."""
        total = 0
        s = self._settings
        for app in await self._store.apps.all():
            if self._stop.is_set():
                break
            rules = await self._store.preferences.rules(app.name)
            limits = limits_of(rules, s.retention_max_age, s.retention_max_count)
            if limits.active:
                total += await self.sweep_app(app.name, limits)
        return total

    async def sweep_app(self, app: str, limits: Limits) -> int:
        """Batches over the app's users until the pass is done (or the sweeper is stopped)."""
        s = self._settings
        total, after, users = 0, None, s.retention_users
        while not self._stop.is_set():  # bounded: each batch moves on through the app's users or deletes rows
            started = self._clock.monotonic()
            swept = await self._store.retention.sweep(
                app, after, limits, users=users, budget=s.retention_batch
            )
            self.batches += 1
            self.longest_batch = max(self.longest_batch, self._clock.monotonic() - started)
            users = users_to_read(users, swept, s.retention_batch, s.retention_users)
            total += swept.rows
            self.swept += swept.rows
            if swept.done:
                break
            after = swept.next_after
            await self._pause(s.retention_pause)
        return total

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

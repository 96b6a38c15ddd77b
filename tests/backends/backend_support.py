"""Helpers shared by the backend contract suites (fixtures are in conftest.py)."""

from __future__ import annotations

from types import ModuleType

from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import Event, InboxWrite, Priority
from tidings.ports import Append, EventLog, Store
from tidings.settings import Settings
from tidings.testing import FakeClock


def make_event(
    event_id: str,
    *,
    app: str = "app1",
    priority: Priority = "normal",
    key: str | None = None,
    recipients: tuple[str, ...] = ("alice",),
    accepted_at: float = 1_790_000_000.0,
) -> Event:
    return Event(
        id=event_id,
        app=app,
        type="post.liked",
        accepted_at=accepted_at,
        recipients=recipients,
        actor={"id": "bob", "name": "Bob"},
        object={"id": "post:42"},
        data={"text": f"event {event_id}"},
        priority=priority,
        idempotency_key=key,
    )


def appends(*events: Event, body_hash: str | None = None) -> list[Append]:
    return [Append(event, body_hash) for event in events]


def inbox_write(event_id: str, user: str = "alice", app: str = "app1") -> InboxWrite:
    return InboxWrite(app, user, make_event(event_id, app=app, recipients=(user,)))


class LogHarness:
    """Opens an event log the way a process does, and restarts it (close everything, open again) on demand.

    ``restart`` is what a test uses to prove what survives a process exit: the log and everything it sits on
    are closed, and a fresh instance opened on the same data.
    """

    def __init__(self, provider: ModuleType, settings: Settings, clock: FakeClock, ns: str) -> None:
        self.kind = provider.NAME
        self.provider = provider
        self.settings = settings
        self.clock = clock
        self.ns = ns
        self._opened: list[tuple[EventLog, Store]] = []

    async def open(self) -> EventLog:
        # Broker logs keep idempotency keys in a store: the embedded one serves every provider here.
        store = await SqliteStore.open(self.settings.store_url, self.settings, self.clock)
        log = await self.provider.open_log(self.settings, store, self.ns)
        self._opened.append((log, store))
        return log

    async def restart(self) -> EventLog:
        await self.close()
        return await self.open()

    async def close(self) -> None:
        while self._opened:
            log, store = self._opened.pop()
            await log.close()
            await store.close()

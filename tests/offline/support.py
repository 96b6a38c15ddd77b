"""What the sender tests share: a SQLite store on a fake clock, notifications decided by the real rules."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import Event, InboxWrite, Priority
from tidings.core.rules import NO_PREFERENCES, AppRules, UserPreferences, decide
from tidings.ports import Store
from tidings.sender import Sender
from tidings.settings import Settings
from tidings.testing import FakeClock

APP = "app1"
_ids = itertools.count(1)


def settings_for(tmp: Path, **changes: object) -> Settings:
    base = Settings(
        data=str(tmp),
        sqlite_synchronous="NORMAL",
        egress_allow="127.0.0.1/32",
        sender_retry_base=1.0,
        sender_retry_cap=10.0,
        webhook_retry_schedule="",
    )
    return base.replace(**changes)


@asynccontextmanager
async def opened(settings: Settings, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(settings.store_url, settings, clock)
    try:
        yield store
    finally:
        await store.close()


async def notify(
    store: Store,
    clock: FakeClock,
    user: str = "alice",
    *,
    kind: str = "comment",
    priority: Priority = "normal",
    prefs: UserPreferences = NO_PREFERENCES,
    rules: AppRules | None = None,
) -> str:
    """One event for ``user``, decided by ``core.rules.decide`` and written like the fan-out writes it."""
    rules = rules or await store.preferences.rules(APP) or AppRules()
    event_id = f"e{next(_ids)}"
    event = Event(
        id=event_id,
        app=APP,
        type=kind,
        accepted_at=clock.time(),
        recipients=(user,),
        actor={"id": "bob", "name": "Bob"},
        object={"id": "post:1"},
        data={"title": "Bob commented", "body": "Nice!"},
        priority=priority,
    )
    verdict = decide(event, rules, prefs, clock.time())
    assert verdict.suppressed is None
    await store.inbox.write([InboxWrite(APP, user, event, 0.0, 3, verdict.channels, verdict.in_app_reason)])
    return event_id


async def statuses(store: Store, event_id: str) -> list[tuple[str, str]]:
    return [(r.target, r.status) for r in await store.outbound.for_event(APP, event_id, 100)]


def sender(store: Store, settings: Settings, clock: FakeClock) -> Sender:
    return Sender(store, settings, clock=clock, rand=lambda: 0.5)

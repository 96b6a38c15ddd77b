"""``ports.Outbound`` on either SQL engine: the units of work of ``targets`` and ``ledger`` run by an engine.

The SQL is shared (synchronous SQLAlchemy Core on a ``Connection``); each engine supplies how a unit runs:
SQLite on its writer thread (writes) or a reader thread (reads), PostgreSQL in a pooled transaction through
``AsyncConnection.run_sync`` (see ``sqlite/`` and ``postgres/``). Every method is one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection

from tidings.backends.sql import ledger, targets
from tidings.core.clock import Clock
from tidings.core.delivery import (
    Backlog,
    Claimed,
    DeadEvent,
    DeliveryRecord,
    Device,
    Finished,
    Profile,
    PushSubscription,
    WebhookEndpoint,
)
from tidings.db.schema import devices, push_subscriptions, webhook_endpoints

T = TypeVar("T")
Runner = Callable[[Callable[[Connection], Any]], Awaitable[Any]]


class SqlOutbound:
    """``ports.Outbound`` over a ``write`` and a ``read`` runner of synchronous units of work."""

    def __init__(self, write: Runner, read: Runner, clock: Clock) -> None:
        self._write = write
        self._read = read
        self._clock = clock

    async def set_profile(self, profile: Profile) -> None:
        await self._write(partial(targets.set_profile, p=profile, now=self._clock.time()))

    async def profile(self, app: str, user: str) -> Profile | None:
        result: Profile | None = await self._read(partial(targets.get_profile, app=app, user=user))
        return result

    async def add_subscription(self, sub: PushSubscription) -> PushSubscription:
        result: PushSubscription = await self._write(partial(targets.add_subscription, s=sub))
        return result

    async def subscriptions(self, app: str, user: str) -> list[PushSubscription]:
        result: list[PushSubscription] = await self._read(
            partial(targets.list_subscriptions, app=app, user=user)
        )
        return result

    async def remove_subscription(self, app: str, user: str, sub_id: str) -> bool:
        work = partial(targets.remove_owned, table=push_subscriptions, app=app, user=user, row_id=sub_id)
        return bool(await self._write(work))

    async def add_device(self, device: Device) -> Device:
        result: Device = await self._write(partial(targets.add_device, d=device))
        return result

    async def devices(self, app: str, user: str) -> list[Device]:
        result: list[Device] = await self._read(partial(targets.list_devices, app=app, user=user))
        return result

    async def remove_device(self, app: str, user: str, device_id: str) -> bool:
        work = partial(targets.remove_owned, table=devices, app=app, user=user, row_id=device_id)
        return bool(await self._write(work))

    async def add_webhook(self, hook: WebhookEndpoint) -> None:
        await self._write(partial(targets.add_webhook, h=hook))

    async def webhooks(self, app: str) -> list[WebhookEndpoint]:
        result: list[WebhookEndpoint] = await self._read(partial(targets.list_webhooks, app=app))
        return result

    async def disabled_webhooks(self, limit: int) -> list[WebhookEndpoint]:
        result: list[WebhookEndpoint] = await self._read(partial(targets.disabled_webhooks, limit=limit))
        return result

    async def remove_webhook(self, app: str, hook_id: str) -> bool:
        work = partial(targets.remove_owned, table=webhook_endpoints, app=app, user=None, row_id=hook_id)
        return bool(await self._write(work))

    async def rotate_secret(
        self, app: str, hook_id: str, secret: str, overlap_until: float
    ) -> WebhookEndpoint | None:
        work = partial(
            targets.rotate_secret, app=app, hook_id=hook_id, secret=secret, overlap_until=overlap_until
        )
        result: WebhookEndpoint | None = await self._write(work)
        return result

    async def vapid(self, app: str, make: Callable[[], tuple[str, str]], now: float) -> tuple[str, str]:
        result: tuple[str, str] = await self._write(partial(targets.vapid, app=app, make=make, now=now))
        return result

    async def targets(self, rows: Sequence[Claimed]) -> dict[tuple[str, str, str], targets.Target]:
        if not rows:
            return {}
        result: dict[tuple[str, str, str], targets.Target] = await self._read(
            partial(targets.resolve, rows=rows)
        )
        return result

    async def claim(self, owner: str, now: float, lease: float, limit: int) -> list[Claimed]:
        if not await self._read(partial(ledger.anything_due, now=now)):
            return []  # an idle poll stays a read: no write lock (SQLite's single writer is the inbox's too)
        work = partial(ledger.claim, owner=owner, now=now, lease=lease, limit=limit)
        result: list[Claimed] = await self._write(work)
        return result

    async def finish(self, owner: str, results: Sequence[Finished], now: float) -> int:
        if not results:
            return 0
        return int(await self._write(partial(ledger.finish, owner=owner, results=results, now=now)))

    async def for_event(self, app: str, event_id: str, limit: int) -> list[DeliveryRecord]:
        result: list[DeliveryRecord] = await self._read(
            partial(ledger.for_event, app=app, event_id=event_id, limit=limit)
        )
        return result

    async def dead(self, app: str | None, limit: int) -> tuple[list[DeliveryRecord], list[DeadEvent]]:
        result: tuple[list[DeliveryRecord], list[DeadEvent]] = await self._read(
            partial(ledger.dead, app=app, limit=limit)
        )
        return result

    async def retry_dead(self, ids: Sequence[int] | None, now: float) -> int:
        return int(await self._write(partial(ledger.retry_dead, ids=ids, now=now)))

    async def record_dead_event(self, app: str, event_id: str, error: str, now: float) -> None:
        await self._write(partial(ledger.record_dead_event, app=app, event_id=event_id, error=error, now=now))

    async def depth(self, now: float) -> Backlog:
        result: Backlog = await self._read(partial(ledger.depth, now=now))
        return result

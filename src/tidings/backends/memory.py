"""The in-process live bus (``memory://``), and ``LossyBus``, a test wrapper that misbehaves on purpose.

``MemoryBus`` is the reference ``ports.Bus``: ``publish`` calls the handler of the message's (app, user), the one
subscription it may have here (``ports.Bus``: the hub fans out to a user's connections), synchronously. A
handler that raises is logged and skipped; the next message goes out as usual. It never loses a message on its
own; the gateway's gap-fill is proven against ``LossyBus`` instead.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import structlog

from tidings.core.models import LiveMessage
from tidings.errors import ConflictError, UnavailableError
from tidings.ports import Bus, LiveHandler, Subscription
from tidings.settings import Settings

log = structlog.get_logger("tidings.bus")

UserKey = tuple[str, str]


class MemorySubscription:
    """The subscription of one (app, user); ``close`` is idempotent."""

    def __init__(self, bus: MemoryBus, key: UserKey, handler: LiveHandler) -> None:
        self._bus = bus
        self.key = key
        self.handler = handler

    async def close(self) -> None:
        self._bus.remove(self)


class MemoryBus:
    """``ports.Bus`` within one process: (app, user) -> its one subscription."""

    def __init__(self) -> None:
        self._subscriptions: dict[UserKey, MemorySubscription] = {}
        self._closed = False

    @classmethod
    async def open(cls, url: str, settings: Settings) -> MemoryBus:
        return cls()

    async def publish(self, messages: Sequence[LiveMessage]) -> None:
        self._check_open()
        subscriptions = self._subscriptions
        for message in messages:
            subscription = subscriptions.get((message.app, message.user))
            if subscription is not None:
                self._deliver(subscription, message)

    async def subscribe(self, app: str, user: str, handler: LiveHandler) -> Subscription:
        """``ConflictError`` while (app, user) has an open subscription here (see ``ports.Bus``)."""
        self._check_open()
        key = (app, user)
        if key in self._subscriptions:
            raise ConflictError("this (app, user) is subscribed already on this bus")
        subscription = self._subscriptions[key] = MemorySubscription(self, key, handler)
        return subscription

    def remove(self, subscription: MemorySubscription) -> None:
        if self._subscriptions.get(subscription.key) is subscription:
            del self._subscriptions[subscription.key]  # users come and go: keep no entry behind

    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    async def close(self) -> None:
        self._closed = True
        self._subscriptions.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the live bus is closed")

    @staticmethod
    def _deliver(subscription: MemorySubscription, message: LiveMessage) -> None:
        try:
            subscription.handler(message)
        except Exception:
            # No user id or payload in the log line: ids and bodies stay out of logs.
            log.exception("live_handler_failed", app=message.app, kind=message.kind)


class LossyBus:
    """For tests: a ``Bus`` that drops, duplicates and reorders what it publishes, reproducibly (seeded).

    Each message is dropped with probability ``drop``, else sent twice with probability ``duplicate``; with
    probability ``reorder`` a message is held back and sent right after the next message that goes out (maybe
    in a later ``publish``; ``flush`` sends a held message now). Counters tell a test what happened.
    """

    def __init__(
        self,
        inner: Bus,
        rng: random.Random,
        *,
        drop: float = 0.1,
        duplicate: float = 0.1,
        reorder: float = 0.1,
    ) -> None:
        self.inner = inner
        self._rng = rng
        self._drop, self._duplicate, self._reorder = drop, duplicate, reorder
        self._held: list[LiveMessage] = []
        self.dropped = self.duplicated = self.reordered = 0

    async def publish(self, messages: Sequence[LiveMessage]) -> None:
        out: list[LiveMessage] = []
        for message in messages:
            copies = self._fate(message)
            if not copies:
                continue
            if not self._held and self._rng.random() < self._reorder:
                self._held = copies
                continue
            out.extend(copies)
            if self._held:
                out.extend(self._held)
                self._held = []
                self.reordered += 1
        if out:
            await self.inner.publish(out)

    def _fate(self, message: LiveMessage) -> list[LiveMessage]:
        """What becomes of one message: nothing, itself, or itself twice."""
        if self._rng.random() < self._drop:
            self.dropped += 1
            return []
        if self._rng.random() < self._duplicate:
            self.duplicated += 1
            return [message, message]
        return [message]

    async def flush(self) -> None:
        """Sends a held-back message now."""
        held, self._held = self._held, []
        if held:
            await self.inner.publish(held)

    async def subscribe(self, app: str, user: str, handler: LiveHandler) -> Subscription:
        return await self.inner.subscribe(app, user, handler)

    async def close(self) -> None:
        await self.inner.close()

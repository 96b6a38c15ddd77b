"""Producer idempotency for event logs that cannot look keys up themselves (NATS, Redis, RabbitMQ).

``IdempotentLog`` wraps such a log: it claims each item's Idempotency-Key in the store (``ports.Idempotency``)
before appending. A repeated key with the same body appends the event again under the first event's id and
answers that id: if the first request died between its claim and its append, the repeat is what makes the
event durable; if not, the worker's inbox write is idempotent on the event id, so the second copy creates
nothing. A repeated key with another body is an ``IdempotencyMismatchError`` in its slot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tidings.errors import IdempotencyMismatchError
from tidings.ports import Append, Appended, Claim, Delivery, EventLog, Idempotency


class IdempotentLog:
    """``ports.EventLog`` with key lookups, over an ``inner`` log that appends whatever it is given."""

    def __init__(self, inner: EventLog, keys: Idempotency) -> None:
        self.inner = inner
        self._keys = keys

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]:
        keyed = [i for i, item in enumerate(items) if item.event.idempotency_key is not None]
        claims = [_claim(items[i]) for i in keyed]
        recorded = dict(zip(keyed, await self._keys.claim(claims, _now(items)), strict=True))
        results: list[Appended | Exception | None] = [None] * len(items)
        to_append: list[tuple[int, Append]] = []
        for index, item in enumerate(items):
            earlier = recorded.get(index)
            if earlier is None:
                to_append.append((index, item))
            elif earlier.body_hash != (item.body_hash or ""):
                results[index] = IdempotencyMismatchError("Idempotency-Key reused with another body")
            else:
                again = dataclasses.replace(item.event, id=earlier.event_id)
                to_append.append((index, Append(again, item.body_hash)))
        appended = await self.inner.append([item for _, item in to_append]) if to_append else []
        for (index, item), result in zip(to_append, appended, strict=True):
            if isinstance(result, Appended) and recorded.get(index) is not None:
                result = Appended(item.event.id, duplicate=True)
            results[index] = result
        return [r for r in results if r is not None]

    async def read(self, max_items: int, timeout: float) -> list[Delivery]:
        return await self.inner.read(max_items, timeout)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.ack(deliveries)

    async def lag(self) -> int:
        return await self.inner.lag()

    async def close(self) -> None:
        await self.inner.close()


def _claim(item: Append) -> Claim:
    event = item.event
    assert event.idempotency_key is not None
    return Claim(event.app, event.idempotency_key, item.body_hash or "", event.id)


def _now(items: Sequence[Append]) -> float:
    return max((item.event.accepted_at for item in items), default=0.0)

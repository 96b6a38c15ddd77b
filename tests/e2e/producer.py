"""A producer as a careful app backend writes one: every event has an Idempotency-Key, and a send is retried
with the same key and body until the server answers 2xx (connection errors, 409 in flight, 429, 503).

Each producer sends sequentially, so the order of its ``accepted`` ledger is the order in which the server
accepted its events; the ledger checker holds every user's inbox to that order.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .harness import http_client

RETRY_STATUSES = frozenset({409, 429, 503})
JSON = dict[str, Any]


class ProducerError(AssertionError):
    """The server refused an event for good, or never accepted it within the producer's deadline."""


@dataclass(frozen=True)
class Accepted:
    """One event the server answered 2xx for: from then on it must never be lost."""

    producer: str
    key: str
    event_id: str
    recipients: tuple[str, ...]
    body: JSON = field(compare=False, repr=False)


class Producer:
    """Sends events for one app and keeps the ledger of what was accepted, in send order."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        *,
        seed: int = 0,
        deadline: float = 60.0,
        padding: int = 0,
    ) -> None:
        self.name = name
        self.accepted: list[Accepted] = []
        self.resends = 0
        self.retries = 0
        self.problems: list[str] = []
        self._http = http_client(base_url, token=api_key)
        self._rng = random.Random(seed)
        self._deadline = deadline
        self._padding = "x" * padding

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _event(self, n: int, recipients: Sequence[str]) -> tuple[str, JSON]:
        """The key and body of this producer's ``n``-th event."""
        data: JSON = {"producer": self.name, "n": n}
        if self._padding:
            data["pad"] = self._padding
        return f"{self.name}-{n}", {
            "type": "e2e.test",
            "actor": {"id": self.name},
            "recipients": list(recipients),
            "data": data,
        }

    async def send(self, recipients: Sequence[str]) -> Accepted:
        """Sends one new event to ``recipients`` and records it once accepted."""
        key, body = self._event(len(self.accepted), recipients)
        event_id: str = (await self._until_accepted("/v1/events", body, key))["id"]
        accepted = Accepted(self.name, key, event_id, tuple(recipients), body)
        self.accepted.append(accepted)
        return accepted

    async def send_batch(self, recipients: Sequence[Sequence[str]]) -> list[Accepted]:
        """One ``POST /v1/events/batch``, one new event per item, each with its own key; every item must be
        accepted. A retry resends the same items, which their keys make idempotent."""
        items = [self._event(len(self.accepted) + i, users) for i, users in enumerate(recipients)]
        body = {"events": [{**event, "idempotency_key": key} for key, event in items]}
        results: list[JSON] = (await self._until_accepted("/v1/events/batch", body, None))["results"]
        batch = []
        for (key, event), users, result in zip(items, recipients, results, strict=True):
            if result.get("status") != "accepted":
                raise ProducerError(f"{key}: batch item refused: {result}")
            batch.append(Accepted(self.name, key, result["id"], tuple(users), event))
        self.accepted.extend(batch)
        return batch

    async def resend(self, accepted: Accepted) -> None:
        """Sends an accepted event again with the same key and body: it must answer the same id."""
        self.resends += 1
        event_id = (await self._until_accepted("/v1/events", accepted.body, accepted.key))["id"]
        if event_id != accepted.event_id:
            self.problems.append(
                f"{accepted.key}: resent, got id {event_id}, first answer was {accepted.event_id}"
            )

    async def resend_random(self) -> None:
        """Resends one of this producer's earlier accepted events, picked with the seeded random."""
        if self.accepted:
            await self.resend(self._rng.choice(self.accepted))

    async def _until_accepted(self, path: str, body: JSON, key: str | None) -> JSON:
        """POSTs until a 2xx and returns its JSON; every retry sends the same body and key."""
        deadline = time.monotonic() + self._deadline
        for attempt in itertools.count():
            wait = await self._try_post(path, body, key, attempt)
            if isinstance(wait, dict):
                return wait
            if time.monotonic() + wait > deadline:
                raise ProducerError(
                    f"{key or path}: not accepted within {self._deadline} s ({attempt + 1} tries)"
                )
            self.retries += 1
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: itertools.count() does not end")

    async def _try_post(self, path: str, body: JSON, key: str | None, attempt: int) -> JSON | float:
        """One attempt: the answer's JSON, or how long to wait before the next attempt."""
        headers = {"Idempotency-Key": key} if key else {}
        try:
            response = await self._http.post(path, json=body, headers=headers)
        except httpx.TransportError:
            return self._backoff(attempt)  # down, restarting, or the answer was lost: same key again
        if response.is_success:
            answer: JSON = response.json()
            return answer
        if response.status_code in RETRY_STATUSES:
            return max(self._backoff(attempt), min(_retry_after(response), 1.0))
        raise ProducerError(f"{key or path}: {response.status_code} {response.text}")

    def _backoff(self, attempt: int) -> float:
        """Exponential from 20 ms, capped at 0.5 s, with full jitter (a reconnect storm spreads out)."""
        return self._rng.uniform(0.5, 1.0) * min(0.02 * 2.0 ** min(attempt, 10), 0.5)


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(str(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0

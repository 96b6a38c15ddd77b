"""One ledger run: an app, producers posting concurrently, one live client per user, and the final check.

The ledger, crash and drain tests are this run with something done to the server in the middle; ``Plan`` holds
the sizes (the same seed gives the same recipients and resends, so a failure can be replayed).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from .clients import SseClient, StreamClient, WsClient
from .harness import AppCredentials, ServerProcess, wait_until
from .ledger import accepted_by_user, check_all
from .producer import Producer


@dataclass(frozen=True)
class Plan:
    """The sizes of one run. Users get a client each, WebSocket first, then SSE, as far as the counts go."""

    events: int = 5000
    users: int = 50
    producers: int = 4
    ws_clients: int = 25
    sse_clients: int = 25
    recipients: tuple[int, int] = (1, 3)  # per event, inclusive; (users, users) is fan-out to everyone
    resend_ratio: float = 0.1
    drop_chance: float = 0.01  # per notification received, while the client has drops left
    max_drops: int = 3
    padding: int = 0  # extra bytes in each event's data
    burst: int = 0  # crash_at: first a batch of this many events to every user, killed mid-fan-out
    seed: int = 7
    settle_timeout: float = 30.0
    # Check each producer's order per ordering key only: what a partitioned log (Kafka) promises
    # (docs/contract.md "Order"); else the order of all its events, which one reader of one log keeps.
    order_per_key: bool = False


class Run:
    """Producers and clients of one app against one server; ``produce`` then ``check``."""

    creds: AppCredentials  # set on entry, when the app is created

    def __init__(self, server: ServerProcess, plan: Plan, app: str = "ledger") -> None:
        self.server = server
        self.plan = plan
        self.app = app
        self.users = [f"u{i:02d}" for i in range(plan.users)]
        self.tokens: dict[str, str] = {}
        self.producers: list[Producer] = []
        self.clients: list[StreamClient] = []
        self.ready_before_crash: dict[StreamClient, int] = {}
        self.rows_at_crash = 0

    async def __aenter__(self) -> Run:
        self.creds = creds = await self.server.create_app(self.app)
        self.tokens = {user: creds.token(user) for user in self.users}
        self.producers = [
            Producer(
                f"p{i}",
                self.server.base_url,
                creds.api_key,
                seed=self.plan.seed * 100 + i,
                padding=self.plan.padding,
            )
            for i in range(self.plan.producers)
        ]
        clients = (self._client(i, user) for i, user in enumerate(self.users))
        self.clients = [client for client in clients if client is not None]
        for client in self.clients:
            client.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(client.stop() for client in self.clients))
        await asyncio.gather(*(producer.aclose() for producer in self.producers))

    def _client(self, i: int, user: str) -> StreamClient | None:
        """WebSocket clients for the first users, SSE for the next (half resume by header, half by query)."""
        plan, token = self.plan, self.tokens[user]
        common: dict[str, Any] = {
            "seed": plan.seed * 1000 + i,
            "drop_chance": plan.drop_chance,
            "max_drops": plan.max_drops,
        }
        if i < plan.ws_clients:
            return WsClient(self.server.ws_url, user, token, **common)
        if i >= plan.ws_clients + plan.sse_clients:
            return None
        resume = "header" if i % 2 else "query"
        return SseClient(self.server.base_url, user, token, resume=resume, **common)

    @property
    def accepted(self) -> int:
        return sum(len(p.accepted) for p in self.producers)

    def shares(self) -> list[int]:
        """How many events each producer sends."""
        shares = [self.plan.events // self.plan.producers] * self.plan.producers
        shares[0] += self.plan.events - sum(shares)
        return shares

    def planned_resends(self) -> int:
        return sum(round(share * self.plan.resend_ratio) for share in self.shares())

    async def produce(self) -> None:
        """Every producer sends its share sequentially; the producers run concurrently."""
        shares = self.shares()
        await asyncio.gather(
            *(self._produce_one(p, n, i) for i, (p, n) in enumerate(zip(self.producers, shares, strict=True)))
        )

    async def _produce_one(self, producer: Producer, count: int, index: int) -> None:
        rng = random.Random(self.plan.seed * 10 + index)
        resend_after = set(rng.sample(range(count), round(count * self.plan.resend_ratio)))
        low, high = self.plan.recipients
        for i in range(count):
            await producer.send(rng.sample(self.users, rng.randint(low, high)))
            if i in resend_after:
                await producer.resend_random()

    async def crash_at(self, fraction: float) -> float:
        """SIGKILLs the server once ``fraction`` of the events are accepted and restarts it; the downtime."""
        # Generous: a loaded machine accepts slowly (a precondition of the test, not a figure of it).
        reached = await wait_until(lambda: self.accepted >= fraction * self.plan.events, 150.0)
        assert reached, f"only {self.accepted} events accepted before the crash point"
        if self.plan.burst:
            await self._burst_in_flight()
        self.ready_before_crash = {client: len(client.ready) for client in self.clients}
        started = time.monotonic()
        await self.server.kill()
        self.rows_at_crash = self.server.inbox_rows()
        await self.server.restart()
        return time.monotonic() - started

    async def _burst_in_flight(self) -> None:
        """Sends ``plan.burst`` events to every user in one batch and returns as soon as a client got one:
        the worker has then committed part of its batch, and acks only once the whole batch is in inboxes."""
        burst = Producer("burst", self.server.base_url, self.creds.api_key)
        self.producers.append(burst)
        ids = {a.event_id for a in await burst.send_batch([self.users] * self.plan.burst)}
        seen = await wait_until(
            lambda: any(c.received and c.received[-1]["event_id"] in ids for c in self.clients),
            10.0,
            interval=0.005,
        )
        assert seen, "no notification of the burst arrived"

    async def rewritten_after_crash(self) -> int:
        """Inbox rows the restarted worker wrote again (idempotently) because their event was not acked.

        More than zero proves the crash fell between an inbox commit and the ack. The restarted process counts
        every row its worker wrote, new or existing; the new ones are those the crash had not committed yet.
        """
        written = await self.server.metric("tidings_inbox_writes_total")
        return int(written) - (sum(self.expected().values()) - self.rows_at_crash)

    def expected(self) -> dict[str, int]:
        """How many notifications each user must end with."""
        by_user = accepted_by_user(self.producers)
        return {user: len(by_user.get(user, [])) for user in self.users}

    async def settle(self) -> bool:
        """Waits (bounded) until every client has seen as many notifications as its user was sent."""
        expected = self.expected()
        return await wait_until(
            lambda: all(c.last_seq >= expected[c.user] for c in self.clients),
            self.plan.settle_timeout,
            interval=0.1,
        )

    def lagging(self) -> list[str]:
        expected = self.expected()
        return [
            f"{c!r} at {c.last_seq}/{expected[c.user]}" for c in self.clients if c.last_seq < expected[c.user]
        ]

    async def check(self) -> list[str]:
        """Settles, then runs every ledger check; the problems found (empty when all held)."""
        problems = [] if await self.settle() else [f"not settled: {self.lagging()[:10]}"]
        checked = await check_all(
            self.server.base_url, self.producers, self.clients, self.tokens, per_key=self.plan.order_per_key
        )
        return problems + checked

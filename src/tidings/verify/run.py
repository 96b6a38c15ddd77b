"""The I/O of ``tidings verify``: producers, live clients and the fault command against a running deployment,
through the project's own Python SDK (``tidings.client``); ``ledger.account`` judges the records.

- Users are new to each run (``verify-<run id>-u<i>``), so their inboxes start at seq 1 and an app that is in
  use is not disturbed: the run's events go to its own users only.
- Each producer sends its share one event after another, each with an Idempotency-Key (``verify-<run>-p-n``),
  repeated with the same key and body until a 2xx: on network errors, 5xx, 429 and 409 (key in flight).
- Each client follows one user over WebSocket (even clients) or SSE (odd ones), from seq 0, and drops its
  connection a few times at random, resuming with the last seq it got (the SDK's ``after``).
- The fault command (``--kill-cmd``) runs through the shell every ``--kill-every`` seconds while events are
  being sent; whatever it does (kill -9 and restart, a partition, a failover) the ledger must still balance.
Every loop is bounded by the run's deadline (``--timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt

from tidings.client import (
    ApiError,
    AuthFailedError,
    ClientError,
    NotificationStream,
    ProducerClient,
    UserClient,
)
from tidings.client.retry import Backoff
from tidings.errors import ConfigError
from tidings.verify.ledger import Fault, Report, Row, Sent, Stream, account, ref_of

AUDIENCE = "tidings"
PAGE = 100
MAX_PAGES = 100_000
SEND_BACKOFF = Backoff(max_attempts=3, base=0.05, cap=0.5, max_wait=5.0)  # the SDK's tries, per outer try


@dataclass(frozen=True)
class Options:
    url: str
    app: str
    api_key: str
    jwt_secret: str
    events: int = 1000
    users: int = 10
    clients: int = 4
    producers: int = 4
    kill_cmd: str | None = None
    kill_every: float = 5.0
    lane_order: bool = True  # False: several fan-out workers, lane order is reported, not promised
    rate: float | None = None  # events per second, all producers together (None: as fast as accepted)
    max_faults: int | None = None  # fault commands at most (None: as many as fit while events are sent)
    timeout: float = 300.0
    drops: int = 3  # connection drops per client, at random points
    seed: int | None = None
    trust_env: bool = True


@dataclass
class _Client:
    name: str
    user: str
    transport: str
    received: list[Row] = field(default_factory=list)
    drops: int = 0
    connects: int = 0  # connections made, the SDK's reconnects included
    stream: NotificationStream | None = None


class Verify:
    """One run: ``await Verify(options).run()`` returns the ``Report``."""

    def __init__(self, options: Options, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.o = options
        self.clock = clock
        self.run_id = secrets.token_hex(4)
        self.rng = random.Random(options.seed)
        self.users = [f"verify-{self.run_id}-u{i}" for i in range(options.users)]
        self.sent: list[Sent] = []
        self.faults: list[Fault] = []
        self.clients = [
            _Client(
                f"{'ws' if i % 2 == 0 else 'sse'}:{i}",
                self.users[i % options.users],
                "ws" if i % 2 == 0 else "sse",
            )
            for i in range(options.clients)
        ]
        self.started = clock()
        self.deadline = self.started + options.timeout
        self.refused = ""
        # Faults a caller injects itself (appending to ``faults``): awaited before the ledger is read.
        self.faults_of_caller: asyncio.Future[object] | None = None

    def token(self, user: str) -> str:
        """A user token as the app's backend mints one (HS256 with the app's JWT secret)."""
        claims = {
            "iss": self.o.app,
            "sub": user,
            "aud": AUDIENCE,
            "exp": int(time.time() + self.o.timeout + 600),
        }
        return jwt.encode(claims, self.o.jwt_secret, algorithm="HS256")

    async def run(self) -> Report:
        producing_until = self.started + self.o.timeout * 0.7
        tasks = [asyncio.create_task(self._follow(client)) for client in self.clients]
        try:
            await self._wait_connected()
            if self.refused:
                raise ConfigError(self.refused)
            produced = asyncio.Event()
            faults = asyncio.create_task(self._inject(produced))
            await asyncio.gather(*(self._produce(p, producing_until) for p in range(self.o.producers)))
            produced.set()
            await faults  # a fault command under way is let finish (bounded by the deadline)
            if self.faults_of_caller is not None:  # a caller's own fault injection (the chaos tests)
                await self.faults_of_caller
            await self._settle(self.started + self.o.timeout * 0.9)
            inboxes = {user: await self._inbox(user) for user in self.users}
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        streams = [Stream(c.name, c.user, tuple(c.received)) for c in self.clients]
        report = account(self.sent, inboxes, streams, self.faults, lane_order=self.o.lane_order)
        report.resumes = sum(max(0, c.connects - 1) for c in self.clients)
        if len(self.sent) < self.o.events:
            report.incomplete = self.refused or (
                f"only {len(self.sent)} of {self.o.events} events accepted within the time allowed"
            )
        return report

    async def _wait_connected(self) -> None:
        """Until every client has had its first ready (bounded): events sent before would still arrive (each
        stream starts at seq 0), but their latency would measure the connect."""
        until = min(self.deadline, self.clock() + 30.0)
        waiting = [c for c in self.clients if c.stream is None or c.stream.ready is None]
        while (
            waiting and self.clock() < until and not self.refused
        ):  # polled: the SDK's ready frame has no event to await
            await asyncio.sleep(0.05)
            waiting = [c for c in waiting if c.stream is None or c.stream.ready is None]

    # Producers

    async def _produce(self, index: int, until: float) -> None:
        share = self.o.events // self.o.producers + (1 if index < self.o.events % self.o.producers else 0)
        rng = random.Random(self.rng.random())
        async with ProducerClient(
            self.o.url, self.o.api_key, backoff=SEND_BACKOFF, trust_env=self.o.trust_env
        ) as producer:
            interval = self.o.producers / self.o.rate if self.o.rate else 0.0
            next_at = self.clock()
            for n in range(share):
                if interval:
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - self.clock()))
                recipients = rng.sample(self.users, rng.randint(1, min(3, len(self.users))))
                event: dict[str, object] = {
                    "type": "verify.check",
                    "actor": {"id": f"verify-p{index}"},
                    "recipients": recipients,
                    "data": {"verify": self.run_id, "p": index, "n": n},
                    # One ordering key per producer: the contract keeps a key's order with any number of
                    # fan-out workers (an event to several users is otherwise keyed by its own id).
                    "ordering_key": f"verify-{self.run_id}-p{index}",
                }
                event_id = await self._send(producer, event, f"verify-{self.run_id}-{index}-{n}", until, rng)
                if event_id is None:
                    return
                self.sent.append(Sent((index, n), event_id, tuple(recipients), self.clock()))

    async def _send(
        self, producer: ProducerClient, event: dict[str, object], key: str, until: float, rng: random.Random
    ) -> str | None:
        """The event's id once a 2xx came, or None past ``until`` or on a refusal no retry can change."""
        attempt = 0
        while self.clock() < until and not self.refused:  # bounded by ``until``
            try:
                return await producer.send(event, idempotency_key=key)
            except ApiError as error:
                if isinstance(error, AuthFailedError):
                    self.refused = f"the deployment refused the API key ({error}): check --app and --api-key"
                    raise ConfigError(self.refused) from error
                if not (error.retryable or error.status >= 500):
                    self.refused = f"the deployment refused an event: {error}"
                    return None
            except ClientError:
                pass  # no answer after the SDK's own tries (down, restarting, cut off): same key again
            attempt += 1
            await asyncio.sleep(rng.uniform(0.5, 1.0) * min(0.05 * 2**attempt, 1.0))
        return None

    async def _inject(self, produced: asyncio.Event) -> None:
        """Runs the fault command every ``kill_every`` seconds until the producers are done."""
        if not self.o.kill_cmd:
            return
        while not produced.is_set() and len(self.faults) < (
            self.o.max_faults or 1 << 30
        ):  # bounded: deadline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(produced.wait(), self.o.kill_every)
                return
            started = self.clock()
            process = await asyncio.create_subprocess_shell(self.o.kill_cmd)
            try:
                status = await asyncio.wait_for(process.wait(), max(1.0, self.deadline - self.clock()))
            except TimeoutError:
                process.kill()
                status = await process.wait()
            self.faults.append(Fault(started, self.clock(), status))

    # Clients

    async def _follow(self, client: _Client) -> None:
        """Follows the client's user from seq 0; drops the connection ``drops`` times at random and resumes
        with the last seq received. A stream the SDK gives up on is opened again (until cancelled)."""
        after, epoch = 0, None
        user = UserClient(self.o.url, self.token(client.user), trust_env=self.o.trust_env)
        drop_chance = 0.02
        try:
            while True:  # bounded: cancelled by ``run`` once the ledger is read
                try:
                    stream = user.stream(client.transport, after=after, epoch=epoch)  # type: ignore[arg-type]
                    client.stream = stream
                    async with stream:
                        async for notification in stream:
                            client.received.append(
                                Row(
                                    int(notification["seq"]),
                                    str(notification["event_id"]),
                                    ref_of(notification.get("data")),
                                    self.clock(),
                                )
                            )
                            after, epoch = stream.last_seq or after, stream.epoch
                            if client.drops < self.o.drops and self.rng.random() < drop_chance:
                                client.drops += 1
                                break  # a dropped connection: the next stream resumes after ``after``
                except AuthFailedError as error:
                    self.refused = (
                        f"the deployment refused a user token ({error}): check --app and --jwt-secret"
                    )
                    return
                except ClientError:
                    await asyncio.sleep(0.5)
                finally:
                    client.connects += client.stream.connects if client.stream else 0
        finally:
            await user.aclose()

    async def _settle(self, until: float) -> None:
        """Until every client received every accepted event sent to its user, or ``until``."""
        want: dict[str, set[tuple[int, int]]] = {user: set() for user in self.users}
        for event in self.sent:
            for user in event.recipients:
                want[user].add(event.ref)
        while self.clock() < until:  # bounded by ``until``
            if all(want[c.user] <= {row.ref for row in c.received} for c in self.clients):
                return
            await asyncio.sleep(0.1)

    async def _inbox(self, user: str) -> list[Row]:
        """The user's whole inbox, oldest first (``after`` paging); read again on errors until the deadline."""
        rows: list[Row] = []
        async with UserClient(self.o.url, self.token(user), trust_env=self.o.trust_env) as client:
            for _ in range(MAX_PAGES):
                try:
                    page = await client.notifications(after=rows[-1].seq if rows else 0, limit=PAGE)
                except ClientError as error:
                    if self.clock() > self.deadline + 30.0:
                        raise ConfigError(f"could not read {user}'s inbox: {error}") from error
                    await asyncio.sleep(0.5)
                    continue
                items = page["items"]
                if not items:
                    return rows
                rows += [Row(int(n["seq"]), str(n["event_id"]), ref_of(n.get("data"))) for n in items]
        raise ConfigError(f"{user}'s inbox is longer than {MAX_PAGES} pages")

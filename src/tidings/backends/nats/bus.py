"""The NATS live bus: core NATS, at most once.

Subject ``{ns}.live.{token(app)}.{token(user)}``, one NATS subscription per (app, user) in this process: the
gateway's hub holds at most one bus subscription per user (``ports.Bus``). Subscriptions are renewed by the
client on reconnect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from tidings.backends.envelope import decode_live, encode_live, token
from tidings.backends.nats.link import LIBRARY_ERRORS, OP_TIMEOUT, Link, parse_url
from tidings.core.models import LiveMessage
from tidings.errors import ConflictError, UnavailableError
from tidings.ports import Bus, LiveHandler, Subscription
from tidings.settings import Settings

bus_log = structlog.get_logger("tidings.bus")

SUB_PENDING_MSGS = 10_000  # per live subscription: past this the client drops (the bus is at most once)
SUB_PENDING_BYTES = 8 * 1024 * 1024


class NatsLiveSubscription:
    """The subscription of one (app, user): one NATS subscription on its subject; ``close`` is idempotent."""

    def __init__(self, bus: NatsBus, subject: str, handler: LiveHandler) -> None:
        self._bus = bus
        self.subject = subject
        self.handler = handler
        self.sub: NatsSubscription | None = None

    async def dispatch(self, msg: Msg) -> None:
        try:
            message = decode_live(msg.data)
        except ValueError:
            bus_log.warning("live_message_malformed")
            return
        try:
            self.handler(message)
        except Exception:
            # No user id or payload in the log line: ids and bodies stay out of logs.
            bus_log.exception("live_handler_failed", app=message.app, kind=message.kind)

    async def close(self) -> None:
        await self._bus.remove(self)


class NatsBus:
    """``ports.Bus`` on core NATS subjects (see the module docstring): subject -> its one subscription."""

    def __init__(self, link: Link, settings: Settings) -> None:
        self._link = link
        self._prefix = f"{settings.namespace}.live"
        self._subscriptions: dict[str, NatsLiveSubscription] = {}
        self._closed = False

    @classmethod
    async def open(cls, url: str, settings: Settings) -> Bus:
        server, _ = parse_url(url)
        return cls(await Link.connect(server, "live-bus"), settings)

    def subject(self, app: str, user: str) -> str:
        return f"{self._prefix}.{token(app)}.{token(user)}"

    async def publish(self, messages: Sequence[LiveMessage]) -> None:
        self._check_open()
        for message in messages:
            data = encode_live(message)
            await self._link.call(self._link.nc.publish(self.subject(message.app, message.user), data))

    async def subscribe(self, app: str, user: str, handler: LiveHandler) -> Subscription:
        """In place on return: the server has the subscription (a flush round trip) before this returns.
        ``ConflictError`` while (app, user) has an open subscription here (see ``ports.Bus``)."""
        self._check_open()
        subject = self.subject(app, user)
        if subject in self._subscriptions:
            raise ConflictError("this (app, user) is subscribed already on this bus")
        # Taken before the first await, so that a concurrent second subscribe is refused too.
        subscription = self._subscriptions[subject] = NatsLiveSubscription(self, subject, handler)
        try:
            subscription.sub = await self._link.call(
                self._link.nc.subscribe(
                    subject,
                    cb=subscription.dispatch,
                    pending_msgs_limit=SUB_PENDING_MSGS,
                    pending_bytes_limit=SUB_PENDING_BYTES,
                )
            )
            await self._link.call(self._link.nc.flush(timeout=int(OP_TIMEOUT)))
        except BaseException:
            await self.remove(subscription)  # a failed subscribe leaves nothing behind
            raise
        return subscription

    async def remove(self, subscription: NatsLiveSubscription) -> None:
        """Forgets the subscription at once, then unsubscribes on the server. Idempotent."""
        if self._subscriptions.get(subscription.subject) is not subscription:
            return
        del self._subscriptions[subscription.subject]  # users come and go: keep no entry behind
        sub, subscription.sub = subscription.sub, None
        if sub is not None and not self._closed:
            with contextlib.suppress(*LIBRARY_ERRORS):
                await sub.unsubscribe()

    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the live bus is closed")
        self._link.check()

    async def close(self) -> None:
        self._closed = True
        self._subscriptions.clear()
        await self._link.close()

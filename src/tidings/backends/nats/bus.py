"""The NATS live bus: core NATS, at most once.

Subject ``{ns}.live.{token(app)}.{token(user)}``, one NATS subscription per (app, user) in this process (the
gateway's hub holds at most one per user, see ``ports.Bus``). Subscriptions are renewed by the client on
reconnect.
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
from tidings.errors import UnavailableError
from tidings.ports import Bus, LiveHandler, Subscription
from tidings.settings import Settings

bus_log = structlog.get_logger("tidings.bus")

SUB_PENDING_MSGS = 10_000  # per live subscription: past this the client drops (the bus is at most once)
SUB_PENDING_BYTES = 8 * 1024 * 1024


class UserSubscription:
    """One NATS subscription for one (app, user) in this process, with the handlers of its connections."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.handlers: list[LiveHandler] = []
        self.sub: NatsSubscription | None = None

    async def dispatch(self, msg: Msg) -> None:
        try:
            message = decode_live(msg.data)
        except ValueError:
            bus_log.warning("live_message_malformed")
            return
        for handler in tuple(self.handlers):  # a copy: a handler may close its own subscription
            try:
                handler(message)
            except Exception:
                # No user id or payload in the log line: ids and bodies stay out of logs.
                bus_log.exception("live_handler_failed", app=message.app, kind=message.kind)


class NatsLiveSubscription:
    """A handler's place in a ``UserSubscription``; ``close`` is idempotent."""

    def __init__(self, bus: NatsBus, user: UserSubscription, handler: LiveHandler) -> None:
        self._bus = bus
        self._user = user
        self._handler = handler
        self._closed = False

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._bus.remove(self._user, self._handler)


class NatsBus:
    """``ports.Bus`` on core NATS subjects (see the module docstring)."""

    def __init__(self, link: Link, settings: Settings) -> None:
        self._link = link
        self._prefix = f"{settings.namespace}.live"
        self._users: dict[str, UserSubscription] = {}
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
        """In place on return: the server has the subscription (a flush round trip) before this returns."""
        self._check_open()
        subject = self.subject(app, user)
        entry = self._users.get(subject)
        if entry is None:
            entry = self._users[subject] = UserSubscription(subject)
            try:
                entry.sub = await self._link.call(
                    self._link.nc.subscribe(
                        subject,
                        cb=entry.dispatch,
                        pending_msgs_limit=SUB_PENDING_MSGS,
                        pending_bytes_limit=SUB_PENDING_BYTES,
                    )
                )
            except UnavailableError:
                del self._users[subject]
                raise
        entry.handlers.append(handler)
        await self._link.call(self._link.nc.flush(timeout=int(OP_TIMEOUT)))
        return NatsLiveSubscription(self, entry, handler)

    async def remove(self, entry: UserSubscription, handler: LiveHandler) -> None:
        with contextlib.suppress(ValueError):
            entry.handlers.remove(handler)
        if entry.handlers or self._users.get(entry.subject) is not entry:
            return
        del self._users[entry.subject]  # users come and go: keep no empty entries behind
        sub, entry.sub = entry.sub, None
        if sub is not None and not self._closed:
            with contextlib.suppress(*LIBRARY_ERRORS):
                await sub.unsubscribe()

    def subscriber_count(self) -> int:
        return sum(len(entry.handlers) for entry in self._users.values())

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the live bus is closed")
        self._link.check()

    async def close(self) -> None:
        self._closed = True
        self._users.clear()
        await self._link.close()

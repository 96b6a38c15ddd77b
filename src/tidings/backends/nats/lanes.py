"""What the JetStream event log keeps per priority lane: its pulls in flight and what they delivered, and how
to read a delivery's ack subject and a PubAck."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from tidings.backends.nats.link import OP_TIMEOUT
from tidings.core.models import Priority
from tidings.errors import UnavailableError
from tidings.ports import Appended


@dataclass(eq=False)
class Pull:
    """One pull request in flight with its own reply subject. ``ended`` resolves to None when it ended
    normally (batch filled, 404 no messages, 408 expired) or to the server's complaint."""

    lane: Lane
    batch: int
    expires_at: float  # monotonic: when the server ends it (a waiting pull), or when we stop waiting for it
    ended: asyncio.Future[str | None]
    received: int = 0
    sub: NatsSubscription | None = None

    def end(self, outcome: str | None) -> None:
        if not self.ended.done():
            self.ended.set_result(outcome)


@dataclass(eq=False)
class Lane:
    """One partition of a priority lane: its stream, subject and consumer, what was delivered to this process
    and not handed out yet (ordered by stream sequence, since pulls have separate subscriptions), and its
    waiting pull, if armed."""

    name: Priority
    stream: str
    subject: str
    partition: int = (
        0  # of ``settings.log_partitions``: its events go to ``subject``, its consumer reads them
    )
    consumer: str = "fanout-0"
    ready: list[tuple[int, int, Msg]] = field(default_factory=list)  # heap of (stream seq, arrival, msg)
    waiting: Pull | None = None
    rearm_at: float = 0.0

    def armed(self, now: float) -> bool:
        """A waiting pull is out. Past its expiry by OP_TIMEOUT without a word, the server forgot it."""
        pull = self.waiting
        return pull is not None and not pull.ended.done() and now < pull.expires_at + OP_TIMEOUT


def status_of(msg: Msg) -> str | None:
    """The JetStream status of a control message ("404", "408"...), None for an event."""
    return msg.headers.get("Status") if msg.headers else None


def appended(event_id: str, puback: Msg) -> Appended:
    """A JetStream PubAck -> ``Appended``; a refusal (no stream, storage full...) -> ``UnavailableError``."""
    status = status_of(puback)
    reply = orjson.loads(puback.data) if puback.data else {}
    if status is not None or not isinstance(reply, dict) or "error" in reply:
        raise UnavailableError(f"NATS refused an append: {status or reply.get('error')}")
    return Appended(event_id, duplicate=bool(reply.get("duplicate")))


def ack_fields(ack_subject: str) -> tuple[str, int]:
    """(stream, stream sequence) of a delivery's ack subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream
    seq>.<consumer seq>.<ts>.<pending>``, or the newer form with ``<domain>.<account hash>.`` after ``$JS.ACK.``.
    Anything else -> ("", 0)."""
    tokens = ack_subject.split(".")
    if tokens[:2] != ["$JS", "ACK"]:
        return "", 0
    try:
        if len(tokens) == 9:
            return tokens[2], int(tokens[5])
        if len(tokens) >= 11:
            return tokens[4], int(tokens[7])
    except ValueError:
        pass
    return "", 0

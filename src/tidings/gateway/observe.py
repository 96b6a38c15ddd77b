"""All the bookkeeping of live delivery in one place: metrics, the delivery journal and the delivery spans.

The loop (``gateway.serve``) and the stream driver (``gateway.stream``) call one ``DeliveryObserver`` per
connection with what happened: a connection opened or closed, a live message heard, a batch written (with the
``core.connection`` "written" seqs), an outbox overflow. Nothing else in the gateway touches ``metrics``,
``JOURNAL`` or ``tracing`` for delivery.

What is observed when: a notification counts as delivered (funnel, journal, latency, its span ends) once its
frame was *written* to the transport, not when it was queued. Live messages are remembered (``held``, with
their accepted time and span) from the moment they are heard until their frame is written; a backlog row the
client resumes counts as delivered but not in the live latency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from tidings.core.models import LiveMessage
from tidings.observability import metrics, tracing
from tidings.observability.journal import JOURNAL

if TYPE_CHECKING:
    from opentelemetry.trace import Span

# A live message on its way to the socket: (accepted_at, its gateway.deliver span when tracing is on).
Held = tuple[float, "Span | None"]
UNDELIVERED: Final = {"tidings.delivered": False}  # a span ended without its frame reaching the socket
MAX_HELD: Final = (
    256  # live messages remembered while their frame waits to be queued (a gap-fill in progress)
)


class DeliveryObserver:
    """The observations of one connection of ``app``/``user`` on ``transport`` ("ws", "sse")."""

    __slots__ = ("_last_written", "_sent", "app", "held", "transport", "user")

    def __init__(self, app: str, user: str, transport: str) -> None:
        self.app, self.user, self.transport = app, user, transport
        self.held: dict[int, Held] = {}
        self._last_written = 0  # the highest notification seq written on this connection
        self._sent = metrics.deliveries_total.labels(transport=transport, result="sent")

    def opened(self) -> None:
        metrics.connections.labels(transport=self.transport).inc()

    def closed(self) -> None:
        metrics.connections.labels(transport=self.transport).dec()

    def heard(self, message: LiveMessage, last_seq: int) -> None:
        """A live notification newer than ``last_seq`` and not heard before: remember it until it is written.

        The caller checks ``message.seq > last_seq and message.seq not in held`` first (the hot path)."""
        if len(self.held) >= MAX_HELD:
            self._forget_waiting(last_seq)  # a long gap-fill: its frames count as resumed rather than live
        span = None
        if message.trace is not None:
            attributes = {"tidings.transport": self.transport, "tidings.seq": message.seq}
            span = tracing.start_span("gateway.deliver", message.trace, attributes)
        self.held[message.seq] = (message.accepted_at, span)

    def written(self, frames: int, seqs: list[int], now: float) -> None:
        """A batch of ``frames`` reached the transport; ``seqs`` are the notifications among them."""
        self._sent.inc(frames)
        if not seqs:
            return
        held = self.held
        sent: list[tuple[int, bool]] = []
        for seq in seqs:
            entry = held.pop(seq, None) if held else None
            if entry is not None:
                accepted_at, span = entry
                if accepted_at:
                    metrics.accepted_to_delivered_seconds.observe(max(0.0, now - accepted_at))
                tracing.end_span(span)
            sent.append((seq, entry is not None))
        self._last_written = seqs[-1]
        metrics.FUNNEL["delivered_live"].inc(len(seqs))
        JOURNAL.delivered(self.app, self.user, sent, self.transport, now)

    def overflow(self) -> None:
        """The outbox overflowed: the connection is closed as a slow consumer."""
        metrics.outbox_overflows_total.labels(transport=self.transport).inc()
        metrics.slow_consumer_closes_total.inc()

    def forget(self) -> None:
        """The connection is over: whatever was not written is not delivered (the client resumes it)."""
        for _accepted_at, span in self.held.values():
            tracing.end_span(span, attributes=UNDELIVERED)
        self.held.clear()

    def _forget_waiting(self, last_seq: int) -> None:
        """Keep only the held messages queued and not yet written (``_last_written`` < seq <= ``last_seq``,
        at most an outbox of them); forget those still waiting for a gap-fill, and those below the last
        written seq, which will never be written (a row replaced before the gap-fill read it)."""
        low = self._last_written
        for seq in [seq for seq in self.held if seq > last_seq or seq <= low]:
            tracing.end_span(self.held.pop(seq)[1], attributes=UNDELIVERED)

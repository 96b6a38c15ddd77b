"""The delivery bookkeeping of one connection: what it holds until written, reported to the ``Funnel``.

The loop (``gateway.serve``) and the stream driver (``gateway.stream``) call one ``DeliveryObserver`` per
connection with what happened: a connection opened or closed, a live message heard, a batch written (with the
``core.connection`` "written" seqs), an outbox overflow. It reports each of them, once per batch, to the
process's funnel observer (``observability.funnel``, reached as ``runtime.funnel``), which feeds the metrics,
the journal and the spans; nothing in the gateway touches those directly.

What is observed when: a notification counts as delivered (funnel, journal, latency, its span ends) once its
frame was *written* to the transport, not when it was queued. Live messages are remembered (``held``, with
their accepted time and span) from the moment they are heard until their frame is written; a backlog row the
client resumes counts as delivered but not in the live latency.
"""

from __future__ import annotations

from typing import Final

from tidings.core.models import LiveMessage
from tidings.observability.funnel import Funnel, Held

MAX_HELD: Final = (
    256  # live messages remembered while their frame waits to be queued (a gap-fill in progress)
)


class DeliveryObserver:
    """The observations of one connection of ``app``/``user`` on ``transport`` ("ws", "sse")."""

    __slots__ = ("_last_written", "app", "funnel", "held", "transport", "user")

    def __init__(self, app: str, user: str, transport: str, funnel: Funnel) -> None:
        self.app, self.user, self.transport, self.funnel = app, user, transport, funnel
        self.held: dict[int, Held] = {}
        self._last_written = 0  # the highest notification seq written on this connection

    def opened(self) -> None:
        self.funnel.connected(self.transport, +1)

    def closed(self) -> None:
        self.funnel.connected(self.transport, -1)

    def heard(self, message: LiveMessage, last_seq: int) -> None:
        """A live notification newer than ``last_seq`` and not heard before: remember it until it is written.

        The caller checks ``message.seq > last_seq and message.seq not in held`` first (the hot path)."""
        if len(self.held) >= MAX_HELD:
            self._forget_waiting(last_seq)  # a long gap-fill: its frames count as resumed rather than live
        trace = message.trace
        self.held[message.seq] = (
            (message.accepted_at, None)  # untraced: what ``holding`` makes, without the call (per message)
            if trace is None
            else self.funnel.holding(self.transport, message.seq, message.accepted_at, trace)
        )

    def written(self, frames: int, seqs: list[int]) -> None:
        """A batch of ``frames`` reached the transport; ``seqs`` are the notifications among them."""
        self.funnel.sent(self.transport, frames)
        if not seqs:
            return
        held = self.held
        live: list[tuple[int, Held]] = []
        if held:  # empty for a resume page: nothing to look up
            for seq in seqs:
                item = held.pop(seq, None)
                if item is not None:
                    live.append((seq, item))
        self._last_written = seqs[-1]
        self.funnel.delivered(self.app, self.user, self.transport, seqs, live)

    def overflow(self) -> None:
        """The outbox overflowed: the connection is closed as a slow consumer."""
        self.funnel.overflowed(self.transport)

    def forget(self) -> None:
        """The connection is over: whatever was not written is not delivered (the client resumes it)."""
        self.funnel.undelivered(self.held.values())
        self.held.clear()

    def _forget_waiting(self, last_seq: int) -> None:
        """Keep only the held messages queued and not yet written (``_last_written`` < seq <= ``last_seq``,
        at most an outbox of them); forget those still waiting for a gap-fill, and those below the last
        written seq, which will never be written (a row replaced before the gap-fill read it)."""
        low = self._last_written
        stale = [seq for seq in self.held if seq > last_seq or seq <= low]
        self.funnel.undelivered([self.held.pop(seq) for seq in stale])

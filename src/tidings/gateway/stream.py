"""Drives ``core.session`` for one connection, whatever the transport: backlog first, then live, with gap-fill
from the inbox and a bounded outbox. The transport shells (websocket.py, sse.py) only encode and write bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from enum import Enum
from typing import TYPE_CHECKING

from tidings.core import frames
from tidings.core.models import LiveMessage
from tidings.core.outbox import Outbox
from tidings.core.session import Session, Step
from tidings.gateway.hub import Detach
from tidings.observability import metrics, tracing
from tidings.observability.journal import JOURNAL
from tidings.runtime import Runtime

if TYPE_CHECKING:
    from opentelemetry.trace import Span

Encode = Callable[[int, bytes], bytes]
# A live message on its way to the socket: (accepted_at, its gateway.deliver span when tracing is on).
Held = tuple[float, "Span | None"]
UNDELIVERED = {"tidings.delivered": False}  # a delivery span ended without its frame reaching the socket
MAX_HELD = 256  # live messages remembered while their frame waits (a gap-fill in progress)


class EndReason(Enum):
    CLIENT_GONE = "client_gone"
    SLOW_CONSUMER = "slow_consumer"
    DRAINING = "draining"


class LiveStream:
    """One user's notification stream on one connection.

    Invariant: every notification frame leaves through the outbox in the order the session emitted it, so the
    client sees seqs strictly ascending without gaps (the session fills gaps from the inbox).
    """

    def __init__(
        self,
        runtime: Runtime,
        app: str,
        user: str,
        *,
        transport: str,
        encode: Encode,
        heartbeat: Callable[[], bytes],
    ) -> None:
        settings = runtime.settings
        self._runtime = runtime
        self.app, self.user, self.transport = app, user, transport
        self._encode = encode
        self._heartbeat = heartbeat
        self._outbox = Outbox(settings.outbox_max_frames, settings.outbox_max_bytes)
        self._wakeup = asyncio.Event()
        self._fetch_after: int | None = None
        self._session: Session | None = None
        self._detach: Detach | None = None
        self.end_reason: EndReason | None = None
        self.last_seq = 0
        # Live messages not yet queued as frames (usually for an instant; longer while a gap is filled), and
        # the notification frames in the outbox: observed (latency, funnel, journal, span end) once written.
        self._held: dict[int, Held] = {}
        self._queued: list[tuple[int, Held | None]] = []

    async def open(self, after: int | None) -> int:
        """Subscribe, then read the user's last seq: anything committed later arrives live or by gap-fill.

        Returns the user's ``last_seq`` (for the ready frame). ``after`` None means "only what comes next".
        """
        self._detach = await self._runtime.hub.attach(self.app, self.user, self._on_live)
        last_seq = await self._runtime.store.inbox.last_seq(self.app, self.user)
        start = last_seq if after is None else after
        self._session = Session(start, page_size=self._runtime.settings.backlog_page)
        self._apply(self._session.start())
        return last_seq

    async def close(self) -> None:
        if self._detach is not None:
            detach, self._detach = self._detach, None
            await detach()
        self._forget_held()
        for _seq, held in self._queued:  # queued, never written: the client resumes them from the store
            if held is not None:
                tracing.end_span(held[1], attributes=UNDELIVERED)
        self._queued.clear()

    def end(self, reason: EndReason) -> None:
        """Ask the stream to stop (drain, or the client went away); ``batches`` then returns."""
        if self.end_reason is None:
            self.end_reason = reason
        self._wakeup.set()

    def push_control(self, frame: bytes) -> None:
        """Queue a non-notification frame (pong...) behind what is already queued."""
        self._push(frame)

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """Frames to write, coalesced per wake-up; ends once ``end_reason`` is set (slow consumer too)."""
        interval = self._runtime.settings.heartbeat_interval
        while self.end_reason is None:
            frames = self._outbox.drain()
            if frames:
                queued, self._queued = self._queued, []  # exactly the notifications among ``frames``
                yield frames  # returns once the shell has written them
                self._written(queued)
                continue
            if self._fetch_after is not None:
                # Only with an empty outbox: the backlog is pulled at the pace the client reads it, one page
                # at a time, so a resume of any length never counts as a slow consumer.
                await self._fetch()
                continue
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=interval)
            except TimeoutError:
                self._push(self._heartbeat())
                assert self._session is not None
                self._apply(self._session.poll())

    async def _fetch(self) -> None:
        assert self._session is not None
        assert self._fetch_after is not None
        after, self._fetch_after = self._fetch_after, None
        rows = await self._runtime.store.inbox.backlog(
            self.app, self.user, after, self._runtime.settings.backlog_page
        )
        self._apply(self._session.backlog([(row.seq, row.payload) for row in rows]), pulled=True)

    def _on_live(self, message: LiveMessage) -> None:
        if self._session is None:
            return
        if message.kind in ("read", "seen"):
            # Read-sync: a mark made by one of the user's clients, as the frame the API made (core.frames).
            sync = message.payload if self.transport != "sse" else frames.sse_event("read", message.payload)
            self.push_control(sync)
            return
        if message.kind != "notification":
            return
        if message.seq > self._session.last_seq and message.seq not in self._held:
            self._hold(message)
        self._apply(self._session.live(message.seq, message.payload))

    def _hold(self, message: LiveMessage) -> None:
        """Remember a live message until its frame is queued (now, or after a gap-fill from the store)."""
        if len(self._held) >= MAX_HELD:
            self._forget_held()  # a long gap-fill: its frames count as resumed rather than live
        span = None
        if message.trace is not None:
            attributes = {"tidings.transport": self.transport, "tidings.seq": message.seq}
            span = tracing.start_span("gateway.deliver", message.trace, attributes)
        self._held[message.seq] = (message.accepted_at, span)

    def _forget_held(self) -> None:
        for _accepted_at, span in self._held.values():
            tracing.end_span(span, attributes=UNDELIVERED)
        self._held.clear()

    def _written(self, queued: list[tuple[int, Held | None]]) -> None:
        """The frames of ``queued`` reached the socket: latency, funnel, journal, and the delivery spans."""
        if not queued:
            return
        now = self._runtime.clock.time()
        for _seq, held in queued:
            if held is not None:
                accepted_at, span = held
                if accepted_at:
                    metrics.accepted_to_delivered_seconds.observe(max(0.0, now - accepted_at))
                tracing.end_span(span)
        metrics.FUNNEL["delivered_live"].inc(len(queued))
        sent = ((seq, held is not None) for seq, held in queued)
        JOURNAL.delivered(self.app, self.user, sent, self.transport, now)

    def _apply(self, step: Step, *, pulled: bool = False) -> None:
        for seq, payload in step.send:
            if not self._push(self._encode(seq, payload), pulled=pulled):
                return
            self._queued.append((seq, self._held.pop(seq, None)))
            self.last_seq = seq
        if step.fetch_after is not None:
            self._fetch_after = step.fetch_after
            self._wakeup.set()

    def _push(self, frame: bytes, *, pulled: bool = False) -> bool:
        if self._outbox.push(frame, pulled=pulled):
            self._wakeup.set()
            return True
        if self.end_reason is None:
            # Policy "close": a slow consumer is closed and resumes from the store; nobody else waits for it.
            metrics.outbox_overflows_total.labels(transport=self.transport).inc()
            metrics.slow_consumer_closes_total.inc()
            self.end(EndReason.SLOW_CONSUMER)
        return False

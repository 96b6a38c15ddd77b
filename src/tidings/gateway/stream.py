"""The I/O side of one live connection: drives the sans-I/O ``core.connection.Connection`` with the hub's live
messages, the inbox's backlog pages and the heartbeat ticks, and hands its output out as batches of frames.

The delivery rules (order, duplicates, gaps, resume, the bounded outbox) are all in the core; this module only
performs what the core asks (a store read after ``NeedBacklog``), wakes the writer when the core has output,
and reports to the connection's ``DeliveryObserver`` (``gateway.observe``). ``gateway.serve`` runs it for
every transport shell. The heartbeat ticks, with the user's highest committed seq for the tail check, come from
the process's ``gateway.ticker`` (one timer and one store read per slot of streams, none per stream).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from tidings.core.connection import (
    SSE_ENCODER,
    WS_ENCODER,
    Connection,
    Encoder,
    EndReason,
    NeedBacklog,
    Notice,
    Overflow,
)
from tidings.core.models import App, LiveMessage, StoredNotification
from tidings.core.resume import Opened, epoch_of, open_at
from tidings.gateway import reads, ticker
from tidings.gateway.hub import Detach
from tidings.gateway.observe import DeliveryObserver
from tidings.runtime import Runtime

__all__ = ["EndReason", "LiveStream", "Opened"]

Encode = Callable[[int, bytes], bytes]
EARLY_LIVE: Final = 256  # live messages kept while a stream opens (a burst then; the newest ones count)


class LiveStream:
    """One user's notification stream on one connection (``transport`` "ws" or "sse").

    Invariant: every frame leaves in the order the core queued it, so the client sees seqs strictly ascending
    without gaps. ``encode``/``heartbeat`` override the transport's standard ``Encoder`` (tests, benchmarks).
    ``record``: the app as authentication found it (for the epoch); without it ``open`` reads it.
    """

    def __init__(
        self,
        runtime: Runtime,
        app: str,
        user: str,
        *,
        transport: str,
        encode: Encode | None = None,
        heartbeat: Callable[[], bytes] | None = None,
        record: App | None = None,
    ) -> None:
        self._runtime = runtime
        self._record = record
        self.app, self.user, self.transport = app, user, transport
        standard = SSE_ENCODER if transport == "sse" else WS_ENCODER
        self._encoder = (
            standard
            if encode is None and heartbeat is None
            else Encoder(encode or standard.notification, heartbeat or standard.heartbeat, standard.sync)
        )
        self.observer = DeliveryObserver(app, user, transport, runtime.funnel)
        self._wakeup = asyncio.Event()
        self._backlog_after: int | None = None  # a NeedBacklog the writer is to perform
        self._connection: Connection | None = None
        self._detach: Detach | None = None
        self._opened: Opened | None = None  # the user's last seq etc. when the stream opened
        self._end_reason: EndReason | None = None  # set by ``end`` before the stream is open
        self._early: list[bytes] = []  # control frames pushed before the stream is open (pongs)
        # Live messages heard between the subscription and the connection's creation, replayed into it (only
        # their highest seq matters for delivery: it makes the first read's answer be checked for more).
        # (None until one is heard: an idle connection holds no deque.)
        self._heard_early: deque[LiveMessage] | None = None
        self._first_page: tuple[int, list[StoredNotification]] | None = None  # read while opening
        self._ticker: ticker.Ticker | None = None  # ticks the stream once open, until it is closed

    @property
    def end_reason(self) -> EndReason | None:
        connection = self._connection
        return self._end_reason if connection is None else connection.end_reason

    async def open(self, after: int | None) -> Opened:
        """Subscribe, then read the user's last seq: anything committed later arrives live or by gap-fill.

        Returns the user's ``last_seq``, the epoch and whether the cursor was reset (for the ready and reset
        frames, ``core.resume``); a second call returns the same without opening again. ``after`` None means
        "only what comes next"; a cursor ahead of ``last_seq`` starts at ``last_seq``.

        The reads (``last_seq``, the retention floor and, for a cursor behind, the backlog's first page) are
        one ``Inbox.openings`` request, coalesced with the other streams opening now (``gateway.reads``).
        """
        if self._opened is not None:
            return self._opened
        self._detach = await self._runtime.hub.attach(self.app, self.user, self._on_live)
        settings = self._runtime.settings
        opening = await reads.for_inbox(self._runtime.store.inbox, settings.backlog_page).open(
            self.app, self.user, after
        )
        last_seq = opening.last_seq
        # Only a cursor behind ``last_seq`` can be below the retention floor (the read has it only then).
        floor = opening.floor if after is not None and after < last_seq else 0
        opened = open_at(after, last_seq, await self._epoch(), floor=floor, page=settings.backlog_page)
        connection = Connection(
            opened.start,
            self._encoder,
            page_size=settings.backlog_page,
            max_frames=settings.outbox_max_frames,
            max_bytes=settings.outbox_max_bytes,
        )
        if opening.page is not None and opened.start == after:
            self._first_page = (opened.start, opening.page)  # the connection's first read, answered already
        if self._end_reason is not None:
            connection.close(self._end_reason)
        for frame in self._early:
            connection.send_control(frame)
        self._early.clear()
        self._connection = connection
        self._opened = opened
        self._ticker = ticker.for_inbox(self._runtime.store.inbox, settings.heartbeat_interval)
        self._ticker.add(self)
        early, self._heard_early = self._heard_early, None
        for message in early or ():  # newer than the read (or already in it: dropped as duplicates)
            self._on_live(message)
        self._wakeup.set()
        return opened

    async def _epoch(self) -> str:
        record = self._record or await self._runtime.store.apps.get(self.app)
        # An app deleted since authentication: the stream still opens (and ends with the app's credentials).
        return epoch_of(self.app, record.created_at if record is not None else 0.0)

    async def close(self) -> None:
        """Unsubscribe; what was queued and never written is not delivered (the client resumes it)."""
        if self._ticker is not None:
            self._ticker.discard(self)
        if self._detach is not None:
            detach, self._detach = self._detach, None
            await detach()
        self.observer.forget()

    def end(self, reason: EndReason) -> None:
        """Ask the stream to stop (drain, or the client went away); ``batches`` then returns."""
        if self._connection is not None:
            self._connection.close(reason)
        elif self._end_reason is None:
            self._end_reason = reason
        self._wakeup.set()

    def tick(self, top: int | None) -> None:
        """A heartbeat period passed (``gateway.ticker``): a heartbeat, and a page read only when the
        user's highest committed seq ``top`` is above what was delivered (None: unknown, no check this time)."""
        connection = self._connection
        if connection is not None:
            connection.receive_tick(top=top)
            self._after_input(connection)

    def push_control(self, frame: bytes) -> None:
        """Queue a non-notification frame (pong...) behind what is already queued."""
        if self._connection is None:
            self._early.append(frame)
            return
        self._connection.send_control(frame)
        self._after_input(self._connection)

    async def batches(self, lead: list[bytes] | None = None) -> AsyncIterator[list[bytes]]:
        """Frames to write, coalesced per wake-up; ends once the stream ended (slow consumer too).

        ``lead`` (the ready frame) goes out first: in front of the first batch when that one is at hand (the
        backlog's first page, read while opening), so a resuming client gets both in one write; alone before
        anything is waited for. The shell writes each batch before asking for the next; only then are its
        notifications observed as delivered."""
        connection = self._connection
        assert connection is not None, "open() first"
        observer = self.observer
        while connection.end_reason is None:
            batch = connection.data_to_send()
            if batch is not None:
                frames = batch.frames
                if lead:
                    frames = lead + frames
                    lead = None
                yield frames  # returns once the shell has written them
                observer.written(len(batch.frames), batch.written)
                continue
            self._handle(connection.notices())
            if lead and not self._page_at_hand():
                frames = lead
                lead = None
                yield frames
                continue
            if self._backlog_after is not None:
                await self._fetch(connection)
                continue
            self._wakeup.clear()
            # No timer of its own: the heartbeat comes as a tick from the process's ticker, like live news.
            await self._wakeup.wait()
        if lead:
            yield lead  # ended while opening: the ready frame still goes first, then the close says why

    def _page_at_hand(self) -> bool:
        """Whether the store read the connection asks for was made while opening."""
        first, after = self._first_page, self._backlog_after
        return first is not None and after is not None and first[0] == after

    async def _fetch(self, connection: Connection) -> None:
        """A page of the inbox, read only with nothing queued: the backlog is pulled at the client's pace."""
        assert self._backlog_after is not None
        after, self._backlog_after = self._backlog_after, None
        first, self._first_page = self._first_page, None
        if first is not None and first[0] == after:
            rows = first[1]  # read while opening, after the subscription: live news since then is heard
        else:
            rows = await self._runtime.store.inbox.backlog(
                self.app, self.user, after, self._runtime.settings.backlog_page
            )
        connection.receive_backlog([(row.seq, row.payload) for row in rows])
        self._handle(connection.notices())

    def _on_live(self, message: LiveMessage) -> None:
        connection = self._connection
        if connection is None:
            if self._heard_early is None:  # subscribed, still opening: replayed once it is open
                self._heard_early = deque(maxlen=EARLY_LIVE)
            self._heard_early.append(message)
            return
        kind = message.kind
        if kind == "notification":
            seq, last_seq = message.seq, connection.last_seq
            if seq > last_seq and seq not in self.observer.held:
                self.observer.heard(message, last_seq)
            connection.receive_live(seq, message.payload)
        elif kind in ("read", "seen", "state"):
            # Read-sync and state changes made by one of the user's clients, as the frame the API made.
            connection.receive_sync(message.payload)
        elif kind == "retract":
            # A retraction's marker row: a seq of the stream like a notification, framed as ``retract``.
            connection.receive_live(message.seq, message.payload)
        else:
            return
        notices = connection.notices()  # ``_after_input``, inlined: this runs for every live message
        if notices:
            self._handle(notices)
        if connection.pending:
            self._wakeup.set()

    def _after_input(self, connection: Connection) -> None:
        notices = connection.notices()
        if notices:
            self._handle(notices)
        if connection.pending:
            self._wakeup.set()

    def _handle(self, notices: Sequence[Notice]) -> None:
        for notice in notices:
            if isinstance(notice, NeedBacklog):
                self._backlog_after = notice.after
            elif isinstance(notice, Overflow):
                self.observer.overflow()
                self._wakeup.set()
            # Dropped: a bus duplicate; nothing to observe (the bus is at-least-once by design).

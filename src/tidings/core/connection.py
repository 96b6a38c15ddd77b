"""One live connection, sans I/O (in the style of websockets' ``Protocol``): events in, frames and notices out.

A ``Connection`` joins the two pure halves of live delivery: ``core.session.Session`` (order, duplicates, gaps,
resume) and ``core.outbox.Outbox`` (the bounded send queue, overflow policy "close"). The I/O layer
(``gateway.stream`` and the loop in ``gateway.serve``) feeds it events and performs what it asks for:

events in                                  out
- ``receive_backlog(rows)``: a store page  - ``data_to_send()``: the frames to write now, in order, in one write,
- ``receive_live(seq, payload)``: the bus    with the notification seqs among them (``Batch.written``)
- ``receive_sync(payload)``: read-sync     - ``notices()``: ``Dropped`` (a duplicate), ``NeedBacklog`` (read
- ``receive_tick(top=)``: a heartbeat period  the store after seq N and feed the page back), ``Overflow``
- ``send_control(frame)``: e.g. a pong       (slow consumer: close with the reason's code, ``admission``)
- ``close(reason)``

Invariants, whatever the events: the seqs in successive ``Batch.written`` are strictly ascending, duplicate-free
and gap-free except for replaced rows a backlog leaves out (``core.session``); ``last_seq`` is the only record
of what was delivered; a store page is asked for (``NeedBacklog``) only once everything queued went out, so a
resume of any length is paced by the client and never overflows; once closed, nothing more is sent.

No asyncio, no sockets, no clock: a tick carries no time, the I/O layer's timer decides when one is due (one
timer for every connection of a process, ``gateway.ticker``, which also reads the users' highest committed seqs
for the tail checks, many users in one store read).
Frames are encoded here, once, with the transport's ``Encoder`` (``core.frames``); the per-transport framing
of the bytes (RFC 6455 headers, ASGI messages) stays in the shells.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from tidings.core import frames
from tidings.core.outbox import Outbox
from tidings.core.session import Session, Step


class EndReason(Enum):
    """Why a stream ended; ``gateway.admission.for_end`` maps it to what the client is told."""

    CLIENT_GONE = "client_gone"
    SLOW_CONSUMER = "slow_consumer"
    DRAINING = "draining"
    # Decided by the gateway about the client, not by the delivery state (``core.guard``, ``gateway.serve``):
    TOKEN_EXPIRED = "token_expired"  # the token's grace period passed without an in-band re-auth
    RATE_LIMITED = "rate_limited"  # the client sent frames faster than its bucket allows
    UNAUTHORIZED = "unauthorized"  # an in-band re-auth with a token that does not verify
    USER_MISMATCH = "user_mismatch"  # an in-band re-auth with a valid token of another user or app


@dataclass(frozen=True, slots=True)
class Encoder:
    """How one transport encodes the frames a connection sends (each call returns finished bytes)."""

    notification: Callable[[int, bytes], bytes]  # (seq, notification JSON) -> frame
    heartbeat: Callable[[], bytes]
    sync: Callable[[bytes], bytes]  # a read-sync frame as the API made it -> frame


def _ws_notification(_seq: int, payload: bytes) -> bytes:
    if payload.startswith(frames.RETRACT_PREFIX):  # a retraction's marker row: its payload is the frame
        return payload
    return frames.encode_notification(payload)


def _same(frame: bytes) -> bytes:
    return frame


def _sse_notification(seq: int, payload: bytes) -> bytes:
    if payload.startswith(frames.RETRACT_PREFIX):  # a retraction's marker row, at its seq
        return frames.sse_event("retract", payload, id=seq)
    return frames.sse_event("notification", payload, id=seq)


def _sse_heartbeat() -> bytes:
    return frames.sse_comment("ping")


def _sse_sync(payload: bytes) -> bytes:
    return frames.sse_event(frames.sync_event_name(payload), payload)


WS_ENCODER: Final = Encoder(_ws_notification, frames.encode_ping, _same)
SSE_ENCODER: Final = Encoder(_sse_notification, _sse_heartbeat, _sse_sync)


@dataclass(frozen=True, slots=True)
class Batch:
    """What to write now: ``frames`` in order (one write), ``written`` the notification seqs among them, to
    report once the write completed (the "written" notice, for observability)."""

    frames: list[bytes]
    written: list[int]


@dataclass(frozen=True, slots=True)
class Dropped:
    """A live message at or below ``last_seq`` (a bus duplicate, or a row the store already gave)."""

    seq: int


@dataclass(frozen=True, slots=True)
class NeedBacklog:
    """Read the store rows with seq > ``after`` (ascending, at most a page) and pass them to
    ``receive_backlog``; at most one such read is outstanding."""

    after: int


@dataclass(frozen=True, slots=True)
class Overflow:
    """The outbox overflowed (policy "close"): the connection is closed for ``reason``; the client resumes."""

    reason: EndReason


Notice = Dropped | NeedBacklog | Overflow
_NO_NOTICES: Final[tuple[Notice, ...]] = ()


class Connection:
    """The delivery state of one connection: a session, an outbox, the transport's encoder."""

    __slots__ = (
        "_encoder",
        "_fetch_after",
        "_notices",
        "_outbox",
        "_polled",
        "_session",
        "_ticked",
        "_written",
        "end_reason",
        "pending",
    )

    def __init__(
        self,
        after: int,
        encoder: Encoder,
        *,
        page_size: int = 500,
        max_frames: int = 1000,
        max_bytes: int = 1024 * 1024,
    ) -> None:
        self._session = Session(after, page_size=page_size)
        self._outbox = Outbox(max_frames, max_bytes)
        self._encoder = encoder
        self._fetch_after: int | None = None  # a store read the session asked for, not yet handed out
        self._written: list[int] = []  # the seqs of the notification frames in the outbox, in order
        self._notices: list[Notice] = []
        self._polled = after  # the highest committed seq a tick already asked a store read for
        # The first tick comes anywhere within the first period (the ticker's slots): no heartbeat then, right
        # behind the ready frame; from the second on, one every period. So the first comes 1-2 periods in.
        self._ticked = False
        self.end_reason: EndReason | None = None
        # Whether the I/O layer has something to do now: frames to write, a store read to make, or to stop
        # (a plain attribute, read after every event on the hot path).
        self.pending = False
        self._apply(self._session.start())  # the resume backlog comes before anything live

    @property
    def last_seq(self) -> int:
        """The highest seq delivered (queued to go out) on this connection."""
        return self._session.last_seq

    # --- events in -----------------------------------------------------------------------------------------------

    def receive_live(self, seq: int, payload: bytes) -> None:
        """A notification from the live bus (published only after its row was committed)."""
        if self.end_reason is not None:
            return
        session = self._session
        if session.next_live(seq):
            # The common case, one frame for the next seq, without a ``Step`` or ``_apply`` (the hot path).
            if self._outbox.push(self._encoder.notification(seq, payload)):
                self.pending = True
                self._written.append(seq)
            else:
                self._overflowed()
            return
        if seq <= session.last_seq:
            self._notices.append(Dropped(seq))
            return
        self._apply(session.live(seq, payload))

    def receive_backlog(self, rows: Sequence[tuple[int, bytes]]) -> None:
        """The answer to the last ``NeedBacklog``: store rows with seq > its ``after``, ascending."""
        if self.end_reason is None:
            # Pulled at the client's pace (asked only with an empty outbox): not subject to the outbox limits.
            self._apply(self._session.backlog(rows), pulled=True)

    def receive_sync(self, payload: bytes) -> None:
        """A read-sync mark made by one of the user's clients (the frame the API made)."""
        if self.end_reason is None:
            self._push(self._encoder.sync(payload))

    def receive_tick(self, *, top: int | None) -> None:
        """A heartbeat period passed: a heartbeat (every period but the first, busy or not, so that no client
        waits longer than one period for a frame once the first came), and a check for a live message lost at
        the tail (which no later message would reveal): ``top`` is the user's highest committed seq as the store
        gave it since the last tick, and a ``NeedBacklog`` follows only when it is above ``last_seq`` and above
        the ``top`` an earlier tick read for already (a newest row that was removed, which no page gives, costs
        one read, not one per tick). ``top`` None: the store could not be read; no check this time (the next
        tick's)."""
        if self.end_reason is not None:
            return
        if self._ticked:
            self._push(self._encoder.heartbeat())
        self._ticked = True
        session = self._session
        # While a read is on its way nothing is asked (nor remembered): its answer may predate ``top``, and the
        # next tick checks again.
        if top is not None and not session.fetching and top > max(session.last_seq, self._polled):
            self._polled = top
            self._apply(session.poll())

    def send_control(self, frame: bytes) -> None:
        """Queue a finished non-notification frame (a pong...) behind what is already queued."""
        if self.end_reason is None:
            self._push(frame)

    def close(self, reason: EndReason) -> None:
        """End the stream; the first reason given is kept. Nothing is sent afterwards."""
        if self.end_reason is None:
            self.end_reason = reason
        self.pending = True

    # --- out -----------------------------------------------------------------------------------------------------

    def data_to_send(self) -> Batch | None:
        """The queued frames to write in one go (None: nothing). With nothing queued, a store read the session
        wants is handed out as a ``NeedBacklog`` notice instead."""
        if self.end_reason is not None:
            return None
        queued = self._outbox.drain()
        if queued:
            written, self._written = self._written, []  # exactly the notifications among ``queued``
            self.pending = self._fetch_after is not None
            return Batch(queued, written)
        self.pending = False
        if self._fetch_after is not None:
            self._notices.append(NeedBacklog(self._fetch_after))
            self._fetch_after = None
        return None

    def notices(self) -> Sequence[Notice]:
        """The notices since the last call, oldest first."""
        if not self._notices:
            return _NO_NOTICES
        notices, self._notices = self._notices, []
        return notices

    # --- internals -----------------------------------------------------------------------------------------------

    def _apply(self, step: Step, *, pulled: bool = False) -> None:
        encode = self._encoder.notification
        for seq, payload in step.send:
            if not self._push(encode(seq, payload), pulled=pulled):
                return
            self._written.append(seq)
        if step.fetch_after is not None:
            self._fetch_after = step.fetch_after
            self.pending = True

    def _push(self, frame: bytes, *, pulled: bool = False) -> bool:
        if self._outbox.push(frame, pulled=pulled):
            self.pending = True
            return True
        self._overflowed()
        return False

    def _overflowed(self) -> None:
        if self.end_reason is None:
            self.pending = True
            # Policy "close": a slow consumer is closed and resumes from the store; nobody else waits for it.
            self.end_reason = EndReason.SLOW_CONSUMER
            self._notices.append(Overflow(EndReason.SLOW_CONSUMER))

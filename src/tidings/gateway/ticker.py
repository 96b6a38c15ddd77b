"""The heartbeat of every live stream of a process: one timer, and one store read per slot for the tail checks.

Once per ``heartbeat_interval`` every stream sends a heartbeat and checks whether the store holds a
notification whose live message was lost at the tail (``core.connection.Connection.receive_tick``). Asked
stream by stream, that was a backlog read per connection per heartbeat: 0.12 of a core for 1,000 idle
connections, ~1,270 reads/s at 19k (docs/performance.md, "Idle connections"). Here the streams of a process
are spread over ``SLOTS`` slots, each stream in a random one, so the streams of a resume storm do not all tick
at once (and each process runs its own timer from its own start: processes do not tick together). The timer
visits one slot every ``interval / SLOTS`` seconds: one read of the users' highest committed seqs for the
whole slot (``ports.Inbox.last_seqs``), then each stream of the slot ticks with its user's. A stream reads a
page only when the store holds more than it delivered.

So N idle streams cost ``SLOTS`` store reads per heartbeat, not N, and no timer each. At most one read is in
flight; the slots that come due meanwhile join the next one (as ``gateway.reads`` coalesces opening reads). A
read that fails is logged; the streams still get their heartbeats and their check waits for the next period.

One ``Ticker`` per inbox and interval (``for_inbox``), bound to the event loop that first used it; its timer runs
only while streams are registered.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from typing import Final, Protocol

import structlog

from tidings.ports import Inbox

log = structlog.get_logger("tidings.gateway.ticker")

# Reads per heartbeat interval, whatever the number of streams; each stream's tick comes once per interval.
SLOTS: Final = 8


class Tickable(Protocol):
    """A live stream as the ticker sees it (``gateway.stream.LiveStream``)."""

    app: str
    user: str

    def tick(self, top: int | None) -> None:
        """A heartbeat period passed; ``top`` is the user's highest committed seq (None: the read failed)."""


class Ticker:
    """Ticks every registered stream once per ``interval``, its slot's streams with one store read."""

    def __init__(
        self, inbox: Inbox, interval: float, *, slots: int = SLOTS, rng: random.Random | None = None
    ) -> None:
        self._inbox = inbox
        self._period = interval / slots
        self._slots: list[dict[Tickable, None]] = [{} for _ in range(slots)]
        self._slot_of: dict[Tickable, int] = {}
        self._rng = rng or random.Random()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0  # when the timer is due (fixed rate: no drift with the loop's lateness)
        self._next = 0  # the slot the timer visits next
        self._due: dict[Tickable, None] = {}  # streams whose slot came due, waiting for the read in flight
        self._task: asyncio.Task[None] | None = None
        self.reads = 0  # store reads made so far (tests, the bench's diagnosis)

    def __len__(self) -> int:
        return len(self._slot_of)

    def add(self, stream: Tickable) -> None:
        """Tick ``stream`` from now on; its first tick comes within one interval."""
        if stream in self._slot_of:
            return
        slot = self._rng.randrange(len(self._slots))
        self._slot_of[stream] = slot
        self._slots[slot][stream] = None
        if self._timer is None:
            self._at = self._loop.time()
            self._arm()

    def discard(self, stream: Tickable) -> None:
        """Tick ``stream`` no more (a read in flight for it is not waited for)."""
        slot = self._slot_of.pop(stream, None)
        if slot is not None:
            del self._slots[slot][stream]
        self._due.pop(stream, None)
        if not self._slot_of and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        now = self._loop.time()
        self._at += self._period
        if self._at < now:  # the loop was blocked past a whole period: skip, rather than tick in a burst
            self._at = now + self._period
        self._timer = self._loop.call_at(self._at, self._on_timer)

    def _on_timer(self) -> None:
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        self._arm()
        self._due.update(slot)
        self._start_read()

    def _start_read(self) -> None:
        if self._task is None and self._due:
            due, self._due = list(self._due), {}
            self._task = self._loop.create_task(self._tick(due))

    async def _tick(self, streams: list[Tickable]) -> None:
        users = list(dict.fromkeys((stream.app, stream.user) for stream in streams))
        self.reads += 1
        tops: dict[tuple[str, str], int] | None = None
        try:
            tops = await self._inbox.last_seqs(users)
        except asyncio.CancelledError:
            self._task = None
            raise
        except Exception:  # the store is away: heartbeats still go, the check waits for the next period
            log.warning("tail_check_failed", users=len(users), exc_info=True)
        self._task = None
        for stream in streams:
            if stream in self._slot_of:  # not closed meanwhile
                self._tick_one(stream, None if tops is None else tops.get((stream.app, stream.user), 0))
        self._start_read()

    @staticmethod
    def _tick_one(stream: Tickable, top: int | None) -> None:
        try:
            stream.tick(top)
        except Exception:  # one broken stream must not keep the others from their heartbeat
            log.exception("tick_failed")


_TICKERS: weakref.WeakKeyDictionary[Inbox, dict[float, Ticker]] = weakref.WeakKeyDictionary()


def for_inbox(inbox: Inbox, interval: float) -> Ticker:
    """The ticker of the streams reading ``inbox`` with heartbeats every ``interval`` s, on the running loop."""
    by_interval = _TICKERS.setdefault(inbox, {})
    ticker = by_interval.get(interval)
    if ticker is None or ticker._loop is not asyncio.get_running_loop():
        ticker = by_interval[interval] = Ticker(inbox, interval)
    return ticker

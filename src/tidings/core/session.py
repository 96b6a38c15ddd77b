"""Per-connection delivery state, sans I/O: live messages and store pages in, frames to send out.

The live bus may lose, duplicate and reorder messages; the inbox store is the truth. A ``Session`` turns both
into one client stream that is, whatever the bus does:

- in seq order and without duplicates: nothing at or below ``last_seq`` is ever sent again;
- gap-free: a live message is sent only when it is exactly ``last_seq + 1``; anything else after a gap comes
  from the store, whose backlog may leave out replaced notifications (the only numbers a stream may skip).

The shell (``gateway/``) calls ``start()``, performs every fetch a ``Step`` asks for (rows with
seq > ``fetch_after``, ascending, at most ``page_size``) and hands the answer to ``backlog()``, and feeds live
messages at any time, also between a fetch request and its answer. At most one fetch is outstanding at a time.
``poll()`` is the periodic safety net for the message lost at the tail, which no later message reveals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Step(NamedTuple):
    """What the shell must do now: send ``send`` (ascending seqs), then, when ``fetch_after`` is not None,
    read the store rows with seq > ``fetch_after`` (at most ``page_size``) and pass them to ``backlog()``.

    A NamedTuple rather than a frozen dataclass: one is made per live message, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) costs twice as much."""

    send: tuple[tuple[int, bytes], ...]
    fetch_after: int | None


_IDLE = Step((), None)


class Session:
    """The delivery state of one connection (four integers and a flag, so a gateway can hold many)."""

    __slots__ = ("_asked_high", "_known_high", "fetching", "last_seq", "page_size")

    def __init__(self, after: int, page_size: int = 500) -> None:
        if after < 0:
            raise ValueError("after must be >= 0")
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.last_seq = after  # highest seq delivered so far
        self.page_size = page_size
        self.fetching = False  # a fetch was requested and its backlog() answer has not come yet
        # The highest seq known to be committed (a live message proved it); meaningful only while fetching.
        self._known_high = after
        self._asked_high = after  # ``_known_high`` when the pending fetch was asked for

    def start(self) -> Step:
        """The resume backlog: everything after ``after``, before any live message is sent."""
        return self._fetch()

    def live(self, seq: int, payload: bytes) -> Step:
        """A message from the live bus; it is published only after its row is committed."""
        if seq <= self.last_seq:
            return _IDLE  # a duplicate, or older than what the store already gave us
        if self.fetching:
            # The answer on its way may predate this row: remember it, so backlog() fetches again if needed.
            self._known_high = max(self._known_high, seq)
            return _IDLE
        if seq == self.last_seq + 1:
            self.last_seq = seq
            return Step(((seq, payload),), None)
        self._known_high = seq
        return self._fetch()

    def next_live(self, seq: int) -> bool:
        """``live``'s common case without a ``Step``: ``seq`` is exactly ``last_seq + 1`` and no fetch is on its
        way; it becomes ``last_seq`` and the caller sends it (True). False changed nothing: call ``live``."""
        if seq == self.last_seq + 1 and not self.fetching:
            self.last_seq = seq
            return True
        return False

    def backlog(self, rows: Sequence[tuple[int, bytes]]) -> Step:
        """The answer to the last fetch: store rows with seq > ``fetch_after``, ascending, at most a page."""
        send = []
        for seq, payload in rows:
            if seq > self.last_seq:  # a defensive filter too: whatever comes in, what goes out ascends
                send.append((seq, payload))
                self.last_seq = seq
        if not send:
            if self._known_high > self._asked_high:
                # A live message proved a newer row while this read was on its way: the read may predate it.
                return self._fetch()
            # Nothing newer and nothing new heard: stop rather than ask again and again (a store replica
            # may lag behind the bus); poll() or the next live message starts the next fetch.
            self._stop()
            return _IDLE
        # A full page may have more behind it; a live message may have proved rows beyond this answer.
        more = len(rows) >= self.page_size or self._known_high > self.last_seq
        if not more:
            self._stop()
            return Step(tuple(send), None)
        self._asked_high = self._known_high  # the next read is asked now: only later live news counts
        return Step(tuple(send), self.last_seq)

    def poll(self) -> Step:
        """A periodic check of the store, for a live message lost after the last one that arrived."""
        return _IDLE if self.fetching else self._fetch()

    def _fetch(self) -> Step:
        self.fetching = True
        self._asked_high = self._known_high
        return Step((), self.last_seq)

    def _stop(self) -> None:
        self.fetching = False
        self._known_high = self.last_seq

"""A bounded per-connection send queue, so one slow consumer cannot grow a gateway's memory.

Overflow policy ``"close"``: the first frame that would pass either limit is refused and the outbox stays
overflowed for good; the shell tells the client to resync and closes the connection (1013). Nothing is lost:
the client resumes from the store with the last seq it saw, and nobody else waits for it.

A frame larger than ``max_bytes`` can never be queued, so ``max_bytes`` must exceed the largest frame (the
producer API's body limit bounds a notification).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

OverflowPolicy = Literal["close"]


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    """A snapshot of one outbox, for metrics and the admin page."""

    frames: int
    bytes: int
    max_frames: int
    max_bytes: int
    overflowed: bool
    pushed_total: int
    drained_total: int


class Outbox:
    """A FIFO of encoded frames bounded by count and by total bytes."""

    __slots__ = ("_drained", "_frames", "_nbytes", "_pushed", "max_bytes", "max_frames", "overflowed")

    policy: Final[OverflowPolicy] = "close"

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError("outbox limits must be >= 1")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.overflowed = False
        self._frames: deque[bytes] = deque()
        self._nbytes = 0
        self._pushed = 0
        self._drained = 0

    def push(self, frame: bytes, *, pulled: bool = False) -> bool:
        """Queue ``frame``; False (not queued, ``overflowed`` set) when a limit would be passed.

        ``pulled`` frames were fetched at the writer's pace (a backlog page, read only once the outbox was
        empty): they are not subject to the limits, which bound what *accumulates* while a write is under way.
        """
        if self.overflowed:
            return False  # once over, always over: the connection is to be closed, not trickled
        over = len(self._frames) >= self.max_frames or self._nbytes + len(frame) > self.max_bytes
        if over and not pulled:
            self.overflowed = True
            return False
        self._frames.append(frame)
        self._nbytes += len(frame)
        self._pushed += 1
        return True

    def drain(self, max_frames: int | None = None) -> list[bytes]:
        """Take up to ``max_frames`` frames (all when None), oldest first, to write in one go."""
        count = len(self._frames) if max_frames is None else max(0, min(max_frames, len(self._frames)))
        taken = [self._frames.popleft() for _ in range(count)]
        self._nbytes -= sum(map(len, taken))
        self._drained += count
        return taken

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        """Total bytes of the queued frames."""
        return self._nbytes

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(
            frames=len(self._frames),
            bytes=self._nbytes,
            max_frames=self.max_frames,
            max_bytes=self.max_bytes,
            overflowed=self.overflowed,
            pushed_total=self._pushed,
            drained_total=self._drained,
        )

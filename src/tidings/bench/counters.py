"""Counters shared between load-client processes and the process that drives the load: one mmap'd file.

Each client process owns one slot of four signed 64-bit little-endian integers: frames received, the
``time.monotonic_ns()`` of the first and of the last frame (CLOCK_MONOTONIC is one clock for every process
of the machine, so times compare across processes), and connections established. A driver sums the slots
to keep a bounded number of messages in flight (end-to-end credit); the node server reads the same file.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

SLOT = struct.Struct("<qqqq")


@dataclass(frozen=True, slots=True)
class SlotValues:
    received: int
    first_ns: int
    last_ns: int
    connected: int


class Counters:
    """``slots`` slots in the file at ``path`` (created zeroed with ``create=True``)."""

    def __init__(self, path: str | Path, slots: int, *, create: bool = False) -> None:
        self.path = str(path)
        self.slots = slots
        size = SLOT.size * slots
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def write(self, slot: int, received: int, first_ns: int, last_ns: int, connected: int) -> None:
        SLOT.pack_into(self._map, slot * SLOT.size, received, first_ns, last_ns, connected)

    def read(self, slot: int) -> SlotValues:
        return SlotValues(*SLOT.unpack_from(self._map, slot * SLOT.size))

    def total_received(self) -> int:
        return sum(self.read(slot).received for slot in range(self.slots))

    def total_connected(self) -> int:
        return sum(self.read(slot).connected for slot in range(self.slots))

    def all(self) -> list[SlotValues]:
        return [self.read(slot) for slot in range(self.slots)]

    def close(self) -> None:
        self._map.close()

"""Fakes that tests and users share."""

from __future__ import annotations


class FakeClock:
    """A ``Clock`` that only moves when told to."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._wall += seconds
        self._mono += seconds

"""Idempotency-Key handling around ``EventLog.append``.

Durable idempotency is the log's job: it stores each key with the event and the request's ``body_hash``,
and on a repeat answers with the first event's id (same body) or ``IdempotencyMismatchError`` (another
body). What the log cannot see is a request whose append has not returned yet; ``InFlight`` tracks those in
this process so that a concurrent repeat answers 409 (as the IETF Idempotency-Key draft says) instead of
racing the first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tidings.errors import IdempotencyInFlightError


class InFlight:
    """The (app, key) pairs whose requests are between validation and the end of their append."""

    def __init__(self) -> None:
        self._held: set[tuple[str, str]] = set()

    def is_held(self, app: str, key: str) -> bool:
        return (app, key) in self._held

    @contextmanager
    def hold(self, app: str, keys: Sequence[str]) -> Iterator[None]:
        """Holds every key for the duration of the block; raises ``IdempotencyInFlightError`` (holding
        nothing) when one is held already. Callers wanting per-item answers filter held keys out first."""
        pairs = {(app, key) for key in keys}
        if pairs & self._held:
            raise IdempotencyInFlightError("a request with this Idempotency-Key is still in flight")
        self._held |= pairs
        try:
            yield
        finally:
            self._held -= pairs

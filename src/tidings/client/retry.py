"""When to try a request again, and after how long: pure functions of the attempt, the failure and a random
draw (supplied by the caller, so tests need no seed).

- Connection failures (refused, reset, timed out) and retryable answers (429, 502-504, 409 for a key still in
  flight) are tried again, at most ``max_attempts`` times in all.
- A ``Retry-After`` from the server is honoured: never sooner (a little later, spread by up to ``base``
  seconds so many clients do not return in the same instant). A hint longer than ``max_wait`` is not waited
  out: the error is raised, with its ``retry_after``, for the caller to decide.
- Otherwise the wait is "full jitter": uniform in [0, min(cap, base * 2**attempt)).
Producer requests are safe to repeat (events carry an idempotency key; topic and profile writes are PUT or
DELETE) except creating a webhook, which is sent once (``retry=False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tidings.client.errors import ApiError
from tidings.core.backoff import full_jitter


@dataclass(frozen=True, slots=True)
class Backoff:
    """Bounds of the retry loop: attempts in all, the jitter window, and the longest server hint waited."""

    max_attempts: int = 5
    base: float = 0.2
    cap: float = 10.0
    max_wait: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")


def retry_delay(backoff: Backoff, attempt: int, failure: Exception, rand: float) -> float | None:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` is 0-based), or None: give up and raise."""
    if attempt + 1 >= backoff.max_attempts:
        return None
    if isinstance(failure, httpx.TransportError):
        return full_jitter(attempt, rand, base=backoff.base, cap=backoff.cap)
    if not isinstance(failure, ApiError) or not failure.retryable:
        return None
    if failure.retry_after is not None:
        if failure.retry_after > backoff.max_wait:
            return None
        return failure.retry_after + rand * backoff.base
    return full_jitter(attempt, rand, base=backoff.base, cap=backoff.cap)

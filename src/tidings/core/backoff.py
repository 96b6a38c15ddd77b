"""Retry schedules as pure functions: the caller supplies the randomness, so tests need no seed or mock."""

from __future__ import annotations

# 2.0 ** 1024 overflows a float; far earlier than that, every schedule has reached its cap.
_MAX_EXPONENT = 1023


def full_jitter(attempt: int, rand: float, *, base: float = 0.1, cap: float = 30.0) -> float:
    """The delay before retry number ``attempt`` (0-based): ``rand * min(cap, base * 2**attempt)``.

    "Full jitter" spreads the retries of many clients over the whole window, so a backend that comes back
    is not hit by all of them at once. ``rand`` is uniform in [0, 1); any ``attempt`` >= 0 is fine.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    _check_rand(rand)
    # A float product can reach inf but never raises; min() then picks the cap.
    return rand * min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))


def jittered(value: float, rand: float, spread: float = 0.5) -> float:
    """``value`` moved by up to ±``spread`` of itself: ``value * (1 - spread + 2 * spread * rand)``.

    For the reconnect hints a gateway gives its clients, so a restart does not bring them all back at once.
    """
    if not 0.0 <= spread <= 1.0:
        raise ValueError("spread must be in [0, 1]")
    _check_rand(rand)
    return value * (1.0 - spread + 2.0 * spread * rand)


def _check_rand(rand: float) -> None:
    if not 0.0 <= rand < 1.0:
        raise ValueError("rand must be in [0, 1)")

"""What an authenticated WebSocket connection may still do, sans I/O: its token's lifetime and its frame budget.

Two decisions the gateway makes about a connection after ``ready``, each with the time passed in (the I/O layer
reads its clock; tests give a fake one):

- ``Lifetime``: a connection lives as long as the token it authenticated with. At the token's ``exp`` the client
  is told once (``WARN``: the ``token_expired`` frame) and has ``grace`` seconds to send a fresh token in-band;
  then the connection ends (``CLOSE``). ``renew`` (a fresh token of the same user was accepted) starts over with
  the new expiry, so a client that refreshes keeps one connection for ever.
- ``TokenBucket``: every client frame after auth takes one token from a bucket of ``burst`` tokens refilled at
  ``rate`` per second; a frame that finds it empty means the client floods, and the gateway closes it. One
  connection's bucket never delays another's frames: a flooder costs its own connection, nobody else's.
"""

from __future__ import annotations

from enum import Enum


class Due(Enum):
    """What the token's lifetime asks for now."""

    NOTHING = "nothing"
    WARN = "warn"  # the token expired just now: send the token_expired frame (once per token)
    CLOSE = "close"  # the grace period passed without a fresh token: end the connection


class Lifetime:
    """The expiry of the token a connection authenticated with (wall-clock seconds, as JWT ``exp`` is)."""

    __slots__ = ("_warned", "expires_at", "grace")

    def __init__(self, expires_at: float, grace: float) -> None:
        if grace < 0:
            raise ValueError("grace must be >= 0")
        self.expires_at = expires_at
        self.grace = grace
        self._warned = False

    @property
    def next_due(self) -> float:
        """The wall-clock time at which ``check`` will next answer something other than ``NOTHING``."""
        return self.expires_at + self.grace if self._warned else self.expires_at

    def check(self, now: float) -> Due:
        """What is due at ``now``: ``WARN`` once per token at its expiry, ``CLOSE`` from expiry + grace on (also
        when nothing was warned: a check that comes that late, or ``grace`` 0, ends the connection at once)."""
        if now < self.expires_at:
            return Due.NOTHING
        deadline = self.expires_at + self.grace
        if not self._warned:
            self._warned = True
            return Due.WARN if now < deadline else Due.CLOSE
        return Due.CLOSE if now >= deadline else Due.NOTHING

    def renew(self, expires_at: float) -> None:
        """A fresh token was accepted: its expiry counts from now on, and it will be warned about in turn."""
        self.expires_at = expires_at
        self._warned = False


class TokenBucket:
    """``burst`` frames at once, ``rate`` per second sustained (monotonic seconds)."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> bool:
        """Take one token for a frame arriving at ``now``; False when the bucket is empty (a flood)."""
        elapsed = max(0.0, now - self._at)
        self._at = max(self._at, now)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

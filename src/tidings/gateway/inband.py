"""What a live connection's client does after ``ready``: its frames (WebSocket), its flood budget and its token's
lifetime, for every shell. The decisions are pure (``core.guard``); this module reads the runtime's clock, runs
the timer and performs them on the ``LiveStream``.

- ``Watch`` (WebSocket and SSE): at the token's ``exp`` the client gets a ``token_expired`` frame (SSE: event)
  and ``token_grace`` seconds later the stream ends with ``EndReason.TOKEN_EXPIRED`` (1008 / SSE ``event:
  error``), unless a fresh token was accepted in-band meanwhile (WebSocket only).
- ``InBand`` (WebSocket): every client frame takes a token from the connection's bucket (``ws_client_rate``
  per second, ``ws_client_burst`` at once); an empty bucket ends the stream (``RATE_LIMITED``, 1008). A ping is
  answered with a pong; an auth frame re-authenticates: same app and user, else the stream ends (1008).

A stream ended here closes through the usual path (``gateway.serve`` asks ``admission.for_end`` what to send),
so the shells add nothing but "hand every client frame to ``receive``".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from tidings.auth import AppCache
from tidings.core import frames
from tidings.core.connection import EndReason
from tidings.core.guard import Due, Lifetime, TokenBucket
from tidings.errors import FrameError, TidingsError
from tidings.gateway import admission
from tidings.gateway.admission import Refused
from tidings.gateway.stream import LiveStream
from tidings.runtime import Runtime

log = structlog.get_logger("tidings.gateway.inband")

# A refused re-auth ends the stream for the reason its error code names (``admission.for_end`` maps it back).
_REFUSED_ENDS = {
    "token_expired": EndReason.TOKEN_EXPIRED,
    "user_mismatch": EndReason.USER_MISMATCH,
}


def ws_warning(grace: float) -> bytes:
    return frames.encode_token_expired(grace)


def sse_warning(grace: float) -> bytes:
    return frames.sse_event("token_expired", frames.encode_token_expired(grace))


class Watch:
    """The timer of one stream's token lifetime: ``start`` it beside the stream, ``stop`` it after.

    A loop timer (``call_later``), not a task: a few hundred bytes per connection, one wake-up at the due time
    and at least every ``token_check_interval`` (a clock stepped by NTP, or moved by a test, is read again)."""

    def __init__(
        self,
        runtime: Runtime,
        stream: LiveStream,
        expires_at: float,
        warning: Callable[[float], bytes] = ws_warning,
    ) -> None:
        self._runtime, self._stream, self._warning = runtime, stream, warning
        self.lifetime = Lifetime(expires_at, runtime.settings.token_grace)
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False

    def start(self) -> None:
        self._check()

    async def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def renew(self, expires_at: float) -> None:
        self.lifetime.renew(expires_at)
        if not self._stopped:
            if self._timer is not None:
                self._timer.cancel()
            self._check()

    def _check(self) -> None:
        self._timer = None
        stream, lifetime, clock = self._stream, self.lifetime, self._runtime.clock
        if self._stopped or stream.end_reason is not None:
            return
        due = lifetime.check(clock.time())
        if due is Due.WARN:
            stream.push_control(self._warning(lifetime.grace))
        elif due is Due.CLOSE:
            stream.end(EndReason.TOKEN_EXPIRED)
            return
        poll = self._runtime.settings.token_check_interval
        wait = min(poll, max(0.0, lifetime.next_due - clock.time()))
        self._timer = asyncio.get_running_loop().call_later(wait, self._check)


class InBand:
    """The client frames after ``ready`` on one WebSocket connection, with its lifetime ``watch`` (``expires_at``:
    the ``exp`` of the token it authenticated with, ``admission.expiry``)."""

    def __init__(
        self, runtime: Runtime, stream: LiveStream, expires_at: float, cache: AppCache | None = None
    ) -> None:
        settings = runtime.settings
        self._runtime, self._stream, self._cache = runtime, stream, cache
        self._bucket = TokenBucket(
            settings.ws_client_rate, settings.ws_client_burst, runtime.clock.monotonic()
        )
        self.watch = Watch(runtime, stream, expires_at)
        self._reauth: asyncio.Task[None] | None = None

    def spend(self) -> bool:
        """Take one frame's token from the bucket (a WebSocket control frame the shell answers itself counts
        too); False when the client floods: the stream is then ended (``RATE_LIMITED``)."""
        stream = self._stream
        if stream.end_reason is not None:
            return False
        if not self._bucket.take(self._runtime.clock.monotonic()):
            stream.end(EndReason.RATE_LIMITED)
            return False
        return True

    def receive(self, data: str | bytes) -> Refused | None:
        """One client frame. Answers a refusal for the shell to send at once (a malformed frame); a flood or a
        refused re-auth ends the stream instead, and its close says why."""
        if not self.spend():
            return None
        stream = self._stream
        try:
            frame = frames.parse_client_frame(data)
        except FrameError as exc:
            return admission.invalid_frame(exc)
        if isinstance(frame, frames.PingFrame):
            stream.push_control(frames.encode_pong())
        elif isinstance(frame, frames.AuthFrame):
            # One re-auth at a time: a newer token replaces one still being checked.
            if self._reauth is not None:
                self._reauth.cancel()
            self._reauth = asyncio.get_running_loop().create_task(self._reauthenticate(frame.token))
        return None

    def start(self) -> None:
        self.watch.start()

    async def stop(self) -> None:
        await self.watch.stop()
        if self._reauth is not None:
            task, self._reauth = self._reauth, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _reauthenticate(self, token: str) -> None:
        stream = self._stream
        try:
            expires_at = await admission.reauthenticate(
                self._runtime, token, stream.app, stream.user, self._cache
            )
        except Refused as refused:
            stream.end(_REFUSED_ENDS.get(refused.code, EndReason.UNAUTHORIZED))
            return
        except (
            TidingsError
        ) as exc:  # e.g. the store is unavailable: the old expiry stands; the client may retry
            log.warning("reauth_failed", error=exc.code)
            return
        self.watch.renew(expires_at)
        stream.push_control(frames.encode_reauthed(expires_at))

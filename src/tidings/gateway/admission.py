"""Who may open a live WebSocket stream, and how a refusal is worded: shared by every WebSocket shell.

A shell (``websocket.py`` on uvicorn, ``listener.py`` on a plain asyncio transport) hands over the client's
first frame and the handshake's ``Origin`` and ``Host`` headers; ``admit`` answers with the app, the user and
the resume point, or raises ``Refused`` carrying the error code, message and close code to send. Close codes
come from ``api.errors`` only, so both shells refuse identically.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from tidings.api import errors
from tidings.auth import AppCache, authenticate_user_until
from tidings.core import frames
from tidings.core.connection import EndReason
from tidings.core.models import App
from tidings.errors import AuthError, FrameError, TidingsError
from tidings.runtime import Runtime


class Refused(Exception):
    """The stream is refused or ended: send an error frame with ``code``/``message``, then close."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code, self.message, self.close_code = code, message, close_code

    def error_frame(self) -> bytes:
        return frames.encode_error(self.code, self.message)


DRAINING = Refused("draining", "server is restarting", errors.WS_DRAINING)
AUTH_TIMEOUT = Refused("auth_timeout", "no auth frame in time", errors.WS_POLICY)
TOKEN_EXPIRED = Refused("token_expired", "the token has expired: get a fresh one", errors.WS_POLICY)
RATE_LIMITED = Refused("rate_limited", "too many frames: slow down", errors.WS_POLICY)
UNAUTHORIZED = Refused("unauthorized", "invalid credentials", errors.WS_POLICY)
USER_MISMATCH = Refused(
    "user_mismatch", "a re-auth token must be for the same app and user", errors.WS_POLICY
)


class Admitted(NamedTuple):
    """Who may stream: the app and user of the token, the resume point of the auth frame, and the token's
    ``exp`` (the connection's lifetime, ``gateway.inband``)."""

    app: App
    user: str
    after: int | None
    expires_at: float


async def admit(
    runtime: Runtime,
    data: str | bytes,
    origin: str | None,
    host: str,
    cache: AppCache | None = None,
    *,
    scheme: str = "http",
) -> Admitted:
    """Check the first client frame (an auth frame) and the browser's origin; ``Refused`` when not admitted,
    also when the store fails looking the app up (``unavailable``, close 1012: the client resumes later), so no
    shell meets a backend's error here."""
    try:
        frame = frames.parse_client_frame(data)
    except FrameError as exc:
        raise Refused(exc.code, exc.message, errors.WS_INVALID_FRAME) from None
    if not isinstance(frame, frames.AuthFrame):
        raise Refused("auth_required", "the first frame must be an auth frame", errors.WS_POLICY)
    try:
        app, user, expires_at = await authenticate_user_until(runtime, frame.token, cache)
    except AuthError as exc:
        # An expired token is told apart (the client refreshes it and reconnects); any other refusal is
        # "unauthorized" with no detail, so a probe learns nothing about apps or secrets.
        if exc.reason == "token_expired":
            raise Refused(
                "token_expired", "the token has expired: get a fresh one", errors.WS_POLICY
            ) from None
        raise Refused(exc.code, "invalid credentials", errors.WS_POLICY) from None
    except TidingsError as exc:  # the app's lookup failed (a dry pool in a storm): back off and resume
        raise failed(exc) from None
    if not origin_allowed(origin, host, app, scheme):
        raise Refused("origin_not_allowed", "this origin may not connect", errors.WS_POLICY)
    return Admitted(app, user, frame.after, expires_at)


def origin_allowed(origin: str | None, host: str, app: App, scheme: str = "http") -> bool:
    """Browsers send Origin; other clients need not. An app without origins allows only our own origin: the same
    host and port, and the same scheme (``http``/``https``) as the client reached us by."""
    if origin is None:
        return True
    if app.origins:
        return origin in app.origins
    parts = urlsplit(origin)
    return parts.scheme == scheme and parts.netloc == host


def invalid_frame(exc: FrameError) -> Refused:
    return Refused(exc.code, exc.message, errors.WS_INVALID_FRAME)


def failed(exc: TidingsError) -> Refused:
    """A backend failed under a stream (e.g. the store is unavailable): the client resumes later."""
    return Refused(exc.code, "try again later", errors.close_code_for(exc))


def for_end(reason: EndReason | None) -> Refused | None:
    """What to tell a client whose stream ended for ``reason`` (None: just close)."""
    if reason is EndReason.SLOW_CONSUMER:
        return Refused("slow_consumer", "resume with after=<last seq>", errors.WS_TRY_AGAIN)
    if reason is EndReason.DRAINING:
        return Refused("draining", "server is restarting; resume", errors.WS_DRAINING)
    return _GUARD_ENDS.get(reason) if reason is not None else None


# --- after ready: the token's lifetime and in-band re-auth (``gateway.inband``) ---------------------------------

_GUARD_ENDS = {
    EndReason.TOKEN_EXPIRED: TOKEN_EXPIRED,
    EndReason.RATE_LIMITED: RATE_LIMITED,
    EndReason.UNAUTHORIZED: UNAUTHORIZED,
    EndReason.USER_MISMATCH: USER_MISMATCH,
}


async def reauthenticate(
    runtime: Runtime, token: str, app: str, user: str, cache: AppCache | None = None
) -> float:
    """An in-band re-auth on an open connection of ``user`` of ``app``: the fresh token's ``exp``, or
    ``Refused`` (1008) when it does not verify (``unauthorized``), has expired (``token_expired``) or belongs to
    another user or app (``user_mismatch``)."""
    try:
        fresh_app, fresh_user, expires_at = await authenticate_user_until(runtime, token, cache)
    except AuthError as exc:
        raise (TOKEN_EXPIRED if exc.reason == "token_expired" else UNAUTHORIZED) from None
    if fresh_app.name != app or fresh_user != user:
        raise USER_MISMATCH
    return expires_at

"""The WebSocket shell: ``GET /v1/ws``. Protocol decisions live in ``core`` (frames, session) and in
``gateway.stream``; this module only moves bytes between them and the socket."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from tidings.api import errors
from tidings.api.auth import authenticate_user
from tidings.core import frames
from tidings.core.models import App
from tidings.errors import AuthError, FrameError, TidingsError
from tidings.gateway.stream import EndReason, LiveStream
from tidings.observability import metrics
from tidings.runtime import Runtime

log = structlog.get_logger("tidings.gateway.websocket")


class _Refused(Exception):
    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code, self.message, self.close_code = code, message, close_code


async def websocket_endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    await websocket.accept()
    if runtime.draining:
        await _refuse(websocket, _Refused("draining", "server is restarting", errors.WS_DRAINING))
        return
    try:
        app, user, after = await _authenticate(websocket, runtime)
    except _Refused as refused:
        await _refuse(websocket, refused)
        return
    except WebSocketDisconnect:
        return
    await _serve(websocket, runtime, app, user, after)


async def _authenticate(websocket: WebSocket, runtime: Runtime) -> tuple[App, str, int | None]:
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout=runtime.settings.auth_timeout)
    except TimeoutError:
        raise _Refused("auth_timeout", "no auth frame in time", errors.WS_POLICY) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        frame = frames.parse_client_frame(_data(message))
    except FrameError as exc:
        raise _Refused(exc.code, exc.message, errors.WS_INVALID_FRAME) from None
    if not isinstance(frame, frames.AuthFrame):
        raise _Refused("auth_required", "the first frame must be an auth frame", errors.WS_POLICY)
    try:
        app, user = await authenticate_user(runtime, frame.token)
    except AuthError as exc:
        raise _Refused(exc.code, "invalid credentials", errors.WS_POLICY) from None
    if not _origin_allowed(websocket, app):
        raise _Refused("origin_not_allowed", "this origin may not connect", errors.WS_POLICY)
    return app, user, frame.after


def _origin_allowed(websocket: WebSocket, app: App) -> bool:
    """Browsers send Origin; other clients need not. An app without origins allows only our own origin."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    if app.origins:
        return origin in app.origins
    own_host = websocket.headers.get("host", "")
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == own_host


async def _serve(websocket: WebSocket, runtime: Runtime, app: App, user: str, after: int | None) -> None:
    stream = LiveStream(
        runtime,
        app.name,
        user,
        transport="ws",
        encode=lambda _seq, payload: frames.encode_notification(payload),
        heartbeat=frames.encode_ping,
    )
    gateway = runtime.hub
    connections = metrics.connections.labels(transport="ws")
    connections.inc()
    gateway.register(stream)
    reader = asyncio.create_task(_read(websocket, stream))
    try:
        last_seq = await stream.open(after)
        await _send(websocket, [frames.encode_ready(user, last_seq)])
        async for batch in stream.batches():
            await _send(websocket, batch)
            metrics.deliveries_total.labels(transport="ws", result="sent").inc(len(batch))
    except (WebSocketDisconnect, OSError, RuntimeError):
        stream.end(EndReason.CLIENT_GONE)
    except TidingsError as exc:  # e.g. the store became unavailable: the client resumes elsewhere or later
        log.warning("stream_failed", error=exc.code)
        await _refuse(websocket, _Refused(exc.code, "try again later", errors.close_code_for(exc)))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        gateway.unregister(stream)
        connections.dec()
        await stream.close()
    await _close_for(websocket, stream.end_reason)


async def _read(websocket: WebSocket, stream: LiveStream) -> None:
    """Client frames after auth: ping (answered with pong) and pong; anything else ends the connection."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            stream.end(EndReason.CLIENT_GONE)
            return
        try:
            frame = frames.parse_client_frame(_data(message))
        except FrameError as exc:
            await _refuse(websocket, _Refused(exc.code, exc.message, errors.WS_INVALID_FRAME))
            stream.end(EndReason.CLIENT_GONE)
            return
        if isinstance(frame, frames.PingFrame):
            stream.push_control(frames.encode_pong())
        elif isinstance(frame, frames.AuthFrame):
            await _refuse(
                websocket, _Refused("already_authenticated", "auth was already done", errors.WS_POLICY)
            )
            stream.end(EndReason.CLIENT_GONE)
            return


async def _close_for(websocket: WebSocket, reason: EndReason | None) -> None:
    if reason is EndReason.SLOW_CONSUMER:
        await _refuse(
            websocket, _Refused("slow_consumer", "resume with after=<last seq>", errors.WS_TRY_AGAIN)
        )
    elif reason is EndReason.DRAINING:
        await _refuse(websocket, _Refused("draining", "server is restarting; resume", errors.WS_DRAINING))


async def _refuse(websocket: WebSocket, refused: _Refused) -> None:
    """An error frame, then the close code; a peer that is already gone is not an error."""
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await websocket.send_text(frames.encode_error(refused.code, refused.message).decode())
        await websocket.close(refused.close_code)


async def _send(websocket: WebSocket, batch: list[bytes]) -> None:
    for frame in batch:
        await websocket.send_text(frame.decode())


def _data(message: object) -> str | bytes:
    assert isinstance(message, dict)
    text = message.get("text")
    if text is not None:
        return str(text)
    return bytes(message.get("bytes") or b"")

"""The WebSocket shell on uvicorn/Starlette: ``GET /v1/ws``. Protocol decisions live in ``core`` (frames,
session), in ``gateway.stream`` and in ``gateway.admission`` (shared with ``gateway.fastws``); this module only
moves bytes between them and the ASGI socket."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from tidings.core import frames
from tidings.core.models import App
from tidings.errors import FrameError, TidingsError
from tidings.gateway import admission
from tidings.gateway.admission import Refused
from tidings.gateway.stream import EndReason, LiveStream
from tidings.observability import metrics
from tidings.runtime import Runtime

log = structlog.get_logger("tidings.gateway.websocket")


async def websocket_endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    await websocket.accept()
    if runtime.draining:
        await _refuse(websocket, admission.DRAINING)
        return
    try:
        app, user, after = await _authenticate(websocket, runtime)
    except Refused as refused:
        await _refuse(websocket, refused)
        return
    except WebSocketDisconnect:
        return
    await _serve(websocket, runtime, app, user, after)


async def _authenticate(websocket: WebSocket, runtime: Runtime) -> tuple[App, str, int | None]:
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout=runtime.settings.auth_timeout)
    except TimeoutError:
        raise admission.AUTH_TIMEOUT from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    origin = websocket.headers.get("origin")
    return await admission.admit(runtime, _data(message), origin, websocket.headers.get("host", ""))


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
        await _refuse(websocket, admission.failed(exc))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        gateway.unregister(stream)
        connections.dec()
        await stream.close()
    refused = admission.for_end(stream.end_reason)
    if refused is not None:
        await _refuse(websocket, refused)


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
            await _refuse(websocket, admission.invalid_frame(exc))
            stream.end(EndReason.CLIENT_GONE)
            return
        if isinstance(frame, frames.PingFrame):
            stream.push_control(frames.encode_pong())
        elif isinstance(frame, frames.AuthFrame):
            await _refuse(websocket, admission.ALREADY_AUTHENTICATED)
            stream.end(EndReason.CLIENT_GONE)
            return


async def _refuse(websocket: WebSocket, refused: Refused) -> None:
    """An error frame, then the close code; a peer that is already gone is not an error."""
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await websocket.send_text(refused.error_frame().decode())
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

"""The WebSocket shell on uvicorn/Starlette: ``GET /v1/ws``. Protocol decisions live in ``core`` (frames, the
connection core), in the loop of ``gateway.serve`` and in ``gateway.admission`` (shared with
``gateway.listener``); this module only moves bytes between them and the ASGI socket."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect

from tidings.core.models import App
from tidings.gateway import admission, serve
from tidings.gateway.admission import Refused
from tidings.gateway.inband import InBand
from tidings.gateway.stream import EndReason, LiveStream
from tidings.runtime import Runtime


async def websocket_endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    await websocket.accept()
    if runtime.draining:
        await _refuse(websocket, admission.DRAINING)
        return
    try:
        app, user, after, expires_at = await _authenticate(websocket, runtime)
    except Refused as refused:
        await _refuse(websocket, refused)
        return
    except WebSocketDisconnect:
        return
    await _serve(websocket, runtime, app, user, after, expires_at)


async def _authenticate(websocket: WebSocket, runtime: Runtime) -> tuple[App, str, int | None, float]:
    """The app, the user, the resume point and the token's exp (the connection's lifetime)."""
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout=runtime.settings.auth_timeout)
    except TimeoutError:
        raise admission.AUTH_TIMEOUT from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    origin = websocket.headers.get("origin")
    # ws/wss as uvicorn saw it (its proxy_headers rule may take a trusted proxy's X-Forwarded-Proto)
    scheme = "https" if websocket.scope.get("scheme") in ("wss", "https") else "http"
    host = websocket.headers.get("host", "")
    return await admission.admit(runtime, _data(message), origin, host, scheme=scheme)


async def _serve(
    websocket: WebSocket, runtime: Runtime, app: App, user: str, after: int | None, expires_at: float
) -> None:
    stream = LiveStream(runtime, app.name, user, transport="ws", record=app)
    inband = InBand(runtime, stream, expires_at)
    reader = asyncio.create_task(_read(websocket, stream, inband))
    transport = _Transport(websocket, reader)
    try:
        await serve.serve(runtime, stream, after, serve.websocket_ready, transport, inband)
    finally:
        await _stop(reader)


class _Transport:
    """The ``serve.Transport`` of one ASGI socket: one ASGI message per frame (the ASGI contract)."""

    __slots__ = ("_reader", "_websocket")

    def __init__(self, websocket: WebSocket, reader: asyncio.Task[None]) -> None:
        self._websocket, self._reader = websocket, reader

    async def send(self, batch: list[bytes]) -> None:
        try:
            for frame in batch:
                await self._websocket.send_text(frame.decode())
        except (WebSocketDisconnect, OSError, RuntimeError):
            raise serve.Gone from None

    async def close(self, refused: Refused | None) -> None:
        await _stop(self._reader)  # the client's frames are no longer read once the stream is over
        if refused is not None:
            await _refuse(self._websocket, refused)


async def _stop(reader: asyncio.Task[None]) -> None:
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


async def _read(websocket: WebSocket, stream: LiveStream, inband: InBand) -> None:
    """Client frames after auth, to ``gateway.inband`` (ping, pong, re-auth, the flood budget); a malformed one
    ends the connection."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            stream.end(EndReason.CLIENT_GONE)
            return
        refused = inband.receive(_data(message))
        if refused is not None:
            await _refuse(websocket, refused)
            stream.end(EndReason.CLIENT_GONE)
            return


async def _refuse(websocket: WebSocket, refused: Refused) -> None:
    """An error frame, then the close code; a peer that is already gone is not an error."""
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await websocket.send_text(refused.error_frame().decode())
        await websocket.close(refused.close_code)


def _data(message: object) -> str | bytes:
    assert isinstance(message, dict)
    text = message.get("text")
    if text is not None:
        return str(text)
    return bytes(message.get("bytes") or b"")

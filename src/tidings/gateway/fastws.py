"""The gateway's WebSocket shell on a plain asyncio transport (no ASGI): ``GET /v1/ws``.

Why it exists (docs/decisions/0002-gateway-websocket-server.md): the ASGI shell sends one message per
``send_text`` through uvicorn and websockets, which bounds a process at a fraction of what the socket can take.
Here the opening handshake and the client's frames go through websockets' sans-I/O ``ServerProtocol`` (the
RFC 6455 details: key check, masking, control frames, size limit, close handshake), while server frames are
framed by this module and every frame queued for a connection leaves in ONE ``transport.write``.

The protocol is the same as ``websocket.py``'s: admission (auth frame, origin) comes from ``gateway.admission``
and the stream from ``gateway.stream.LiveStream``; this module only moves bytes. Invariants:

- nothing is written after a close frame: writes go through ``_write``, which stops once a refusal was sent;
- a write that fills the transport's buffer pauses the stream's writer (``pause_writing``); frames meanwhile
  accumulate in the stream's bounded outbox, whose overflow closes the connection as a slow consumer (1013);
- every connection is closed within ``CLOSE_TIMEOUT`` of its close frame, answered or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import structlog
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from tidings.api import errors
from tidings.api.auth import AppCache
from tidings.core import frames
from tidings.errors import FrameError, TidingsError
from tidings.gateway import admission
from tidings.gateway.admission import Refused
from tidings.gateway.stream import EndReason, LiveStream
from tidings.observability import metrics
from tidings.runtime import Runtime

log = structlog.get_logger("tidings.gateway.fastws")

PATH = "/v1/ws"
CLOSE_TIMEOUT = 5.0  # seconds a peer has to answer our close frame before the socket is dropped
MAX_EARLY_MESSAGES = 16  # client messages buffered while the auth frame is being checked
BACKLOG = 4096  # pending TCP connections: a reconnect storm must not be refused by the kernel

_TEXT_SHORT = [bytes((0x81, n)) for n in range(126)]  # FIN + text opcode, 7-bit length: the common case
_TEXT_16 = struct.Struct("!BBH")
_TEXT_64 = struct.Struct("!BBQ")


def frame_header(size: int) -> bytes:
    """The header of an unmasked, final text frame of ``size`` payload bytes (a server frame)."""
    if size < 126:
        return _TEXT_SHORT[size]
    if size < 65536:
        return _TEXT_16.pack(0x81, 126, size)
    return _TEXT_64.pack(0x81, 127, size)


def encode_frames(batch: list[bytes]) -> bytes:
    """Text frames for ``batch``, back to back: what one write sends."""
    parts: list[bytes] = []
    for payload in batch:
        parts.append(frame_header(len(payload)))
        parts.append(payload)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    connections: int
    frames_sent: int
    writes: int


class FastGateway:
    """A ``/v1/ws`` listener on ``host:port`` driving ``LiveStream``s of ``runtime``.

    ``reuse_port`` lets several processes share one port (the kernel spreads connections across them).
    """

    def __init__(self, runtime: Runtime, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.runtime = runtime
        self.host, self.port, self._reuse_port = host, port, reuse_port
        self.app_cache = AppCache(runtime.clock)
        self.connections: set[_Connection] = set()
        self.frames_sent = 0
        self.writes = 0
        self._server: asyncio.Server | None = None
        self._all_gone = asyncio.Event()  # set when the last connection is gone (for ``close``)
        self.sent_metric = metrics.deliveries_total.labels(transport="ws", result="sent")
        self.open_metric = metrics.connections.labels(transport="ws")

    async def start(self) -> int:
        """Binds and starts accepting; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_port=self._reuse_port, backlog=BACKLOG
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_gone.set()

    def statistics(self) -> GatewayStatistics:
        return GatewayStatistics(len(self.connections), self.frames_sent, self.writes)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stops accepting, tells every client to resume elsewhere (1012), waits up to ``timeout``."""
        if self._server is not None:
            self._server.close()
        for connection in tuple(self.connections):
            connection.drain()
        if self.connections:
            self._all_gone.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), timeout)
        for connection in tuple(self.connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()


class _Connection(asyncio.Protocol):
    """One client socket: handshake -> auth frame -> stream, then the close handshake."""

    def __init__(self, gateway: FastGateway) -> None:
        self._gateway = gateway
        self._runtime = gateway.runtime
        self._ws = ServerProtocol(max_size=self._runtime.settings.max_frame_bytes)
        self._transport: asyncio.Transport | None = None
        self._origin: str | None = None
        self._host = ""
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._stream: LiveStream | None = None
        self._early: list[bytes] | None = None  # messages that arrived while auth was checked
        self._fragments: list[bytes] = []
        self._writable: asyncio.Future[None] | None = None  # set while the transport is paused
        self._refused = False

    # --- asyncio.Protocol -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._gateway.connections.add(self)
        # One deadline for the handshake and the auth frame: a silent socket costs nothing for long.
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._runtime.settings.auth_timeout, self._auth_timed_out)

    def data_received(self, data: bytes) -> None:
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._flush()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._flush()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._gateway.forget(self)
        self._cancel_timer()
        if self._stream is not None:
            self._stream.end(EndReason.CLIENT_GONE)
        elif self._task is not None:
            self._task.cancel()  # still authenticating: nobody to serve
        self._release_writer()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._release_writer()

    # --- control from the gateway -----------------------------------------------------------------------------

    def drain(self) -> None:
        """Graceful shutdown: streams end with 1012 through the hub; anyone not streaming yet is told here."""
        if self._stream is not None:
            self._stream.end(EndReason.DRAINING)
        elif self._ws.state is State.OPEN:
            self._refuse(admission.DRAINING)
        elif self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- handshake and client frames --------------------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        if urlsplit(request.path).path != PATH:
            response = self._ws.reject(404, "Not Found\n")
        else:
            response = self._ws.accept(request)
        self._ws.send_response(response)
        if response.status_code != 101:
            return
        self._origin = request.headers.get("Origin")
        self._host = request.headers.get("Host", "")
        if self._runtime.draining:
            self._refuse(admission.DRAINING)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            if self._stream is not None:
                self._stream.end(EndReason.CLIENT_GONE)
            return
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            return  # ping/pong: the protocol object answers pings itself
        self._fragments.append(bytes(frame.data))
        if sum(map(len, self._fragments)) > frames.MAX_CLIENT_FRAME_BYTES:
            self._refuse(admission.invalid_frame(FrameError("frame too large")))
        elif frame.fin:
            message, self._fragments = b"".join(self._fragments), []
            self._on_message(message)

    def _on_message(self, message: bytes) -> None:
        if self._refused:
            return
        if self._task is None:
            self._cancel_timer()
            self._early = []
            self._task = asyncio.get_running_loop().create_task(self._run(message))
        elif self._stream is None:
            assert self._early is not None
            self._early.append(message)
            if len(self._early) > MAX_EARLY_MESSAGES:
                self._refuse(Refused("too_many_frames", "wait for the ready frame", errors.WS_POLICY))
        else:
            self._on_client_frame(self._stream, message)

    def _on_client_frame(self, stream: LiveStream, message: bytes) -> None:
        """Client frames after auth: ping (answered with pong) and pong; anything else ends the connection."""
        try:
            frame = frames.parse_client_frame(message)
        except FrameError as exc:
            self._refuse(admission.invalid_frame(exc))
            return
        if isinstance(frame, frames.PingFrame):
            stream.push_control(frames.encode_pong())
        elif isinstance(frame, frames.AuthFrame):
            self._refuse(admission.ALREADY_AUTHENTICATED)

    def _auth_timed_out(self) -> None:
        self._timer = None
        if self._ws.state is State.OPEN:
            self._refuse(admission.AUTH_TIMEOUT)
        else:
            self.abort()  # not even a handshake in time

    # --- the stream -------------------------------------------------------------------------------------------

    async def _run(self, first: bytes) -> None:
        runtime = self._runtime
        try:
            app, user, after = await admission.admit(
                runtime, first, self._origin, self._host, self._gateway.app_cache
            )
        except Refused as refused:
            self._refuse(refused)
            return
        if self._refused:
            return
        stream = self._stream = LiveStream(
            runtime,
            app.name,
            user,
            transport="ws",
            encode=lambda _seq, payload: frames.encode_notification(payload),
            heartbeat=frames.encode_ping,
        )
        for message in self._early or ():
            self._on_client_frame(stream, message)
        self._early = None
        await self._serve(stream, user, after)

    async def _serve(self, stream: LiveStream, user: str, after: int | None) -> None:
        hub = self._runtime.hub
        hub.register(stream)
        self._gateway.open_metric.inc()
        try:
            last_seq = await stream.open(after)
            self._write([frames.encode_ready(user, last_seq)])
            async for batch in stream.batches():
                self._write(batch)
                if self._writable is not None:
                    await self._writable  # the socket is full: let the outbox absorb (or overflow)
        except TidingsError as exc:  # e.g. the store became unavailable: the client resumes later
            log.warning("stream_failed", error=exc.code)
            self._refuse(admission.failed(exc))
        finally:
            hub.unregister(stream)
            self._gateway.open_metric.dec()
            await stream.close()
        refused = admission.for_end(stream.end_reason)
        if refused is not None:
            self._refuse(refused)

    # --- writing ----------------------------------------------------------------------------------------------

    def _write(self, batch: list[bytes]) -> None:
        transport = self._transport
        if self._refused or transport is None or transport.is_closing():
            return
        transport.write(encode_frames(batch))
        gateway = self._gateway
        gateway.frames_sent += len(batch)
        gateway.writes += 1
        gateway.sent_metric.inc(len(batch))

    def _refuse(self, refused: Refused) -> None:
        """An error frame, then the close frame; the socket closes once the peer answers or time is up."""
        if self._stream is not None:
            self._stream.end(EndReason.CLIENT_GONE)
        if self._refused or self._ws.state is not State.OPEN:
            return
        self._refused = True
        self._ws.send_text(refused.error_frame())
        self._ws.send_close(refused.close_code)
        self._flush()
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._ws.data_to_send():
            if data:
                if not transport.is_closing():
                    transport.write(data)
            else:
                transport.close()  # end of the close handshake, or a refused handshake

    def _release_writer(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

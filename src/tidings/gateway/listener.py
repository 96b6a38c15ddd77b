"""The gateway's WebSocket listener on a plain asyncio transport (no ASGI): ``GET /v1/ws``; the server behind
``--ws-server fastws``.

Why it exists (docs/decisions/0002-gateway-websocket-server.md): the ASGI shell sends one message per
``send_text`` through uvicorn and websockets, which bounds a process at a fraction of what the socket can take.
Here the RFC 6455 wire (handshake, client frames, server frame headers) comes from the sans-I/O
``gateway.rfc6455``, and every frame queued for a connection leaves in ONE ``transport.write``.

The protocol is the same as ``websocket.py``'s: admission (auth frame, origin) comes from ``gateway.admission``
and the stream from the loop in ``gateway.serve``; this module only moves bytes. Invariants:

- nothing is written after a close frame: writes go through ``send``, which stops once a refusal was sent;
- a write that fills the transport's buffer pauses the stream's writer (``pause_writing``); frames meanwhile
  accumulate in the connection core's bounded outbox, whose overflow closes the connection as a slow consumer (1013);
- every connection is closed within ``CLOSE_TIMEOUT`` of its close frame, answered or not.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import cast

from tidings.api import errors
from tidings.auth import AppCache
from tidings.errors import TidingsError
from tidings.gateway import admission, rfc6455, serve
from tidings.gateway.admission import Refused
from tidings.gateway.inband import InBand
from tidings.gateway.rfc6455 import WireError
from tidings.gateway.stream import EndReason, LiveStream
from tidings.runtime import Runtime

PATH = "/v1/ws"
CLOSE_TIMEOUT = 5.0  # seconds a peer has to answer our close frame before the socket is dropped
MAX_EARLY_MESSAGES = 16  # client messages buffered while the auth frame is being checked
BACKLOG = 4096  # pending TCP connections: a reconnect storm must not be refused by the kernel

frame_header = rfc6455.text_frame_header


def encode_frames(batch: list[bytes]) -> bytes:
    """Text frames for ``batch``, back to back: what one write sends."""
    header = rfc6455.text_frame_header
    parts: list[bytes] = []
    for payload in batch:
        parts.append(header(len(payload)))
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

    def adopt(self, transport: asyncio.Transport, data: bytes, scheme: str = "http") -> None:
        """Takes over a socket whose request head (``data``, with any bytes after it) another protocol read: the
        one-port hand-off of ``gateway.front``. ``scheme`` is how the client reached us (the Origin check)."""
        connection = _Connection(self, scheme)
        transport.set_protocol(connection)
        connection.connection_made(transport)
        connection.data_received(data)

    async def start(self) -> int:
        """Binds a listener of its own and starts accepting; returns the bound port (useful with port 0)."""
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
    """One client socket: handshake -> auth frame -> stream, then the close handshake. It is the
    ``serve.Transport`` of its stream (``send``, ``close``).

    States: ``_reader`` None and ``_handshake`` bytes while the request is read; then frames go to
    ``_reader``; ``_closing`` once our close frame is out (nothing else is written after it).
    """

    __slots__ = (
        "_closing",
        "_early",
        "_gateway",
        "_handshake",
        "_host",
        "_inband",
        "_origin",
        "_reader",
        "_runtime",
        "_scheme",
        "_stream",
        "_task",
        "_timer",
        "_transport",
        "_writable",
    )

    def __init__(self, gateway: FastGateway, scheme: str = "http") -> None:
        self._gateway = gateway
        self._scheme = scheme
        self._runtime = gateway.runtime
        self._transport: asyncio.Transport | None = None
        self._handshake: bytes | None = b""  # the request head read so far; None once answered
        self._reader: rfc6455.FrameReader | None = None
        self._origin: str | None = None
        self._host = ""
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._stream: LiveStream | None = None
        self._inband: InBand | None = None
        self._early: list[bytes] | None = None  # messages that arrived while auth was checked
        self._writable: asyncio.Future[None] | None = None  # set while the transport is paused
        self._closing = False

    # --- asyncio.Protocol -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._gateway.connections.add(self)
        # One deadline for the handshake and the auth frame: a silent socket costs nothing for long.
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._runtime.settings.auth_timeout, self._auth_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            data = self._on_handshake(self._handshake + data)
        if self._reader is None or not data:
            return
        try:
            for opcode, payload in self._reader.feed(data):
                self._on_frame(opcode, payload)
        except WireError as exc:
            self._close(exc.code, exc.reason)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost ends the stream

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
        elif self._reader is not None:
            self._refuse(admission.DRAINING)
        elif self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- handshake and client frames --------------------------------------------------------------------------

    def _on_handshake(self, buffer: bytes) -> bytes:
        """Answers the request once its head is complete; returns the bytes after it (the first frames)."""
        handshake = rfc6455.read_handshake(buffer, PATH)
        if handshake is None:
            self._handshake = buffer
            return b""
        self._handshake = None
        assert self._transport is not None
        self._transport.write(handshake.response)
        if not handshake.accepted:
            self._transport.close()
            return b""
        self._origin, self._host = handshake.origin, handshake.host
        self._reader = rfc6455.FrameReader(self._runtime.settings.max_frame_bytes)
        if self._runtime.draining:
            self._refuse(admission.DRAINING)
        return handshake.rest

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == rfc6455.OP_CLOSE:
            if self._stream is not None:
                self._stream.end(EndReason.CLIENT_GONE)
            self._close(1000 if not self._closing else None)  # answer theirs, or theirs answered ours
        elif opcode == rfc6455.OP_PING:
            # Counted like any client frame once streaming: a ping flood is closed as rate_limited too.
            if self._inband is None or self._inband.spend():
                self._send_control(rfc6455.control_frame(rfc6455.OP_PONG, payload))
        elif opcode in (rfc6455.OP_TEXT, rfc6455.OP_BINARY) and not self._closing:
            self._on_message(payload)

    def _on_message(self, message: bytes) -> None:
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
            self._on_client_frame(message)

    def _on_client_frame(self, message: bytes) -> None:
        """Client frames after auth, to ``gateway.inband`` (ping, pong, re-auth, the flood budget); a malformed
        one ends the connection."""
        assert self._inband is not None
        refused = self._inband.receive(message)
        if refused is not None:
            self._refuse(refused)

    def _auth_timed_out(self) -> None:
        self._timer = None
        if self._reader is not None:
            self._refuse(admission.AUTH_TIMEOUT)
        else:
            self.abort()  # not even a handshake in time

    # --- the stream -------------------------------------------------------------------------------------------

    async def _run(self, first: bytes) -> None:
        runtime = self._runtime
        try:
            app, user, after, expires_at = await admission.admit(
                runtime, first, self._origin, self._host, self._gateway.app_cache, scheme=self._scheme
            )
        except Refused as refused:
            self._refuse(refused)
            return
        except TidingsError as exc:  # the store failed looking the app up: tell the client to come back
            self._refuse(admission.failed(exc))
            return
        first = b""  # the coroutine frame lives as long as the stream: keep none of the token
        if self._closing:
            return
        self._origin = None
        stream = self._stream = LiveStream(runtime, app.name, user, transport="ws", record=app)
        inband = self._inband = InBand(runtime, stream, expires_at, self._gateway.app_cache)
        for message in self._early or ():
            self._on_client_frame(message)
        self._early = None
        await serve.serve(runtime, stream, after, serve.websocket_ready, self, inband)

    # --- writing: the ``serve.Transport`` of the stream -----------------------------------------------------

    async def send(self, batch: list[bytes]) -> None:
        """All of ``batch`` in one write; waits while the socket is full (the outbox absorbs, or overflows)."""
        transport = self._transport
        if self._closing or transport is None or transport.is_closing():
            return
        transport.write(encode_frames(batch))
        gateway = self._gateway
        gateway.frames_sent += len(batch)
        gateway.writes += 1
        if self._writable is not None:
            await self._writable

    async def close(self, refused: Refused | None) -> None:
        if refused is not None:
            self._refuse(refused)

    def _send_control(self, frame: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)

    def _refuse(self, refused: Refused) -> None:
        """An error frame, then the close frame; the socket closes once the peer answers or time is up."""
        if self._stream is not None:
            self._stream.end(EndReason.CLIENT_GONE)
        if self._closing or self._reader is None:
            return
        payload = refused.error_frame()
        self._send_control(rfc6455.text_frame_header(len(payload)) + payload)
        self._close(refused.close_code)

    def _close(self, code: int | None, reason: str = "") -> None:
        """Our close frame (``code`` None: none, theirs answered ours), then the socket closes: at once when
        the handshake is complete, else after ``CLOSE_TIMEOUT`` at the latest."""
        if self._stream is not None:
            self._stream.end(EndReason.CLIENT_GONE)
        complete = self._closing or code is None
        if code is not None and not self._closing:
            self._closing = True
            self._send_control(rfc6455.close_frame(code, reason))
        self._cancel_timer()
        if complete or code in (rfc6455.CLOSE_PROTOCOL_ERROR, rfc6455.CLOSE_TOO_BIG) or code == 1000:
            if self._transport is not None:
                self._transport.close()  # after the buffered frames are flushed
        else:
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def _release_writer(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

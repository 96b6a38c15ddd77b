"""The one serve loop of live delivery, shared by every transport shell.

register with the hub -> open the stream (subscribe, read the user's last seq, the core asks for the resume
backlog) -> the ready frame (and a reset frame when the client's cursor was ahead of the server,
``core.resume``) -> batches of frames from the connection core (backlog pages and live messages fed
in by ``gateway.stream``) -> finally unregister and close. The shells only move bytes and map the auth
handshake:

- ``websocket.py`` (ASGI) and ``listener.py`` (plain asyncio transport) call ``serve`` with a ``Transport``:
  ``send(frames)`` writes one batch (in one write where the transport allows), ``close(refused)`` ends the
  stream with an error frame and a close code (``gateway.admission``), or just closes when ``refused`` is None;
- ``sse.py`` is an HTTP response body, pulled rather than pushed: it iterates ``deliver`` itself.

The connection gauge and every other delivery observation go through the stream's ``DeliveryObserver``
(``gateway.observe``), from here and from ``gateway.stream`` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

import structlog

from tidings.core import frames
from tidings.errors import TidingsError
from tidings.gateway import admission
from tidings.gateway.admission import Refused
from tidings.gateway.stream import EndReason, LiveStream, Opened
from tidings.runtime import Runtime

log = structlog.get_logger("tidings.gateway.serve")

Ready = Callable[[str, Opened], list[bytes]]  # (user, how the stream opened) -> the ready frame (and reset)


def websocket_ready(user: str, opened: Opened) -> list[bytes]:
    """The WebSocket opening: the ready frame, then a reset frame when the client's cursor was ahead."""
    ready = frames.encode_ready(user, opened.last_seq, opened.epoch)
    if not opened.reset:
        return [ready]
    if opened.expired:  # the cursor was below the retention floor: the latest page, after ``start``, follows
        return [ready, frames.encode_reset(opened.start, opened.epoch, expired=True)]
    return [ready, frames.encode_reset(opened.last_seq, opened.epoch)]


class Gone(Exception):
    """Raised by a ``Transport`` whose peer went away: the stream ends as ``CLIENT_GONE``."""


class Transport(Protocol):
    """What a WebSocket shell gives the loop: a way to write frames and a way to end."""

    async def send(self, batch: list[bytes]) -> None:
        """Write the frames of ``batch`` in order; raise ``Gone`` when the peer is gone."""

    async def close(self, refused: Refused | None) -> None:
        """The stream is over: send ``refused`` (error frame, close code) if any; a gone peer is no error."""


async def deliver(
    runtime: Runtime, stream: LiveStream, after: int | None, ready: Ready
) -> AsyncGenerator[list[bytes], None]:
    """The batches to write for ``stream``, the ready frame first (and the reset frame, in the same batch, when
    the client's cursor was ahead: ``core.resume``; and the backlog's first page when it was read while opening);
    each is written before the next is asked.

    The stream may already be open (SSE opens it before its response starts, so a failing store is an HTTP
    error rather than a stream that ends at once). Use with ``contextlib.aclosing`` so that the ``finally``
    runs when the writer stops early.
    """
    hub = runtime.hub
    hub.register(stream)
    stream.observer.opened()
    try:
        opened = await stream.open(after)
        async for batch in stream.batches(lead=ready(stream.user, opened)):
            yield batch
    finally:
        stream.end(EndReason.CLIENT_GONE)  # kept if another reason came first
        hub.unregister(stream)
        stream.observer.closed()
        await stream.close()


class Guard(Protocol):
    """What runs beside a stream for its whole life (``gateway.inband``: the token's lifetime, the client's
    in-band frames); it may end the stream, whose close then says why."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve(
    runtime: Runtime,
    stream: LiveStream,
    after: int | None,
    ready: Ready,
    transport: Transport,
    guard: Guard | None = None,
) -> None:
    """Run ``stream`` to its end over ``transport``, then close it with what the end reason calls for."""
    refused: Refused | None = None
    if guard is not None:
        guard.start()
    try:
        async with contextlib.aclosing(deliver(runtime, stream, after, ready)) as batches:
            async for batch in batches:
                await transport.send(batch)
    except Gone:
        stream.end(EndReason.CLIENT_GONE)
    except TidingsError as exc:  # e.g. the store became unavailable: the client resumes elsewhere or later
        log.warning("stream_failed", error=exc.code)
        refused = admission.failed(exc)
    finally:
        if guard is not None:
            await guard.stop()
    await transport.close(refused or admission.for_end(stream.end_reason))

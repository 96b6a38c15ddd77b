"""The Server-Sent Events shell: ``GET /v1/stream``. Credentials are checked before the stream starts, so a
bad token is a 401 JSON answer, never a stream that ends at once."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse

from tidings.auth import authenticate_user
from tidings.core import frames
from tidings.core.backoff import jittered
from tidings.errors import AuthError, FrameError, InvalidInputError, UnavailableError
from tidings.gateway.stream import EndReason, LiveStream
from tidings.observability import metrics
from tidings.runtime import Runtime

RETRY_MS = 2000  # the reconnect delay browsers use after a dropped stream
DRAIN_RETRY_MS = 3000  # spread over a jittered window on drain, so clients do not all come back at once


async def stream_endpoint(request: Request) -> StreamingResponse:
    runtime: Runtime = request.app.state.runtime
    if runtime.draining:
        raise UnavailableError("server is restarting", retry_after=1)
    app, user = await _credentials(request, runtime)
    after = _after(request)
    stream = LiveStream(
        runtime,
        app,
        user,
        transport="sse",
        encode=lambda seq, payload: frames.sse_event("notification", payload, id=seq),
        heartbeat=lambda: frames.sse_comment("ping"),
    )
    last_seq = await stream.open(after)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _body(runtime, stream, last_seq), media_type="text/event-stream", headers=headers
    )


async def _credentials(request: Request, runtime: Runtime) -> tuple[str, str]:
    ticket = request.query_params.get("ticket")
    if ticket is not None:
        ticket_hash = hashlib.sha256(ticket.encode()).hexdigest()
        owner = await runtime.store.apps.redeem_ticket(ticket_hash, runtime.clock.time())
        if owner is None:
            raise AuthError("unknown, used or expired stream ticket")
        return owner
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing bearer token or stream ticket")
    app, user = await authenticate_user(runtime, token.strip())
    return app.name, user


def _after(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    try:
        return frames.parse_last_event_id(raw)
    except FrameError as exc:
        raise InvalidInputError("after / Last-Event-ID must be a non-negative integer") from exc


async def _body(runtime: Runtime, stream: LiveStream, last_seq: int) -> AsyncIterator[bytes]:
    hub = runtime.hub
    connections = metrics.connections.labels(transport="sse")
    connections.inc()
    hub.register(stream)
    try:
        ready = orjson.dumps({"user": stream.user, "last_seq": last_seq})
        yield frames.sse_retry(RETRY_MS) + frames.sse_event("ready", ready)
        async for batch in stream.batches():
            yield b"".join(batch)
            metrics.deliveries_total.labels(transport="sse", result="sent").inc(len(batch))
        if stream.end_reason is EndReason.DRAINING:
            yield frames.sse_retry(int(jittered(DRAIN_RETRY_MS, random.random())))
        elif stream.end_reason is EndReason.SLOW_CONSUMER:
            yield frames.sse_event("error", orjson.dumps({"code": "slow_consumer"}))
    finally:
        stream.end(EndReason.CLIENT_GONE)
        hub.unregister(stream)
        connections.dec()
        await stream.close()

"""The Server-Sent Events shell: ``GET /v1/stream``. Credentials are checked and the stream opened before the
response starts, so a bad token is a 401 JSON answer and a failing or overloaded store a 503 with Retry-After,
never a stream that ends at once. A backend failing later (a backlog page read when every pooled connection is
busy) ends the stream with a retry hint and ``event: error`` ``{"code": "unavailable"}``: the client resumes
with ``Last-Event-ID``, as after a drain; nothing reaches the client as an internal error or a cut body.

The response body is the loop of ``gateway.serve`` (``deliver``), pulled by the HTTP server; this module only
maps credentials and the resume point in, and the ready and end-of-stream events out."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import StreamingResponse

from tidings.auth import AppCache, authenticate_user_until
from tidings.core import frames
from tidings.core.backoff import jittered
from tidings.core.models import App
from tidings.errors import AuthError, FrameError, InvalidInputError, TidingsError, UnavailableError
from tidings.gateway import serve
from tidings.gateway.inband import Watch, sse_warning
from tidings.gateway.stream import EndReason, LiveStream, Opened
from tidings.runtime import Runtime

log = structlog.get_logger("tidings.gateway.sse")

RETRY_MS = 2000  # the reconnect delay browsers use after a dropped stream
DRAIN_RETRY_MS = 3000  # spread over a jittered window on drain, so clients do not all come back at once


async def stream_endpoint(request: Request) -> StreamingResponse:
    runtime: Runtime = request.app.state.runtime
    if runtime.draining:
        raise UnavailableError("server is restarting", retry_after=1)
    app, user, record, expires_at = await _credentials(request, runtime)
    after = _after(request)
    stream = LiveStream(runtime, app, user, transport="sse", record=record)
    await stream.open(after)  # before the response: a failing store is an HTTP error, not an empty stream
    # A bearer token's stream lives until its exp (+ grace): SSE cannot re-auth in-band, the client reconnects.
    watch = None if expires_at is None else Watch(runtime, stream, expires_at, sse_warning)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _body(runtime, stream, after, watch), media_type="text/event-stream", headers=headers
    )


async def _credentials(request: Request, runtime: Runtime) -> tuple[str, str, App | None, float | None]:
    """The app's name, the user and, with a bearer token, the app as stored and the token's exp (a ticket names
    only the app, and its stream is not bound to a token's lifetime)."""
    ticket = request.query_params.get("ticket")
    if ticket is not None:
        ticket_hash = hashlib.sha256(ticket.encode()).hexdigest()
        owner = await runtime.store.apps.redeem_ticket(ticket_hash, runtime.clock.time())
        if owner is None:
            raise AuthError("unknown, used or expired stream ticket")
        return owner[0], owner[1], None, None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing bearer token or stream ticket")
    app, user, expires_at = await authenticate_user_until(runtime, token.strip(), _app_cache(request))
    return app.name, user, app, expires_at


def _app_cache(request: Request) -> AppCache | None:
    """The app records of the process's HTTP app (``api.deps.ApiState``), shared with the API's user routes: a
    storm of SSE clients of one app looks its record up once, not once per client."""
    api = getattr(request.app.state, "api", None)
    cache = getattr(api, "apps", None)
    return cache if isinstance(cache, AppCache) else None


def _after(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    try:
        return frames.parse_last_event_id(raw)
    except FrameError as exc:
        raise InvalidInputError("after / Last-Event-ID must be a non-negative integer") from exc


def _ready(user: str, opened: Opened) -> list[bytes]:
    ready = orjson.dumps({"user": user, "last_seq": opened.last_seq, "epoch": opened.epoch})
    head = frames.sse_retry(RETRY_MS) + frames.sse_event("ready", ready)
    if not opened.reset:
        return [head]
    # ``id: last_seq`` moves the browser's Last-Event-ID back too, so its own reconnect is not reset again.
    # An expired cursor (below the retention floor) goes on from ``start``: the latest page follows.
    start = opened.start if opened.expired else opened.last_seq
    reset = frames.sse_event(
        "reset", frames.encode_reset(start, opened.epoch, expired=opened.expired), id=start
    )
    return [head, reset]


async def _body(
    runtime: Runtime, stream: LiveStream, after: int | None, watch: Watch | None = None
) -> AsyncIterator[bytes]:
    if watch is not None:
        watch.start()
    failed: TidingsError | None = None
    try:
        async with contextlib.aclosing(serve.deliver(runtime, stream, after, _ready)) as batches:
            async for batch in batches:
                yield b"".join(batch)
    except TidingsError as exc:
        # A store read under a started stream failed (a backlog page while every pooled connection is busy):
        # the 200 is sent, so no status can say it; the stream ends saying it, and the client resumes.
        log.warning("stream_failed", error=exc.code)
        failed = exc
    finally:
        if watch is not None:
            await watch.stop()
    if failed is not None:
        yield _failure(failed)
    elif stream.end_reason is EndReason.DRAINING:
        yield frames.sse_retry(int(jittered(DRAIN_RETRY_MS, random.random())))
    elif stream.end_reason is EndReason.SLOW_CONSUMER:
        yield frames.sse_event("error", orjson.dumps({"code": "slow_consumer"}))
    elif stream.end_reason is EndReason.TOKEN_EXPIRED:
        yield frames.sse_event("error", orjson.dumps({"code": "token_expired"}))


def _failure(exc: TidingsError) -> bytes:
    """The end of a stream whose backend failed: a retry hint of at least ``RETRY_MS`` (or the error's own
    ``retry_after``), jittered so a storm's clients do not all come back at once, and ``error`` with its code."""
    wait_ms = max(RETRY_MS, 1000 * getattr(exc, "retry_after", 0.0))
    retry = frames.sse_retry(int(jittered(wait_ms, random.random())))
    return retry + frames.sse_event("error", orjson.dumps({"code": exc.code}))

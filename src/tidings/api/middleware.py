"""Pure ASGI middleware: the body-size limit and drain gate, and HTTP metrics.

``BodyLimitMiddleware`` reads the whole request body (at most ``max_body_bytes``) before the app sees the
request, so no route ever runs on an oversized body, whether it is announced by ``Content-Length`` or streamed
chunked. The body is then replayed to the app. While the runtime drains, new requests answer 503 except the
probes and metrics. WebSocket and lifespan scopes pass through untouched (frames have their own limit).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.api.errors import BodyTooLargeError, MalformedBodyError, tidings_error_response
from tidings.errors import TidingsError, UnavailableError
from tidings.observability import metrics
from tidings.runtime import Runtime

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Disconnected(Exception):
    """The client went away while sending its body: nobody is left to answer."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_draining(scope)
            self._check_declared_length(scope)
            body = await self._read_body(receive)
        except _Disconnected:
            return
        except TidingsError as exc:
            await _refuse(exc, scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_draining(self, scope: Scope) -> None:
        if self.runtime.draining and scope["path"] not in PROBE_PATHS:
            raise UnavailableError("the server is shutting down; retry", retry_after=1.0)

    def _check_declared_length(self, scope: Scope) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise MalformedBodyError("invalid Content-Length") from None
                if declared > self.runtime.settings.max_body_bytes:
                    raise self._too_large()

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body; each round trip either adds bytes (bounded by the limit) or ends the body."""
        limit, size, chunks = self.runtime.settings.max_body_bytes, 0, []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> BodyTooLargeError:
        return BodyTooLargeError(f"the body is over {self.runtime.settings.max_body_bytes} bytes")


async def _refuse(exc: TidingsError, scope: Scope, receive: Receive, send: Send) -> None:
    response = tidings_error_response(exc)
    # The rest of an oversized body is never read, so the connection cannot be reused.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then the real channel (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status.

    The route label is the template of the route that matches (``/v1/topics/{topic}/subscribers``), the mount
    path for mounts (``/sdk``, ``/admin/static``), or ``unmatched``: raw paths never become label values.
    Mounts are matched against the scope as it arrived (routing rewrites ``root_path`` on the way in).

    A long-lived stream (``text/event-stream``) is counted but not timed: the duration histogram is about
    answers, and an SSE connection open for an hour is not a one-hour answer.
    """

    def __init__(self, app: ASGIApp, routes: Callable[[], Iterable[BaseRoute]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, streaming = time.perf_counter(), 500, False
        arrived = dict(scope)

        async def send_and_note(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                streaming = _is_event_stream(message.get("headers", ()))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            # The router notes its route in the scope; mounts and requests refused before routing are matched.
            template = getattr(scope.get("route"), "path", None) or route_template(self.routes(), arrived)
            labels = (method, template, str(status))
            metrics.http_requests_total.labels(*labels).inc()
            if not streaming:
                metrics.http_request_duration_seconds.labels(*labels).observe(time.perf_counter() - started)


def _is_event_stream(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name == b"content-type" and value.startswith(b"text/event-stream") for name, value in headers)


def route_template(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """The path template of the first route matching ``scope`` (method aside), or ``unmatched``."""
    partial = "unmatched"
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            template = str(getattr(route, "path", "unmatched"))
            if match is Match.FULL:
                return template
            partial = template if partial == "unmatched" else partial
    return partial

"""The API's one pure-ASGI layer: HTTP metrics, CORS, and the body-size limit with the drain gate.

One layer instead of three (``MetricsMiddleware``, Starlette's ``CORSMiddleware``, a body-limit middleware)
because each layer cost every request its own coroutine, send wrapper and header parse: more than the
smallest route. The order of the three is kept, outside in:

1. **Metrics**: every answer is counted and timed, refusals and preflights included.
2. **CORS**: a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered here,
   by Starlette's own ``CORSMiddleware.preflight_response``; every other answer gets the simple-response
   headers, as Starlette's middleware adds them.
3. **Body limit and drain**: the whole request body (at most ``max_body_bytes``) is read before the app sees
   the request, so no route ever runs on an oversized body, whether it is announced by ``Content-Length`` or
   streamed chunked; the body is then replayed to the app. While the runtime drains, new requests answer 503
   except the probes and metrics.

WebSocket and lifespan scopes pass through untouched (frames have their own limit).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.api.errors import BodyTooLargeError, MalformedBodyError, tidings_error_response
from tidings.api.routing import direct_routes
from tidings.errors import TidingsError, UnavailableError
from tidings.observability import metrics
from tidings.runtime import Runtime

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Disconnected(Exception):
    """The client went away while sending its body: nobody is left to answer."""


class Cors:
    """A CORS policy for any origin without credentials (the API's: bearer headers, never cookies).

    Preflights are Starlette's ``CORSMiddleware``'s answers, unchanged. The simple-response headers are
    what that middleware adds, on the raw header list: with an ``Origin``, its allow-origin and
    expose-headers entries (each replacing one the app set); on every answer, ``Origin`` joined to the
    ``Vary`` values (one ``Vary`` entry, where the first one was)."""

    def __init__(
        self, allow_methods: Collection[str], allow_headers: Collection[str], expose_headers: Collection[str]
    ) -> None:
        self.starlette = CORSMiddleware(
            _no_app,
            allow_origins=["*"],
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            expose_headers=expose_headers,
            max_age=600,
        )
        self._simple = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.starlette.simple_headers.items()
        ]

    def preflight(self, scope: Scope) -> Response:
        return self.starlette.preflight_response(request_headers=Headers(scope=scope))

    def headed(self, headers: Iterable[tuple[bytes, bytes]], origin: bool) -> list[tuple[bytes, bytes]]:
        """A copy of an answer's ``headers`` with the simple-response headers set."""
        out = list(headers)
        if origin:
            for name, value in self._simple:
                _set(out, name, value)
        _set(out, b"vary", b", ".join([*(v for n, v in out if n == b"vary"), b"Origin"]))
        return out


def _set(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    """``MutableHeaders.__setitem__`` on a raw list: the first entry of ``name`` replaced, the others dropped,
    or one appended."""
    found = [index for index, (key, _) in enumerate(headers) if key == name]
    for index in reversed(found[1:]):
        del headers[index]
    if found:
        headers[found[0]] = (name, value)
    else:
        headers.append((name, value))


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the CORS policy only answers preflights")  # pragma: no cover


class ApiMiddleware:
    """Metrics, then CORS (when ``cors`` is given), then the body limit and drain gate (when ``runtime`` is).

    Metrics: every HTTP request is counted and timed by method, route template and status. The route label
    is the template of the route that matches (``/v1/topics/{topic}/subscribers``), the mount path for
    mounts (``/sdk``, ``/admin/static``), or ``unmatched``: raw paths never become label values. Mounts are
    matched against the scope as it arrived (routing rewrites ``root_path`` on the way in). A long-lived
    stream (``text/event-stream``) is counted but not timed: the duration histogram is about answers, and an
    SSE connection open for an hour is not a one-hour answer.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Callable[[], Iterable[BaseRoute]],
        runtime: Runtime | None = None,
        cors: Cors | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.runtime = runtime
        self.cors = cors
        # Built with the middleware stack, on the first request: every route is in place by then.
        self.direct = direct_routes(routes()) if runtime is not None else {}
        # The labelled children, looked up once per label set: ``labels()`` takes a lock and builds a key
        # on every call. Bounded: methods, route templates and statuses are small fixed sets.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, streaming = time.perf_counter(), 500, False
        arrived = dict(scope)
        origin, requested, lengths = _scan(scope["headers"])
        preflight = origin and requested and scope["method"] == "OPTIONS" and self.cors is not None
        cors = None if preflight else self.cors

        async def answer(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                if cors is not None:
                    message["headers"] = cors.headed(message.get("headers", ()), origin)
                status = message["status"]
                streaming = _is_event_stream(message.get("headers", ()))
            await send(message)

        try:
            if preflight:
                assert self.cors is not None
                await self.cors.preflight(scope)(scope, receive, answer)
            elif self.runtime is None:
                await self.app(scope, receive, answer)
            else:
                await self._limited(scope, receive, answer, lengths)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            # The router notes its route in the scope; mounts and requests refused before routing are matched.
            template = getattr(scope.get("route"), "path", None) or route_template(self.routes(), arrived)
            counted, timed = self._child((method, template, str(status)))
            counted.inc()
            if not streaming:
                timed.observe(time.perf_counter() - started)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, lengths: list[bytes]) -> None:
        """The app behind the drain gate and the body limit, on the body read in full."""
        runtime = self.runtime
        assert runtime is not None
        try:
            if runtime.draining and scope["path"] not in PROBE_PATHS:
                raise UnavailableError("the server is shutting down; retry", retry_after=1.0)
            limit = runtime.settings.max_body_bytes
            for value in lengths:
                try:
                    declared = int(value)
                except ValueError:
                    raise MalformedBodyError("invalid Content-Length") from None
                if declared > limit:
                    raise _too_large(limit)
            body = await _read_body(receive, limit)
        except _Disconnected:
            return
        except TidingsError as exc:
            await _refuse(exc, scope, receive, send)
            return
        route = self.direct.get((scope["method"], scope["path"]))
        # With a root path (or FastAPI's own telemetry on) the router's matching decides, as for any route.
        if route is not None and not scope.get("root_path") and "fastapi.telemetry" not in scope:
            await route.serve(scope, receive, send, body)
        else:
            await self.app(scope, _replay(body, receive), send)

    def _child(self, labels: tuple[str, str, str]) -> tuple[Any, Any]:
        children = self._children.get(labels)
        if children is None:
            children = (
                metrics.http_requests_total.labels(*labels),
                metrics.http_request_duration_seconds.labels(*labels),
            )
            self._children[labels] = children
        return children


class MetricsMiddleware(ApiMiddleware):
    """The metrics part alone (for apps other than the API's)."""

    def __init__(self, app: ASGIApp, routes: Callable[[], Iterable[BaseRoute]]) -> None:
        super().__init__(app, routes)


def _scan(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bool, bool, list[bytes]]:
    """In one pass over the request headers: whether they have an ``Origin``, whether they have an
    ``Access-Control-Request-Method``, and the ``Content-Length`` values in order."""
    origin = requested = False
    lengths: list[bytes] = []
    for name, value in headers:
        if name == b"content-length":
            lengths.append(value)
        elif name == b"origin":
            origin = True
        elif name == b"access-control-request-method":
            requested = True
    return origin, requested, lengths


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole body; each round trip either adds bytes (bounded by the limit) or ends the body."""
    size, chunks = 0, []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> BodyTooLargeError:
    return BodyTooLargeError(f"the body is over {limit} bytes")


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

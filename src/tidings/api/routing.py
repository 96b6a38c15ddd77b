"""Routes whose bodies are strict JSON: UTF-8, no BOM, no NaN, declared as JSON (or not declared at all).

FastAPI alone would parse with ``json.loads`` (which guesses UTF-16/32 and accepts ``NaN``) and would hand a
body of another media type to validation as bytes. Here every body is parsed once, by orjson, before
FastAPI sees it, and what is not JSON answers 400 (``malformed_body``) or 415, never a confusing 422.
"""

from __future__ import annotations

import email.message
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, ClassVar, cast

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import empty_send
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from tidings.api.errors import MalformedBodyError, UnsupportedMediaTypeError

_NOT_PARSED = object()


class JSONRequest(Request):
    """A request whose ``json()`` is orjson's (strict RFC 8259, UTF-8 only), parsed once; ``read``: its body
    when it was read already (by the API middleware), else it is received."""

    _parsed: Any = _NOT_PARSED

    def __init__(self, scope: Scope, receive: Receive, send: Send = empty_send, read: bytes | None = None):
        super().__init__(scope, receive, send)
        self._read = read

    async def body(self) -> bytes:
        return self._read if self._read is not None else await super().body()

    async def json(self) -> Any:
        if self._parsed is _NOT_PARSED:
            try:
                self._parsed = orjson.loads(await self.body())
            except orjson.JSONDecodeError as exc:
                raise MalformedBodyError(f"the body is not valid JSON in UTF-8: {exc.msg}") from exc
        return self._parsed


def _check_media_type(content_type: str | None) -> None:
    if content_type is None:
        return  # curl-style clients that send none: parse as JSON anyway
    if not _is_json(content_type):
        raise UnsupportedMediaTypeError("send the body as Content-Type: application/json")


@functools.lru_cache(maxsize=64)
def _is_json(content_type: str) -> bool:
    """Whether a Content-Type names JSON; cached: producers send the same one on every request, and the
    email parser takes longer than parsing a small event."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JSONRoute(APIRoute):
    """An ``APIRoute`` that checks and parses a JSON body before FastAPI's handler runs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def parse_then_handle(request: Request) -> Response:
            strict = await _parsed(request)
            return await handler(strict)

        return parse_then_handle


async def _parsed(request: Request) -> JSONRequest:
    """The request as a ``JSONRequest`` whose body was checked and parsed (400 or 415 otherwise)."""
    strict = JSONRequest(request.scope, request.receive)
    await _check_body(strict)
    return strict


async def _check_body(strict: JSONRequest) -> Any:
    """The parsed body, after the checks in their order: present (400), declared as JSON (415), JSON (400)."""
    if not await strict.body():
        raise MalformedBodyError("a JSON body is required")
    _check_media_type(strict.headers.get("content-type"))
    return await strict.json()


DirectHandler = Callable[[JSONRequest, Any], Awaitable[Response]]


class DirectRoute(JSONRoute):
    """A ``JSONRoute`` served by a hand-written handler instead of FastAPI's dependency solver.

    For the hottest routes (event ingest): FastAPI's generic per-request work (walking the dependency tree,
    caching each dependency's result, validating every declared header, validating the answer against the
    response model again) cost more CPU than the route itself. The endpoint's signature still makes the
    OpenAPI document; ``handler(request, body)`` does what its dependencies would, in the same order and
    with the same errors (``RequestValidationError`` with ``body``/``header`` locations), and returns the
    finished ``Response``. Body checks (400, 415) are ``JSONRoute``'s, before anything else, as there.

    The route's ASGI app is that handler alone, without FastAPI's per-request wrapping (two exit stacks
    for dependencies with ``yield``, which these routes have none of, and a second exception-handler
    lookup): an error propagates to the app's ``ExceptionMiddleware``, which answers it with the same
    handlers. ``include_routers`` puts these routes on the app's own router, and the API middleware serves
    them itself (``serve``), ahead of FastAPI's exception middleware and router.
    """

    handler: ClassVar[DirectHandler]

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        assert self.max_body_size is None, "the body limit is the API middleware's"
        assert "{" not in self.path, "served by exact path"
        self.app = self._serve

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        direct = type(self).handler

        async def parse_then_handle(request: Request) -> Response:
            strict = await _parsed(request)
            return await direct(strict, await strict.json())

        return parse_then_handle

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = JSONRequest(scope, receive, send)
        response = await type(self).handler(request, await _check_body(request))
        await response(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        """The request (its ``body`` read already) served as FastAPI's router and ``ExceptionMiddleware``
        would serve it: the scope noted as the router notes a match, an error answered by the app's handler
        for it, or raised on (to ``ServerErrorMiddleware``) when there is none."""
        app = scope["app"]
        scope.setdefault("router", app.router)
        scope["endpoint"], scope["path_params"], scope["route"] = self.endpoint, {}, self
        request = JSONRequest(scope, receive, send, body)
        try:
            response = await type(self).handler(request, await _check_body(request))
        except Exception as exc:
            handler = _handler_for(app.exception_handlers, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
            exc.__traceback__ = None  # as Starlette: a reused exception must not grow its traceback
        await response(scope, receive, send)


HttpHandler = Callable[[Request, Exception], Awaitable[Response]]


def _handler_for(handlers: Mapping[Any, Any], exc: Exception) -> HttpHandler | None:
    """The handler ``ExceptionMiddleware`` would pick: a status handler for an ``HTTPException``, else the
    first class of the error's MRO with one; not ``Exception``'s (nor 500's): that is the outermost layer's.
    (The app's handlers are all ``async``: ``errors.install``'s and FastAPI's own.)"""
    if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in handlers:
        return cast(HttpHandler, handlers[exc.status_code])
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return cast(HttpHandler, handlers[cls])
    return None


def direct_routes(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], DirectRoute]:
    """The ``DirectRoute``s of ``routes`` by (method, path): the API middleware serves these itself. A path
    of one is served by it alone (no other route of the app answers that method on that path)."""
    return {
        (method, route.path): route
        for route in routes
        if isinstance(route, DirectRoute)
        for method in route.methods or ()
    }


def direct_route(handler: DirectHandler) -> type[DirectRoute]:
    """A ``DirectRoute`` class served by ``handler`` (pass it as ``route_class_override``)."""
    return type(f"Direct_{handler.__name__}", (DirectRoute,), {"handler": staticmethod(handler)})


def include_routers(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Includes ``routers`` in ``app``, in order; a router of ``DirectRoute``s only is not included but has
    its routes put on the app's own router, at the same place (so the OpenAPI document is the same).

    An included router is matched through FastAPI's per-inclusion route contexts on every request (each
    candidate's context set in the scope, matched, reset): the ingest routes skip that."""
    for router in routers:
        if router.routes and all(isinstance(route, DirectRoute) for route in router.routes):
            app.router.routes.extend(router.routes)  # complete as declared: prefix, tags, dependencies
        else:
            app.include_router(router)


def json_router(**kwargs: Any) -> APIRouter:
    """An ``APIRouter`` of ``JSONRoute``s; a body without a Content-Type is parsed as JSON."""
    return APIRouter(route_class=JSONRoute, strict_content_type=False, **kwargs)

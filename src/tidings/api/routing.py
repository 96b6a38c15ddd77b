"""Routes whose bodies are strict JSON: UTF-8, no BOM, no NaN, declared as JSON (or not declared at all).

FastAPI alone would parse with ``json.loads`` (which guesses UTF-16/32 and accepts ``NaN``) and would hand a
body of another media type to validation as bytes. Here every body is parsed once, by orjson, before
FastAPI sees it, and what is not JSON answers 400 (``malformed_body``) or 415, never a confusing 422.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from tidings.api.errors import MalformedBodyError, UnsupportedMediaTypeError

_NOT_PARSED = object()


class JSONRequest(Request):
    """A request whose ``json()`` is orjson's (strict RFC 8259, UTF-8 only), parsed once."""

    _parsed: Any = _NOT_PARSED

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
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        raise UnsupportedMediaTypeError("send the body as Content-Type: application/json")


class JSONRoute(APIRoute):
    """An ``APIRoute`` that checks and parses a JSON body before FastAPI's handler runs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def parse_then_handle(request: Request) -> Response:
            strict = JSONRequest(request.scope, request.receive)
            if not await strict.body():
                raise MalformedBodyError("a JSON body is required")
            _check_media_type(strict.headers.get("content-type"))
            await strict.json()
            return await handler(strict)

        return parse_then_handle


def json_router(**kwargs: Any) -> APIRouter:
    """An ``APIRouter`` of ``JSONRoute``s; a body without a Content-Type is parsed as JSON."""
    return APIRouter(route_class=JSONRoute, strict_content_type=False, **kwargs)

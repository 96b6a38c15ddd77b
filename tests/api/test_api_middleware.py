"""The API's one middleware layer (``api.middleware.ApiMiddleware``, issue 12) answers as the three layers it
replaced: CORS exactly as Starlette's ``CORSMiddleware`` (preflights and simple answers, ``Vary`` merged),
refusals of the body limit with the CORS headers, and the ingest routes served from the app's own router
documented as when their router was included."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tidings.api import app as app_module
from tidings.api.app import create_app
from tidings.api.middleware import ApiMiddleware, Cors

from .conftest import OpenApi
from .support import Api, Tenant, event

METHODS = ["GET", "POST", "PUT", "DELETE"]
ALLOWED = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
EXPOSED = ["Retry-After", "Idempotent-Replayed"]


def _starlette(app: Any) -> CORSMiddleware:
    return CORSMiddleware(
        app, allow_origins=["*"], allow_methods=METHODS, allow_headers=ALLOWED, expose_headers=EXPOSED
    )


def _done(coro: Coroutine[Any, Any, None]) -> None:
    """Runs a coroutine that never suspends (the sends below return at once)."""
    with pytest.raises(StopIteration):
        coro.send(None)


_NAMES = st.sampled_from([b"vary", b"access-control-allow-origin", b"access-control-expose-headers", b"x-a"])
_ANSWER_HEADERS = st.lists(st.tuples(_NAMES, st.binary(min_size=1, max_size=8)), max_size=6)


@given(headers=_ANSWER_HEADERS, origin=st.booleans())
def test_simple_answers_get_starlettes_cors_headers(headers: list[tuple[bytes, bytes]], origin: bool) -> None:
    """Whatever headers the app set (several ``Vary``, its own allow-origin): the same list, in order."""
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    request = Headers(raw=[(b"origin", b"https://app.example")] if origin else [])
    message = {"type": "http.response.start", "status": 200, "headers": list(headers)}
    _done(_starlette(None).send(message, capture, request))
    assert Cors(METHODS, ALLOWED, EXPOSED).headed(headers, origin) == sent[0]["headers"]


async def _answers(app: Any, method: str, headers: dict[str, str]) -> tuple[int, list[Any], bytes]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.request(method, PATH, headers=headers)
    return response.status_code, response.headers.multi_items(), response.content


async def _inner(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"text/plain"), (b"vary", b"Accept")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"inner"})


PATH = "/metrics-test/cors"
ROUTES = [Route(PATH, _inner)]  # so the metrics label these requests with a template, as every app's


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {}),
        ("GET", {"Origin": "https://app.example"}),
        ("OPTIONS", {"Origin": "https://app.example"}),  # no requested method: not a preflight
        ("OPTIONS", {"Access-Control-Request-Method": "GET"}),  # no origin: not a preflight
        ("OPTIONS", {"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}),
        (
            "OPTIONS",
            {
                "Origin": "https://a.example",
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, idempotency-key",
            },
        ),
        ("OPTIONS", {"Origin": "https://a.example", "Access-Control-Request-Method": "PATCH"}),
        (
            "OPTIONS",
            {
                "Origin": "https://a.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-secret",
            },
        ),
        (
            "OPTIONS",
            {
                "Origin": "https://a.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Private-Network": "true",
            },
        ),
    ],
)
async def test_preflights_and_answers_are_starlettes(method: str, headers: dict[str, str]) -> None:
    """Allowed and refused preflights, and requests that only look like one, answer as before."""
    ours = ApiMiddleware(_inner, routes=lambda: ROUTES, cors=Cors(METHODS, ALLOWED, EXPOSED))
    assert await _answers(ours, method, headers) == await _answers(_starlette(_inner), method, headers)


@pytest.fixture
async def small_limit(open_api: OpenApi) -> tuple[Api, Tenant]:
    api = await open_api(max_body_bytes=4096)
    return api, await api.tenant()


async def test_a_refusal_of_the_body_limit_carries_the_cors_headers(small_limit: tuple[Api, Tenant]) -> None:
    """CORS wraps the body limit, as it did: a page on another origin can read its 413."""
    api, acme = small_limit
    body = orjson.dumps({**event(), "data": {"pad": "x" * 5000}})
    headers = {**acme.producer, "Origin": "https://app.example", "Content-Type": "application/json"}
    response = await api.client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["connection"] == "close"
    assert response.headers["vary"] == "Origin"


async def test_the_ingest_routes_are_documented_as_when_included(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served from the app's own router, the ingest routes make the same OpenAPI document, in the same order."""
    direct = create_app(api.runtime).openapi()

    def include_all(app: Any, routers: Any) -> None:
        for router in routers:
            app.include_router(router)

    monkeypatch.setattr(app_module, "include_routers", include_all)
    included = create_app(api.runtime).openapi()
    assert list(direct["paths"]) == list(included["paths"])
    assert direct == included


async def test_the_served_ingest_routes_answer_errors_with_the_apps_handlers(
    api: Api, acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served ahead of FastAPI's exception middleware: a Tidings error is still its handler's answer, a bug
    still the outermost layer's 500 without detail."""
    response = await api.client.post("/v1/events", json=event(), headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="tidings"'

    async def broken(items: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.runtime.log, "append", broken)
    response = await api.client.post("/v1/events", json=event(), headers=acme.producer)
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}

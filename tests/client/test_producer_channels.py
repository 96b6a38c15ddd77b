"""The producer SDK's offline-channel calls (user profiles, webhooks) against a scripted transport: the
requests they make, and that creating a webhook is never repeated (a repeat would add a second endpoint)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tidings.client import ApiError, ConnectionFailedError, ProducerClient, SyncProducerClient

from .support import Sleeps

Handler = Callable[[httpx.Request], httpx.Response]
HOOK = {"id": "wh1", "url": "https://example.org/hook", "events": ["post.liked"], "disabled": False}


def recording(answer: Handler) -> tuple[list[httpx.Request], Handler]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return seen, handle


async def test_put_user_sends_the_profile_fields_given() -> None:
    seen, handle = recording(lambda r: httpx.Response(200, json={"user": "a/b", **json.loads(r.content)}))
    async with ProducerClient("http://t.test", "key", transport=httpx.MockTransport(handle)) as tidings:
        answer = await tidings.put_user("a/b", email="ada@example.org", locale="fr")
    (request,) = seen
    assert (request.method, request.url.raw_path) == ("PUT", b"/v1/users/a%2Fb")
    assert json.loads(request.content) == {"email": "ada@example.org", "locale": "fr"}
    assert request.headers["authorization"] == "Bearer key"
    assert answer["email"] == "ada@example.org"


async def test_create_webhook_posts_once_and_returns_the_secret() -> None:
    seen, handle = recording(lambda r: httpx.Response(201, json={**HOOK, "secret": "whsec_abc"}))
    async with ProducerClient("http://t.test", "key", transport=httpx.MockTransport(handle)) as tidings:
        created = await tidings.create_webhook("https://example.org/hook", ["post.liked"])
    assert created["secret"] == "whsec_abc"
    assert json.loads(seen[0].content) == {"url": "https://example.org/hook", "events": ["post.liked"]}


async def test_a_lost_create_webhook_answer_is_not_retried(sleeps: Sleeps) -> None:
    """A retry could add a second endpoint with a secret nobody holds: the error goes to the caller at once."""

    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    seen, handle = recording(drop)
    async with ProducerClient(
        "http://t.test", "key", transport=httpx.MockTransport(handle), sleep=sleeps
    ) as tidings:
        with pytest.raises(ConnectionFailedError):
            await tidings.create_webhook("https://example.org/hook")
    assert len(seen) == 1


async def test_a_busy_server_is_retried_for_profiles_not_for_webhooks(sleeps: Sleeps) -> None:
    busy = recording(
        lambda r: httpx.Response(503, json={"error": {"code": "unavailable", "message": "busy"}})
    )
    seen, handle = busy
    async with ProducerClient(
        "http://t.test", "key", transport=httpx.MockTransport(handle), sleep=sleeps, random=lambda: 0.0
    ) as tidings:
        with pytest.raises(ApiError):
            await tidings.create_webhook("https://example.org/hook")
        assert len(seen) == 1
        with pytest.raises(ApiError):
            await tidings.put_user("ada", email="ada@example.org")
    assert len(seen) > 2


def test_the_sync_client_has_the_same_calls() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"items": [HOOK]})
        if request.method == "POST":
            return httpx.Response(201, json={**HOOK, "secret": "whsec_abc"})
        return httpx.Response(200, json={"user": "ada"})

    with SyncProducerClient("http://t.test", "key", transport=httpx.MockTransport(handle)) as tidings:
        assert tidings.put_user("ada", name="Ada") == {"user": "ada"}
        assert tidings.create_webhook("https://example.org/hook", ("post.liked",))["secret"] == "whsec_abc"
        assert tidings.webhooks() == [HOOK]
        with pytest.raises(TypeError):
            tidings.create_webhook("https://example.org/hook", "post.liked")

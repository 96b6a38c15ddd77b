"""Webhooks against a real local receiver that verifies with the ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import logging
import socket

import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tidings.channels.base import WebhookTarget
from tidings.channels.egress import EgressPolicy, parse_allow
from tidings.channels.webhook import WebhookChannel, new_secret

from .servers import serve
from .support import NOTE, message

LOCAL = EgressPolicy(allow=parse_allow("127.0.0.1/32"), timeout=5)


def answer(status: int, text: str = "", headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, headers=headers)


async def test_signed_delivery_verifies_with_standard_webhooks() -> None:
    secret = new_secret()
    verified: list[object] = []

    async def receiver(request: web.Request) -> web.Response:
        verified.append(Webhook(secret).verify(await request.read(), dict(request.headers)))
        return answer(204)

    async with serve(receiver) as (base, seen):
        channel = WebhookChannel(LOCAL)
        target = WebhookTarget("w1", base + "/hook", (secret,), "notification.created")
        first = await channel.send(message("webhook", target, key="evt_42"))
        again = await channel.send(message("webhook", target, key="evt_42"))
        await channel.close()
    assert first.result == "sent"
    assert first.status == 204
    assert again.result == "sent"
    body = verified[0]
    assert isinstance(body, dict)
    assert body["type"] == "notification.created"
    assert body["data"] == {"user": "u1", "notification": NOTE}
    assert body["timestamp"].endswith("Z")
    assert [r[2]["webhook-id"] for r in seen.requests] == ["evt_42", "evt_42"]
    assert seen.requests[0][2]["Content-Type"] == "application/json"


async def test_rotation_signs_with_both_secrets() -> None:
    old, new = new_secret(), new_secret()
    checks: list[bool] = []

    async def receiver(request: web.Request) -> web.Response:
        body, headers = await request.read(), dict(request.headers)
        assert len(headers["webhook-signature"].split(" ")) == 2
        for secret in (old, new):
            Webhook(secret).verify(body, headers)
            checks.append(True)
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(body, headers)
        return answer(200)

    async with serve(receiver) as (base, _):
        channel = WebhookChannel(LOCAL)
        outcome = await channel.send(message("webhook", WebhookTarget("w1", base, (new, old))))
        await channel.close()
    assert outcome.result == "sent"
    assert checks == [True, True]


@pytest.mark.parametrize(
    ("status", "headers", "result", "retry_after"),
    [
        (200, {}, "sent", None),
        (410, {}, "gone", None),
        (429, {"Retry-After": "30"}, "retry", 30.0),
        (503, {"Retry-After": "7"}, "retry", 7.0),
        (500, {}, "retry", None),
        (400, {}, "failed", None),
        (404, {}, "failed", None),
        (302, {"Location": "http://127.0.0.1:1/"}, "failed", None),
    ],
)
async def test_status_mapping(
    status: int, headers: dict[str, str], result: str, retry_after: float | None
) -> None:
    async def receiver(request: web.Request) -> web.Response:
        return answer(status, "nope " * 300, headers)

    async with serve(receiver) as (base, _):
        channel = WebhookChannel(LOCAL)
        outcome = await channel.send(message("webhook", WebhookTarget("w1", base, (new_secret(),))))
        await channel.close()
    assert outcome.result == result
    assert outcome.status == status
    assert outcome.retry_after == retry_after
    assert len(outcome.detail) <= 500


async def test_several_notifications_are_a_list() -> None:
    async def receiver(request: web.Request) -> web.Response:
        return answer(200)

    second = {**NOTE, "id": "n2"}
    async with serve(receiver) as (base, seen):
        channel = WebhookChannel(LOCAL)
        await channel.send(message("webhook", WebhookTarget("w1", base, (new_secret(),)), NOTE, second))
        await channel.close()
    assert orjson.loads(seen.requests[0][3])["data"]["notifications"] == [NOTE, second]


async def test_refused_and_unreachable_targets() -> None:
    channel = WebhookChannel(EgressPolicy(timeout=2))
    refused = await channel.send(
        message("webhook", WebhookTarget("w1", "http://127.0.0.1:1/x", (new_secret(),)))
    )
    allowed = WebhookChannel(EgressPolicy(allow=parse_allow("127.0.0.1/32"), timeout=2))
    unreachable = await allowed.send(
        message("webhook", WebhookTarget("w1", "http://127.0.0.1:1/x", (new_secret(),)))
    )
    nowhere = await channel.send(
        message("webhook", WebhookTarget("w1", "http://nowhere.invalid/x", (new_secret(),)))
    )
    await channel.close()
    await allowed.close()
    assert nowhere.result == "retry"
    assert "cannot resolve" in nowhere.detail
    assert refused.result == "failed"
    assert "non-public" in refused.detail
    assert unreachable.result == "retry"


async def test_unresolvable_name_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_dns(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)
    channel = WebhookChannel(LOCAL)
    outcome = await channel.send(
        message("webhook", WebhookTarget("w1", "https://hooks.example.org/x", (new_secret(),)))
    )
    await channel.close()
    assert outcome.result == "retry"
    assert "cannot resolve 'hooks.example.org'" in outcome.detail


async def test_secrets_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = new_secret()

    async def echo(request: web.Request) -> web.Response:
        return answer(
            400, f"bad signature; expected with {secret} got {request.headers['webhook-signature']}"
        )

    async with serve(echo) as (base, _):
        channel = WebhookChannel(LOCAL)
        echoed = await channel.send(message("webhook", WebhookTarget("w1", base, (secret,))))
        bad = "whsec_!!not-base64!!" + secret
        malformed = await channel.send(message("webhook", WebhookTarget("w1", base, (bad,))))
        await channel.close()
    assert echoed.result == "failed"
    assert malformed.result == "failed"
    for outcome in (echoed, malformed):
        assert secret not in outcome.detail
        assert secret.removeprefix("whsec_") not in outcome.detail
    assert "whsec_" not in caplog.text
    assert secret not in repr(message("webhook", WebhookTarget("w1", base, (secret,))))
    assert secret.removeprefix("whsec_") not in caplog.text


async def test_redirect_to_loopback_is_not_followed_and_fails() -> None:
    async def inner(request: web.Request) -> web.Response:
        return answer(200)

    async with serve(inner) as (inner_base, inner_seen):

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(inner_base + "/admin")

        async with serve(redirect) as (base, _):
            channel = WebhookChannel(LOCAL)
            outcome = await channel.send(
                message("webhook", WebhookTarget("w1", base + "/hook", (new_secret(),)))
            )
            await channel.close()
    assert (outcome.result, outcome.status) == ("failed", 302)
    assert inner_seen.requests == []

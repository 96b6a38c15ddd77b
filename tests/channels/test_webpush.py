"""Web Push against a local push service that verifies VAPID and decrypts the payload."""

from __future__ import annotations

import base64
import logging
import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.channels.egress import EgressPolicy, parse_allow
from tidings.channels.webpush import WebPushChannel, generate_vapid_keys, topic_of

from .push_service import PushService
from .servers import serve
from .support import NOTE, message

LOCAL = EgressPolicy(allow=parse_allow("127.0.0.1/32"), timeout=5)
SUBJECT = "mailto:ops@example.org"


async def test_push_is_vapid_signed_and_decryptable() -> None:
    keys = generate_vapid_keys()
    service = PushService(keys.public_key)
    async with serve(service) as (base, _):
        channel = WebPushChannel(lambda app: (keys.private_key, SUBJECT), LOCAL)
        target = service.subscribe(base, "s1")
        outcome = await channel.send(
            message("web_push", target, priority="high", replace_key="post:p1", ttl=600)
        )
        await channel.close()
    assert service.refusals == []
    assert outcome.result == "sent"
    assert outcome.status == 201
    [got] = service.received
    assert orjson.loads(got.payload) == NOTE
    assert got.headers["ttl"] == "600"
    assert got.headers["urgency"] == "high"
    assert got.headers["topic"] == topic_of("post:p1")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", got.headers["topic"])
    assert got.claims["aud"] == base
    assert got.claims["sub"] == SUBJECT


async def test_urgency_follows_priority_and_topic_is_optional() -> None:
    keys = generate_vapid_keys()
    service = PushService(keys.public_key)
    async with serve(service) as (base, _):
        channel = WebPushChannel(lambda app: (keys.private_key, SUBJECT), LOCAL)
        for priority in ("low", "normal"):
            await channel.send(message("web_push", service.subscribe(base, "s1"), priority=priority))
        await channel.close()
    assert [r.headers["urgency"] for r in service.received] == ["low", "normal"]
    assert all("topic" not in r.headers for r in service.received)


@pytest.mark.parametrize(
    ("status", "headers", "result", "retry_after"),
    [
        (202, {}, "sent", None),
        (404, {}, "gone", None),
        (410, {}, "gone", None),
        (413, {}, "failed", None),
        (429, {"Retry-After": "12"}, "retry", 12.0),
        (503, {}, "retry", None),
        (400, {}, "failed", None),
    ],
)
async def test_status_mapping(
    status: int, headers: dict[str, str], result: str, retry_after: float | None
) -> None:
    keys = generate_vapid_keys()
    service = PushService(keys.public_key)
    async with serve(service) as (base, _):
        target = service.subscribe(base, "s1")
        service.answers["s1"] = (status, headers)
        channel = WebPushChannel(lambda app: (keys.private_key, SUBJECT), LOCAL)
        outcome = await channel.send(message("web_push", target))
        await channel.close()
    assert (outcome.result, outcome.status, outcome.retry_after) == (result, status, retry_after)
    if status == 413:
        assert "payload too large" in outcome.detail


async def test_unknown_subscription_is_gone_and_oversized_payload_fails_locally() -> None:
    keys = generate_vapid_keys()
    service = PushService(keys.public_key)
    async with serve(service) as (base, seen):
        channel = WebPushChannel(lambda app: (keys.private_key, SUBJECT), LOCAL)
        target = service.subscribe(base, "s1")
        gone = await channel.send(
            message("web_push", target.__class__("x", base + "/push/nope", target.p256dh, target.auth))
        )
        big = await channel.send(message("web_push", target, {**NOTE, "body": "x" * 5000}))
        await channel.close()
    assert gone.result == "gone"
    assert big.result == "failed"
    assert "payload too large" in big.detail
    assert len(seen.requests) == 1


async def test_wrong_vapid_key_is_refused_by_the_service() -> None:
    keys, other = generate_vapid_keys(), generate_vapid_keys()
    service = PushService(keys.public_key)
    async with serve(service) as (base, _):
        channel = WebPushChannel(lambda app: (other.private_key, SUBJECT), LOCAL)
        outcome = await channel.send(message("web_push", service.subscribe(base, "s1")))
        await channel.close()
    assert outcome.result == "failed"
    assert outcome.status == 403


async def test_private_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = generate_vapid_keys()
    service = PushService(keys.public_key)
    async with serve(service) as (base, _):
        target = service.subscribe(base, "s1")
        service.answers["s1"] = (500, {})
        outcomes = []
        for vapid, policy in [
            ((keys.private_key, SUBJECT), LOCAL),
            ((keys.private_key[:-3], SUBJECT), LOCAL),
            ((keys.private_key, "not a contact"), LOCAL),
            ((keys.private_key, SUBJECT), EgressPolicy()),
        ]:
            channel = WebPushChannel(lambda app, vapid=vapid: vapid, policy)
            outcomes.append(await channel.send(message("web_push", target)))
            await channel.close()
    assert [o.result for o in outcomes] == ["retry", "failed", "failed", "failed"]
    for outcome in outcomes:
        assert keys.private_key not in outcome.detail
        assert keys.private_key[:-3] not in outcome.detail
    assert keys.private_key[:20] not in caplog.text
    assert repr(keys) == f"VapidKeys(public_key={keys.public_key!r})"


@given(st.text())
def test_topic_is_always_a_valid_rfc8030_topic(key: str) -> None:
    topic = topic_of(key)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", topic)
    assert topic == topic_of(key)


async def test_several_notifications_are_one_payload() -> None:
    keys = generate_vapid_keys()
    service = PushService(keys.public_key)
    second = {**NOTE, "id": "n2"}
    async with serve(service) as (base, _):
        channel = WebPushChannel(lambda app: (keys.private_key, SUBJECT), LOCAL)
        outcome = await channel.send(message("web_push", service.subscribe(base, "s1"), NOTE, second))
        await channel.close()
    assert outcome.result == "sent"
    assert orjson.loads(service.received[0].payload) == {"notifications": [NOTE, second]}


def test_vapid_keys_are_usable_by_a_browser() -> None:
    keys = generate_vapid_keys()
    assert len(base64.urlsafe_b64decode(keys.public_key + "=")) == 65
    assert base64.urlsafe_b64decode(keys.public_key + "=")[0] == 4
    assert keys.private_key not in repr(keys)

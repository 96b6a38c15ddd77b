"""FCM HTTP v1 against local HTTPS stand-ins for the token endpoint and the API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tidings.channels.base import DeviceTarget
from tidings.channels.fcm import FcmChannel, collapse_id

from .fcm_service import Google, self_signed, service_account
from .servers import serve
from .support import NOTE, message


@pytest.fixture
async def google(tmp_path: Path) -> AsyncIterator[tuple[Google, FcmChannel, dict[str, str]]]:
    server_ctx, client_ctx = self_signed(tmp_path)
    fake = Google()
    async with serve(fake, ssl_context=server_ctx) as (base, _):
        info, public = service_account(base + "/token")
        fake.public_key, fake.client_email, fake.token_uri = public, info["client_email"], info["token_uri"]
        channel = FcmChannel(info, api_base=base, verify=client_ctx)
        yield fake, channel, info
        await channel.close()


def device(token: str = "tok-1") -> DeviceTarget:
    return DeviceTarget("d1", "android", token)


async def test_sends_a_v1_message_with_a_cached_token(
    google: tuple[Google, FcmChannel, dict[str, str]],
) -> None:
    fake, channel, _ = google
    first = await channel.send(
        message("mobile_push", device(), priority="high", replace_key="post:p1", ttl=90)
    )
    second = await channel.send(message("mobile_push", device(), priority="low"))
    assert fake.problems == []
    assert (first.result, first.status, second.result) == ("sent", 200, "sent")
    assert fake.tokens_issued == 1
    sent = fake.messages[0]
    assert sent["token"] == "tok-1"
    assert sent["notification"] == {"title": "Ada commented on your post", "body": "Nice work!"}
    assert orjson.loads(sent["data"]["notification"]) == NOTE
    assert sent["data"]["id"] == "n1"
    assert sent["android"] == {"priority": "HIGH", "ttl": "90s", "collapse_key": collapse_id("post:p1")}
    assert sent["apns"]["headers"] == {"apns-priority": "10", "apns-collapse-id": collapse_id("post:p1")}
    assert fake.messages[1]["android"]["priority"] == "NORMAL"
    assert fake.messages[1]["apns"]["headers"] == {"apns-priority": "5"}


async def test_oversized_notification_is_left_out_of_data(
    google: tuple[Google, FcmChannel, dict[str, str]],
) -> None:
    fake, channel, _ = google
    big = {**NOTE, "data": {"title": "t", "body": "b", "blob": "x" * 5000}}
    outcome = await channel.send(message("mobile_push", device(), big))
    assert outcome.result == "sent"
    assert "notification" not in fake.messages[0]["data"]
    assert fake.messages[0]["data"]["id"] == "n1"


@pytest.mark.parametrize(
    ("token", "result", "status", "retry_after"),
    [
        ("gone", "gone", 404, None),
        ("badtoken", "gone", 400, None),
        ("busy", "retry", 429, 20.0),
        ("down", "retry", 503, None),
        ("badmsg", "failed", 400, None),
    ],
)
async def test_error_mapping(
    google: tuple[Google, FcmChannel, dict[str, str]],
    token: str,
    result: str,
    status: int,
    retry_after: float | None,
) -> None:
    _, channel, _ = google
    outcome = await channel.send(message("mobile_push", device(token)))
    assert (outcome.result, outcome.status, outcome.retry_after) == (result, status, retry_after)


async def test_revoked_access_token_is_refetched(google: tuple[Google, FcmChannel, dict[str, str]]) -> None:
    fake, channel, _ = google
    assert (await channel.send(message("mobile_push", device()))).result == "sent"
    fake.tokens_issued += 1  # the service now expects a newer token than the cached one
    revoked = await channel.send(message("mobile_push", device()))
    assert (revoked.result, revoked.status) == ("retry", 401)
    assert (await channel.send(message("mobile_push", device()))).result == "sent"


async def test_key_and_tokens_never_leak(
    google: tuple[Google, FcmChannel, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, channel, info = google
    ok = await channel.send(message("mobile_push", device("badmsg")))
    fake.token_error = True
    fake.tokens_issued += 1
    denied = await channel.send(message("mobile_push", device()))
    denied = await channel.send(message("mobile_push", device()))
    assert ok.result == "failed"
    assert denied.result == "retry"
    assert "access token" in denied.detail
    key_lines = [line for line in info["private_key"].splitlines() if "PRIVATE KEY" not in line]
    for text in (ok.detail, denied.detail, caplog.text):
        assert not any(line in text for line in key_lines)
        assert "ya29." not in text


def test_unusable_key_names_no_secret() -> None:
    info, _ = service_account("https://127.0.0.1:1/token")
    broken = {**info, "private_key": info["private_key"].replace("\n", "\n!", 3)}
    with pytest.raises(ValueError, match="unusable service-account key") as caught:
        FcmChannel(broken)
    lines = [line for line in info["private_key"].splitlines() if "PRIVATE KEY" not in line]
    assert not any(line in str(caught.value) for line in lines)


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "google.oauth2", None)
    info, _ = service_account("https://127.0.0.1:1/token")
    with pytest.raises(RuntimeError, match=r"tidings\[fcm\]"):
        FcmChannel(info)

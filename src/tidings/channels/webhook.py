"""Webhooks, signed as Standard Webhooks (the spec Svix and others publish; receivers verify with its libraries).

Each attempt POSTs a JSON body ``{"type", "timestamp", "data": {"user", "notification"}}`` (``notifications``,
a list, when the message holds several) with the headers:

- ``webhook-id``: ``message.key`` -- the same on every retry, so the receiver drops duplicates;
- ``webhook-timestamp``: Unix seconds of this attempt (receivers refuse stale ones, so it is not reused);
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` per active secret, separated
  by spaces (two during a rotation: the receiver accepts either).

Secrets are ``whsec_`` + base64 of 32 random bytes (:func:`new_secret`). Answers: 2xx sent, 410 gone (the
endpoint is retired), 429 and 5xx retry (Retry-After honoured), any other status (3xx: redirects are not
followed; 4xx) failed. The connection goes through :mod:`tidings.channels.egress`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time

import orjson

from tidings.channels.base import ChannelName, Message, Outcome, WebhookTarget, bounded, parse_retry_after
from tidings.channels.egress import Egress, EgressPolicy, Reply, attempt, reply_detail
from tidings.core.clock import isoformat

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret. Raises ValueError (without the secret in it) when malformed."""
    raw = secret.removeprefix(PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not base64") from None
    if len(key) < 16:
        raise ValueError("webhook secret is shorter than 16 bytes")
    return key


def signature(secrets: tuple[str, ...], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,<sig>`` per secret, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    sigs = []
    for secret in secrets:
        digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
        sigs.append("v1," + base64.b64encode(digest).decode("ascii"))
    return " ".join(sigs)


def body_of(message: Message, event_type: str, now: float) -> bytes:
    data: dict[str, object] = {"user": message.user}
    if len(message.notifications) == 1:
        data["notification"] = message.notifications[0]
    else:
        data["notifications"] = list(message.notifications)
    return orjson.dumps({"type": event_type, "timestamp": isoformat(now), "data": data})


def verdict(reply: Reply, secrets: tuple[str, ...]) -> Outcome:
    status = reply.status
    detail = reply_detail(reply, secrets)
    if 200 <= status < 300:
        return Outcome("sent", status, detail)
    if status == 410:
        return Outcome("gone", status, detail)
    if status == 429 or status >= 500:
        return Outcome("retry", status, detail, parse_retry_after(reply.headers.get("retry-after")))
    return Outcome("failed", status, detail)


class WebhookChannel:
    """Sends messages whose target is a :class:`WebhookTarget`."""

    name: ChannelName = "webhook"

    def __init__(self, policy: EgressPolicy | None = None, user_agent: str = "Tidings-Webhooks/1") -> None:
        self._egress = Egress(policy)
        self._user_agent = user_agent

    async def send(self, message: Message) -> Outcome:
        target = message.target
        if not isinstance(target, WebhookTarget):
            raise TypeError(f"webhook channel got a {type(target).__name__}")
        masked = target.secrets + tuple(s.removeprefix(PREFIX) for s in target.secrets)
        if not target.secrets:
            return Outcome("failed", detail="the webhook has no signing secret")
        now = time.time()
        timestamp = int(now)
        body = body_of(message, target.event_type, now)
        try:
            signed = signature(target.secrets, message.key, timestamp, body)
        except ValueError as exc:
            return Outcome("failed", detail=bounded(str(exc), masked))
        headers = {
            "content-type": "application/json",
            "user-agent": self._user_agent,
            "webhook-id": message.key,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signed,
        }
        reply = await attempt(self._egress, target.url, headers=headers, content=body, secrets=masked)
        return reply if isinstance(reply, Outcome) else verdict(reply, masked)

    async def close(self) -> None:
        await self._egress.close()

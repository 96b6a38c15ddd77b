"""A local Web Push service for the tests: verifies VAPID (RFC 8292) and decrypts payloads (RFC 8291).

A :class:`Browser` makes what a browser's ``pushManager.subscribe`` makes: a P-256 key pair and a 16-byte auth
secret; the push service keeps its private key (as the real service does not -- here it stands in for the
browser receiving the push) so each accepted message is decrypted and recorded. ``answers`` scripts the status
per subscription id (default 201).
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings.channels.base import WebPushTarget


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self, endpoint: str, sub_id: str) -> WebPushTarget:
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return WebPushTarget(sub_id, endpoint, b64url(point), b64url(self.auth))


@dataclass
class Received:
    sub_id: str
    headers: dict[str, str]
    claims: dict[str, Any]
    payload: bytes


@dataclass
class PushService:
    """The handler: ``application_server_key`` is the VAPID public key subscriptions were made with."""

    application_server_key: str
    browsers: dict[str, Browser] = field(default_factory=dict)
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    def subscribe(self, base: str, sub_id: str) -> WebPushTarget:
        browser = self.browsers.setdefault(sub_id, Browser())
        return browser.subscription(f"{base}/push/{sub_id}", sub_id)

    def refuse(self, why: str, status: int = 403) -> web.Response:
        self.refusals.append(why)
        return web.Response(status=status, text=why)

    async def __call__(self, request: web.Request) -> web.Response:
        sub_id = request.path.rsplit("/", 1)[-1]
        if sub_id not in self.browsers:
            return web.Response(status=404, text="no such subscription")
        scheme, _, params = request.headers.get("Authorization", "").partition(" ")
        fields = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        if scheme != "vapid" or "t" not in fields or "k" not in fields:
            return self.refuse("missing vapid authorization", 401)
        if fields["k"] != self.application_server_key:
            return self.refuse("k is not the applicationServerKey")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
        origin = f"{request.scheme}://{request.host}"
        try:
            claims = jwt.decode(fields["t"], public, algorithms=["ES256"], audience=origin)
        except jwt.PyJWTError as exc:
            return self.refuse(f"bad vapid jwt: {exc}")
        if not time.time() < claims["exp"] <= time.time() + 86400:
            return self.refuse("exp out of range")
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return self.refuse("sub is not a contact")
        if request.headers.get("Content-Encoding") != "aes128gcm" or "TTL" not in request.headers:
            return self.refuse("missing Content-Encoding or TTL", 400)
        browser = self.browsers[sub_id]
        payload = http_ece.decrypt(
            await request.read(), private_key=browser.key, auth_secret=browser.auth, version="aes128gcm"
        )
        self.received.append(
            Received(sub_id, {k.lower(): v for k, v in request.headers.items()}, claims, payload)
        )
        status, headers = self.answers.get(sub_id, (201, {}))
        return web.Response(
            status=status, headers=headers, text="" if status < 300 else "answer " + str(status)
        )

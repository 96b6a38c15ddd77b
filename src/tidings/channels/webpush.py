"""Web Push: RFC 8030 (the push protocol), RFC 8291 (payload encryption), RFC 8292 (VAPID).

Each app has its own VAPID key pair (:func:`generate_vapid_keys`): the private key stays on the server (stored as
base64url of its 32-byte scalar; PEM and base64url DER are read too), the public key (base64url of the
uncompressed P-256 point) is the ``applicationServerKey`` the browser subscribes with. The channel is built with
``vapid_for(app) -> (private_key, subject)``, the subject a ``mailto:`` or ``https:`` contact.

One send: the payload is the notification JSON (``{"notifications": [...]}`` when the message holds several),
encrypted ``aes128gcm`` for the subscription's ``p256dh``/``auth`` with ``http_ece``; the VAPID JWT (ES256, ``aud``
the endpoint's origin, ``exp`` 12 hours ahead, at most 24 as RFC 8292 demands) is signed with ``py_vapid``; the
headers are ``TTL`` (message.ttl), ``Urgency`` (the priority: low/normal/high), ``Topic`` (from replace_key, hashed
into the 32-character base64url alphabet RFC 8030 allows). The POST goes through :mod:`tidings.channels.egress`
(pywebpush's own senders use requests/aiohttp and would bypass the SSRF guard, so only these two libraries are
used). Answers: 201/202 (any 2xx) sent, 404/410 gone (the subscription expired), 413 failed (payload too
large), 429 and 5xx retry (Retry-After honoured), other 4xx failed (e.g. 403: a VAPID key mismatch).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import http_ece
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from tidings.channels.base import ChannelName, Message, Outcome, WebPushTarget, bounded, parse_retry_after
from tidings.channels.egress import Egress, EgressPolicy, Reply, attempt, reply_detail

VapidFor = Callable[[str], tuple[str, str]]
MAX_PLAINTEXT = 4096 - 16 - 86 - 1  # one aes128gcm record: header (86), tag (16), padding delimiter (1)
JWT_LIFETIME = 12 * 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class VapidKeys:
    """An app's VAPID key pair: ``private_key`` (base64url, secret) and ``public_key`` (applicationServerKey)."""

    private_key: str
    public_key: str

    def __repr__(self) -> str:
        return f"VapidKeys(public_key={self.public_key!r})"


def generate_vapid_keys() -> VapidKeys:
    key = ec.generate_private_key(ec.SECP256R1())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return VapidKeys(b64url(scalar), b64url(point))


def load_vapid(private_key: str) -> Vapid02:
    """A signer for ``private_key`` (base64url raw or DER, or PEM). Raises ValueError naming no key material."""
    try:
        if private_key.lstrip().startswith("-----BEGIN"):
            return Vapid02.from_pem(private_key.encode())
        return Vapid02.from_string(private_key)
    except Exception:
        raise ValueError("the app's VAPID private key is unreadable") from None


def topic_of(replace_key: str) -> str:
    """An RFC 8030 Topic (at most 32 base64url characters) standing for ``replace_key``."""
    return b64url(hashlib.sha256(replace_key.encode()).digest())[:32]


def payload_of(message: Message) -> bytes:
    if len(message.notifications) == 1:
        return orjson.dumps(message.notifications[0])
    return orjson.dumps({"notifications": list(message.notifications)})


def encrypt(payload: bytes, target: WebPushTarget) -> bytes:
    """RFC 8291 aes128gcm: an ephemeral server key, the subscription's p256dh and auth secret."""
    server_key = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        payload,
        private_key=server_key,
        dh=unb64url(target.p256dh),
        auth_secret=unb64url(target.auth),
        version="aes128gcm",
    )
    return body


def verdict(reply: Reply, masked: tuple[str, ...]) -> Outcome:
    status, detail = reply.status, reply_detail(reply, masked)
    if 200 <= status < 300:
        return Outcome("sent", status, detail)
    if status in (404, 410):
        return Outcome("gone", status, detail)
    if status == 413:
        return Outcome("failed", status, bounded("payload too large for the push service; " + detail))
    if status == 429 or status >= 500:
        return Outcome("retry", status, detail, parse_retry_after(reply.headers.get("retry-after")))
    return Outcome("failed", status, detail)


class WebPushChannel:
    """Sends messages whose target is a :class:`WebPushTarget`."""

    name: ChannelName = "web_push"

    def __init__(self, vapid_for: VapidFor, policy: EgressPolicy | None = None) -> None:
        self._vapid_for = vapid_for
        self._signers: dict[str, tuple[str, Vapid02]] = {}
        self._egress = Egress(policy)

    def _signer(self, app: str) -> tuple[str, str, Vapid02]:
        private_key, subject = self._vapid_for(app)
        cached = self._signers.get(app)
        if cached is None or cached[0] != private_key:
            cached = (private_key, load_vapid(private_key))
            self._signers[app] = cached
        return private_key, subject, cached[1]

    async def send(self, message: Message) -> Outcome:
        target = message.target
        if not isinstance(target, WebPushTarget):
            raise TypeError(f"web push channel got a {type(target).__name__}")
        payload = payload_of(message)
        if len(payload) > MAX_PLAINTEXT:
            return Outcome(
                "failed", detail=f"payload too large: {len(payload)} bytes, at most {MAX_PLAINTEXT}"
            )
        parts = urlsplit(target.endpoint)
        private_key = ""
        try:
            private_key, subject, signer = self._signer(message.app)
            body = encrypt(payload, target)
            claims = {
                "aud": f"{parts.scheme}://{parts.netloc}",
                "sub": subject,
                "exp": int(time.time()) + JWT_LIFETIME,
            }
            authorization = signer.sign(claims)["Authorization"]
        except Exception as exc:  # a bad key, subscription or subject: no provider will take it
            return Outcome("failed", detail=bounded(f"cannot prepare the push: {exc}", (private_key,)))
        headers = {
            "authorization": authorization,
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "ttl": str(max(0, message.ttl)),
            "urgency": message.priority,
        }
        if message.replace_key:
            headers["topic"] = topic_of(message.replace_key)
        masked = (private_key,) if private_key else ()
        reply = await attempt(self._egress, target.endpoint, headers=headers, content=body, secrets=masked)
        return reply if isinstance(reply, Outcome) else verdict(reply, masked)

    async def close(self) -> None:
        await self._egress.close()

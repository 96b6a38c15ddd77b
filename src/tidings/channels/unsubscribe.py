"""Signed one-click unsubscribe tokens (the URL behind RFC 8058's ``List-Unsubscribe``).

A token is ``u1.<payload>.<mac>``: ``payload`` the base64url of the JSON ``[app, user, category]``, ``mac`` the
base64url of HMAC-SHA256 over ``"u1." + payload`` keyed with the app's secret. Anyone holding a token may
unsubscribe that user from that category (that is what one click means), nobody can make one for another user,
app or category without the secret, and any change to a token makes :func:`verify` refuse it. Tokens do not
expire: a mail read a year later must still unsubscribe. Rotating the app secret revokes every token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

import orjson

VERSION = "u1"


class BadToken(ValueError):
    """The token is malformed, for an unknown app, or its signature does not match."""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    app: str
    user: str
    category: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("malformed token") from None


def _mac(secret: str | bytes, signed: str) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def make_token(secret: str | bytes, app: str, user: str, category: str) -> str:
    """A token unsubscribing ``user`` of ``app`` from ``category`` (e.g. a notification type, or "all")."""
    if not secret:
        raise ValueError("an unsubscribe secret may not be empty")
    payload = _b64(orjson.dumps([app, user, category]))
    signed = f"{VERSION}.{payload}"
    return f"{signed}.{_b64(_mac(secret, signed))}"


def verify(token: str, secret_for: Callable[[str], str | bytes | None]) -> Unsubscribe:
    """What ``token`` says, once its signature checks with ``secret_for(app)``; raises :class:`BadToken`."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise BadToken("malformed token")
    try:
        fields = orjson.loads(_unb64(parts[1]))
    except orjson.JSONDecodeError:
        raise BadToken("malformed token") from None
    if not (isinstance(fields, list) and len(fields) == 3 and all(isinstance(f, str) for f in fields)):
        raise BadToken("malformed token")
    secret = secret_for(fields[0])
    if not secret:
        raise BadToken("unknown app")
    if not hmac.compare_digest(_mac(secret, f"{parts[0]}.{parts[1]}"), _unb64(parts[2])):
        raise BadToken("bad signature")
    return Unsubscribe(*fields)

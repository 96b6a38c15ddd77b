"""Request and response bodies of the offline channels' routes (push subscriptions, devices, webhooks, user
profiles, deliveries). Strict like ``schemas``: unknown fields answer 422; every check that can be made on
the body alone is made here, so a route never writes half of a bad request."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tidings.core.rules import known_zones

_STRICT = ConfigDict(extra="forbid", strict=True)
EMAIL = re.compile(r"[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
LOCALE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8}){0,3}")
EVENT_TYPE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"


def unb64url(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def http_url(url: str, what: str) -> str:
    """An absolute http(s) URL with a host and no credentials; raises ValueError naming ``what``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https URL")
    if parts.username or parts.password:
        raise ValueError(f"{what} may not hold credentials")
    return url


class PushKeys(BaseModel):
    model_config = _STRICT
    p256dh: str = Field(max_length=128, description="base64url of the browser's uncompressed P-256 point")
    auth: str = Field(max_length=64, description="base64url of the 16-byte auth secret")

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        raw = unb64url(value)
        if len(raw) != 65 or raw[0] != 4:
            raise ValueError("keys.p256dh must be an uncompressed P-256 point (65 bytes)")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise ValueError("keys.p256dh is not a point on P-256") from None
        return value

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        if len(unb64url(value)) != 16:
            raise ValueError("keys.auth must be 16 bytes")
        return value


class PushSubscriptionIn(BaseModel):
    """What the browser's ``PushSubscription.toJSON()`` gives."""

    model_config = _STRICT
    endpoint: str = Field(max_length=2048)
    expirationTime: float | None = None  # the browser's name for it
    keys: PushKeys

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return http_url(value, "endpoint")


class PushSubscriptionOut(BaseModel):
    id: str
    endpoint: str
    created_at: float


class PushSubscriptions(BaseModel):
    items: list[PushSubscriptionOut]


class VapidKey(BaseModel):
    public_key: str = Field(description="the applicationServerKey to subscribe with (base64url)")


class DeviceIn(BaseModel):
    model_config = _STRICT
    platform: Literal["android", "ios", "web"]
    token: str = Field(min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")


class DeviceOut(BaseModel):
    id: str
    platform: str
    created_at: float


class Devices(BaseModel):
    items: list[DeviceOut]


class WebhookIn(BaseModel):
    model_config = _STRICT
    url: str = Field(max_length=2048)
    events: Annotated[list[Annotated[str, Field(pattern=EVENT_TYPE)]], Field(max_length=100)] = Field(
        default_factory=list, description="event types to deliver; empty: all"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value, "url")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    disabled: bool
    failing_since: float | None
    created_at: float


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret (whsec_...): shown only now")


class Webhooks(BaseModel):
    items: list[WebhookOut]


class SecretRotated(BaseModel):
    id: str
    secret: str = Field(description="the new signing secret: shown only now")
    previous_valid_until: float = Field(description="until then the previous secret signs too")


class ProfileIn(BaseModel):
    model_config = _STRICT
    email: str | None = Field(default=None, max_length=320)
    locale: str | None = Field(default=None, max_length=35)
    time_zone: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL.fullmatch(value):
            raise ValueError("not an email address")
        return value

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value is not None and not LOCALE.fullmatch(value):
            raise ValueError("not a locale (e.g. en, pt-BR)")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and value not in known_zones():
            raise ValueError("not an IANA time zone (e.g. Europe/Paris)")
        return value


class ProfileOut(BaseModel):
    user: str
    email: str | None
    locale: str | None
    time_zone: str | None
    name: str | None


class DeliveryOut(BaseModel):
    id: int
    user: str
    seq: int
    channel: str
    target: str
    status: str
    attempts: int
    next_at: float
    last_error: str | None
    updated_at: float


class DeliveriesPage(BaseModel):
    items: list[DeliveryOut]


class Unsubscribed(BaseModel):
    unsubscribed: bool
    category: str

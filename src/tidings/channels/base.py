"""The channel interface: send ONE message to ONE target through a provider, and say what happened.

A channel adapter (``webhook``, ``webpush``, ``email``, ``fcm``) owns the provider protocol and nothing else:
it does not read the ``deferred`` table, keep leases, count attempts or schedule retries. The sender role
does that, on top of this module:

- it builds a :class:`Message` per (notification, channel, target) -- ``key`` is stable across attempts, so
  the provider (or the receiver) can drop duplicates: the webhook ``webhook-id``, the email ``Message-ID``;
- it awaits :meth:`Channel.send`, which never raises for a provider error (network, status, template,
  refused address): every such case is an :class:`Outcome`;
- it acts on ``Outcome.result``: ``sent`` (done), ``retry`` (try again later, not before ``retry_after``
  seconds when given), ``failed`` (permanent: dead-letter it), ``gone`` (the target is invalid now: the
  subscription, device token, mailbox or endpoint must be removed, and the message dropped).

Invariants: secrets stay out of ``repr`` (a logged Message shows no webhook secret or push auth secret);
``Outcome.detail`` is bounded (:data:`DETAIL_LIMIT` characters) and never holds a secret (VAPID
private key, SMTP password, webhook secret, service-account key); adapters build it from the provider's answer
through :func:`bounded`. ``Channel.close`` releases pooled connections; a closed channel is not used again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from tidings.core.models import JSON, Priority

ChannelName = Literal["web_push", "email", "webhook", "mobile_push"]
Result = Literal["sent", "retry", "failed", "gone"]
DETAIL_LIMIT = 500


@dataclass(frozen=True, slots=True)
class WebPushTarget:
    """A browser's PushSubscription: ``endpoint`` URL, ``p256dh`` (its P-256 public key) and ``auth`` (the
    16-byte auth secret), both base64url as the browser's ``subscription.toJSON()`` gives them."""

    id: str
    endpoint: str
    p256dh: str
    auth: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class EmailTarget:
    """A mailbox. ``unsubscribe_url`` (the one-click RFC 8058 URL, see ``channels.unsubscribe``) may be empty:
    then no List-Unsubscribe headers are sent."""

    address: str
    name: str = ""
    locale: str = "en"
    unsubscribe_url: str = ""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """An app's webhook endpoint. ``secrets``: the active signing secrets (``whsec_`` + base64), newest first;
    every one signs (two during a rotation). ``event_type`` is the ``type`` of the delivered body."""

    id: str
    url: str
    secrets: tuple[str, ...] = field(repr=False)
    event_type: str = "notification.created"


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    """A mobile (or web) device registered with FCM: ``token`` is its registration token."""

    id: str
    platform: Literal["android", "ios", "web"]
    token: str


Target = WebPushTarget | EmailTarget | WebhookTarget | DeviceTarget


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery attempt of one or more notifications to one target.

    ``notifications`` holds the notification JSON objects (as the inbox serves them): one, or several for an
    email digest. ``replace_key`` (e.g. the aggregate's group key) lets the provider replace an older undelivered
    message with this one: the Web Push ``Topic`` header, FCM's collapse key. ``ttl``: seconds the provider may
    hold the message for an offline device.
    """

    key: str
    app: str
    user: str
    channel: ChannelName
    target: Target
    notifications: tuple[JSON, ...]
    priority: Priority = "normal"
    attempt: int = 1
    replace_key: str | None = None
    ttl: int = 86400


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one send attempt came to. ``status``: the provider's HTTP or SMTP status when there was one;
    ``retry_after``: seconds, from the provider's Retry-After when it gave one."""

    result: Result
    status: int | None = None
    detail: str = ""
    retry_after: float | None = None


class Channel(Protocol):
    """A provider adapter. ``send`` never raises for provider errors (it returns an Outcome); it may raise
    for programming errors (a target of the wrong type)."""

    name: ChannelName

    async def send(self, message: Message) -> Outcome: ...

    async def close(self) -> None: ...


def bounded(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every secret in ``secrets`` masked, cut to :data:`DETAIL_LIMIT` characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())

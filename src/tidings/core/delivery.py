"""The offline deliveries ledger as pure data and pure decisions: what a sender does with an outcome.

A **delivery** is one (app, user, seq, channel, target) row of the ``deliveries`` table. Its ``status``:

- ``pending``: to be sent at ``next_at`` (a row leased by a sender is still ``pending``: it is in flight);
- ``sent``: the provider accepted it (terminal);
- ``failed``: the target is gone (the subscription, device, mailbox or endpoint was removed) or the channel is
  not configured in this deployment (terminal, ``last_error`` says which);
- ``cancelled``: the user read or saw the notification before the send (terminal; a ``cancel`` decision);
- ``expired``: the notification outlived its type's TTL before it could be sent (terminal);
- ``dead``: a permanent provider refusal, or the attempts ran out: the dead-letter list (``tidings
  deliveries dead``), from which an operator may send it again (``tidings deliveries retry``).

:func:`settle` maps a channel :class:`Outcome`-like result to the next status, with full-jitter backoff
(``core.backoff``) that honours the provider's Retry-After and a bounded number of attempts per channel.
Everything here is pure: the caller passes ``now`` and the randomness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from tidings.core.backoff import full_jitter

Status = Literal["pending", "sent", "failed", "cancelled", "expired", "dead"]
STATUSES: tuple[Status, ...] = ("pending", "sent", "failed", "cancelled", "expired", "dead")
TERMINAL: frozenset[str] = frozenset({"sent", "failed", "cancelled", "expired", "dead"})
WEBHOOK_DISABLE_AFTER = 86400.0  # an endpoint failing this long (no success since) is disabled
PLATFORMS = ("android", "ios", "web")

# The target column: which of the user's (or app's) targets a delivery goes to.
EMAIL_TARGET = "email"


def push_target(sub_id: str) -> str:
    return f"push:{sub_id}"


def device_target(device_id: str) -> str:
    return f"device:{device_id}"


def webhook_target(endpoint_id: str) -> str:
    return f"webhook:{endpoint_id}"


def target_id(target: str) -> str:
    """The id part of a target column value (``push:abc`` -> ``abc``; ``email`` -> ``email``)."""
    return target.partition(":")[2] or target


def message_key(app: str, user: str, seqs: tuple[int, ...], channel: str, target: str) -> str:
    """The idempotency key of a message: the same for every attempt of the same (notifications, channel,
    target), so a provider or receiver drops a resend after a crash (the webhook-id, the email Message-ID)."""
    raw = f"{app}\x00{user}\x00{','.join(map(str, seqs))}\x00{channel}\x00{target}"
    return "msg_" + hashlib.sha256(raw.encode()).hexdigest()[:32]


# --- records -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    app: str
    user: str
    email: str | None = None
    locale: str | None = None
    time_zone: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class PushSubscription:
    id: str
    app: str
    user: str
    endpoint: str
    p256dh: str
    auth: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    app: str
    user: str
    platform: str
    token: str
    created_at: float


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """``secrets``: newest first; the older ones sign too until ``rotated_until`` (then they are dropped)."""

    id: str
    app: str
    url: str
    events: tuple[str, ...]
    secrets: tuple[str, ...] = field(repr=False)
    created_at: float
    rotated_until: float | None = None
    disabled: bool = False
    failing_since: float | None = None

    def active_secrets(self, now: float) -> tuple[str, ...]:
        if self.rotated_until is not None and now >= self.rotated_until:
            return self.secrets[:1]
        return self.secrets

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased to one sender: ``attempts`` already counts this attempt; ``payload`` is the inbox
    row's notification JSON."""

    id: int
    app: str
    user: str
    seq: int
    channel: str
    target: str
    event_id: str
    digest: bool
    attempts: int
    created_at: float
    payload: bytes
    traceparent: str | None = None  # the W3C context the send continues, when its event was traced
    tracestate: str | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """What became of a claimed delivery. ``remove_target``: the target is gone, delete it from the store."""

    id: int
    status: Status
    next_at: float = 0.0
    error: str | None = None
    remove_target: bool = False
    ok: bool | None = None  # webhooks: True a success, False a failure (for failing_since), None neither


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery as the API and the CLI show it."""

    id: int
    app: str
    user: str
    seq: int
    channel: str
    target: str
    event_id: str
    status: str
    attempts: int
    next_at: float
    last_error: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class Backlog:
    """The ledger at a glance: deliveries due and free, the oldest due time (None: none), dead letters
    (deliveries and fan-out events) and webhook endpoints disabled for failing too long."""

    due: int
    oldest_due: float | None
    dead: int
    disabled_webhooks: int


@dataclass(frozen=True, slots=True)
class DeadEvent:
    id: int
    app: str
    event_id: str
    error: str
    at: float


# --- decisions -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff of one channel: full jitter from ``base`` doubling to ``cap``, or a fixed ``schedule`` of
    delays (seconds, each jittered by +-25%); at most ``max_attempts`` attempts, then dead."""

    base: float = 5.0
    cap: float = 3600.0
    max_attempts: int = 8
    schedule: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Settled:
    status: Status
    next_at: float = 0.0
    remove_target: bool = False


def delay(policy: RetryPolicy, attempts: int, rand: float, retry_after: float | None) -> float:
    """Seconds before the next attempt after ``attempts`` tries (>= 1): never before ``retry_after``."""
    if policy.schedule:
        step = policy.schedule[min(attempts, len(policy.schedule)) - 1]
        wait = step * (0.75 + 0.5 * rand)
    else:
        wait = full_jitter(attempts - 1, rand, base=policy.base, cap=policy.cap)
    return max(wait, retry_after or 0.0)


def settle(
    result: Literal["sent", "retry", "failed", "gone"],
    attempts: int,
    policy: RetryPolicy,
    *,
    now: float,
    rand: float,
    retry_after: float | None = None,
) -> Settled:
    """The next status of a delivery after attempt number ``attempts`` came to ``result``."""
    if result == "sent":
        return Settled("sent")
    if result == "gone":
        return Settled("failed", remove_target=True)
    if result == "failed" or attempts >= policy.max_attempts:
        return Settled("dead")
    return Settled("pending", now + delay(policy, attempts, rand, retry_after))


def expired(created_at: float, ttl: float | None, now: float) -> bool:
    """Whether a notification made at ``created_at`` outlived ``ttl`` seconds (None: never stale)."""
    return ttl is not None and now - created_at > ttl


def policies(
    base: float, cap: float, max_attempts: int, webhook_schedule: tuple[float, ...]
) -> Mapping[str, RetryPolicy]:
    """The retry policy per channel: webhooks follow their own schedule when one is configured."""
    common = RetryPolicy(base, cap, max_attempts)
    hooks = (
        RetryPolicy(base, cap, len(webhook_schedule) + 1, webhook_schedule) if webhook_schedule else common
    )
    return {"web_push": common, "email": common, "mobile_push": common, "webhook": hooks}


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"5,30,300"`` -> (5.0, 30.0, 300.0); raises ValueError for a negative or unreadable delay."""
    steps = tuple(float(part) for part in text.split(",") if part.strip())
    if any(step < 0 for step in steps):
        raise ValueError("a retry delay may not be negative")
    return steps

"""The sender role: claim due deliveries -> build messages -> send them (bounded) -> record what happened.

Any number of senders run side by side (``tidings sender`` replicas, and one inside ``tidings serve``): the
store's ``claim`` leases each delivery to one of them (``ports.Outbound``), and a sender that dies leaves its
leases to expire, after which another takes the rows again. The attempt number is raised in the claim, before
the send, and ``Message.key`` is the same for every attempt of a (notification(s), channel, target): a resend
after a crash carries the same webhook-id / Message-ID, so the receiver drops the duplicate.

Per claimed batch:

- a notification read, seen or replaced since it was decided is ``cancelled`` by the claim itself;
- one past its type's TTL (the app's rules) is ``expired``;
- a channel this deployment does not configure (email without ``TIDINGS_SMTP_URL`` and
  ``TIDINGS_EMAIL_FROM``, mobile push without ``TIDINGS_FCM_CREDENTIALS``) is ``failed`` with a reason naming
  the setting: kept pending it would pile up unbounded behind a switch that may never be turned on;
- a user's due email *digest* rows join into ONE mail (one EmailTarget, several notifications);
- the rest is sent, at most ``sender_concurrency`` at a time, and each outcome settles as ``core.delivery``
  decides (retry with full-jitter backoff honouring Retry-After, bounded attempts -> dead, gone -> the
  target is removed).

Secrets (VAPID private keys, webhook secrets, the SMTP password, the service-account key) never reach a log
line, a metric or ``last_error``: the channels mask them out of ``Outcome.detail`` and nothing else is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import orjson
import structlog

from tidings.channels.base import (
    Channel,
    ChannelName,
    DeviceTarget,
    EmailTarget,
    Message,
    Outcome,
    Target,
    WebhookTarget,
    WebPushTarget,
    bounded,
)
from tidings.channels.egress import EgressPolicy, parse_allow
from tidings.channels.unsubscribe import make_token
from tidings.channels.webpush import generate_vapid_keys
from tidings.core.clock import Clock, SystemClock
from tidings.core.delivery import (
    Claimed,
    Device,
    Finished,
    Profile,
    PushSubscription,
    RetryPolicy,
    WebhookEndpoint,
    expired,
    message_key,
    parse_schedule,
    policies,
    settle,
)
from tidings.core.models import JSON, TraceCarrier
from tidings.core.rules import AppRules
from tidings.errors import ConfigError, TidingsError
from tidings.observability import tracing
from tidings.observability.funnel import Funnel
from tidings.ports import Store
from tidings.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = structlog.get_logger("tidings.sender")

OFF = {
    "email": "email is not configured here: set TIDINGS_SMTP_URL and TIDINGS_EMAIL_FROM",
    "mobile_push": "mobile push is not configured here: set TIDINGS_FCM_CREDENTIALS",
}
SAMPLE_INTERVAL = 5.0  # seconds between two samples of the queue depth and dead letters
RULES_TTL = 5.0  # seconds an app's rules (TTLs, categories) are cached
DEFAULT_TTL = 86400


def new_vapid_pair() -> tuple[str, str]:
    keys = generate_vapid_keys()
    return keys.private_key, keys.public_key


class VapidCache:
    """Apps' VAPID keys, loaded (or made, for an app that has none yet) before a batch's pushes are sent;
    ``for_app`` is the synchronous lookup ``WebPushChannel`` needs."""

    def __init__(self, store: Store, clock: Clock, subject: str) -> None:
        self._store, self._clock, self._subject = store, clock, subject
        self._keys: dict[str, str] = {}

    async def load(self, app: str) -> None:
        if app not in self._keys:
            private, _ = await self._store.outbound.vapid(app, new_vapid_pair, self._clock.time())
            self._keys[app] = private

    def for_app(self, app: str) -> tuple[str, str]:
        return self._keys[app], self._subject


def vapid_subject(settings: Settings) -> str:
    if settings.vapid_subject:
        return settings.vapid_subject
    if settings.public_url.startswith("https://"):
        return settings.public_url
    return "mailto:tidings@localhost"


def build_channels(settings: Settings, vapid: VapidCache) -> dict[str, Channel]:
    """The channels ``settings`` configure; webhooks and Web Push need nothing but the egress allow-list."""
    from tidings.channels.webhook import WebhookChannel
    from tidings.channels.webpush import WebPushChannel

    try:
        policy = EgressPolicy(allow=parse_allow(settings.egress_allow))
    except ValueError as exc:
        raise ConfigError(f"TIDINGS_EGRESS_ALLOW: {exc}") from exc
    channels: dict[str, Channel] = {
        "webhook": WebhookChannel(policy),
        "web_push": WebPushChannel(vapid.for_app, policy),
    }
    if settings.smtp_url and settings.email_from:
        from tidings.channels.email import EmailChannel

        try:
            channels["email"] = EmailChannel(settings.smtp_url, settings.email_from)
        except ValueError as exc:
            raise ConfigError(f"TIDINGS_SMTP_URL: {exc}") from None  # the message names no password
    if settings.fcm_credentials:
        from tidings.channels.fcm import API_BASE, FcmChannel

        try:
            key = Path(settings.fcm_credentials).read_text()
        except OSError as exc:
            raise ConfigError(f"TIDINGS_FCM_CREDENTIALS cannot be read: {exc.strerror}") from None
        verify: bool | ssl.SSLContext = True
        if settings.fcm_ca_file:
            verify = ssl.create_default_context(cafile=settings.fcm_ca_file)
        try:
            channels["mobile_push"] = FcmChannel(
                key,
                api_base=settings.fcm_api_base or API_BASE,
                token_uri=settings.fcm_token_uri or None,
                verify=verify,
            )
        except ValueError as exc:
            raise ConfigError(f"TIDINGS_FCM_CREDENTIALS: {exc}") from None
    return channels


def _span_of(job: Job) -> Span | None:
    """``sender.send`` under the context its first row carries (the event's ``store.write`` span), or None
    when that row was not traced. Attributes: channel, attempt, event id; never a target, token or body."""
    first = job.rows[0]
    if first.traceparent is None:
        return None
    carrier: TraceCarrier = {"traceparent": first.traceparent}
    if first.tracestate:
        carrier["tracestate"] = first.tracestate
    attributes = {
        "tidings.channel": job.message.channel,
        "tidings.attempt": job.message.attempt,
        "tidings.event.id": first.event_id,
        "tidings.app": first.app,
        "tidings.rows": len(job.rows),
    }
    return tracing.start_span("sender.send", carrier, attributes)


@dataclass(frozen=True, slots=True)
class Job:
    rows: tuple[Claimed, ...]
    message: Message


def groups(claimed: Sequence[Claimed]) -> list[tuple[Claimed, ...]]:
    """One group per message: a user's due email digest rows together, everything else alone."""
    digests: dict[tuple[str, str], list[Claimed]] = {}
    out: list[tuple[Claimed, ...]] = []
    for row in claimed:
        if row.channel == "email" and row.digest:
            digests.setdefault((row.app, row.user), []).append(row)
        else:
            out.append((row,))
    out += [tuple(sorted(rows, key=lambda r: r.seq)) for rows in digests.values()]
    return out


class Sender:
    """The loop of one sender. ``channels``: by channel name (default: what ``settings`` configure)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Clock | None = None,
        funnel: Funnel | None = None,
        channels: Mapping[str, Channel] | None = None,
        owner: str | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock or SystemClock()
        self._funnel = funnel or Funnel(self._clock)
        self._vapid = VapidCache(store, self._clock, vapid_subject(settings))
        self._channels = dict(channels) if channels is not None else build_channels(settings, self._vapid)
        self.owner = owner or f"{socket.gethostname()[:30]}-{os.getpid()}-{random.getrandbits(32):08x}"
        self._rand = rand
        try:
            schedule = parse_schedule(settings.webhook_retry_schedule)
        except ValueError as exc:
            raise ConfigError(f"TIDINGS_WEBHOOK_RETRY_SCHEDULE: {exc}") from None
        self._policies = policies(
            settings.sender_retry_base, settings.sender_retry_cap, settings.sender_max_attempts, schedule
        )
        self._limit = asyncio.Semaphore(max(1, settings.sender_concurrency))
        self._stop = asyncio.Event()
        self._rules: dict[str, tuple[float, AppRules]] = {}
        self._secrets: dict[str, str] = {}
        self._sampled_at = -SAMPLE_INTERVAL

    @property
    def vapid(self) -> VapidCache:
        return self._vapid

    def stop(self) -> None:
        """Finish the batch in hand, then return from ``run``."""
        self._stop.set()

    async def run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    sent = await self.tick()
                    failures = 0
                except TidingsError as exc:
                    failures += 1
                    delay = min(30.0, 0.5 * 2 ** min(failures, 6)) * (0.5 + self._rand() / 2)
                    log.warning("sender_retry", error=exc.code, delay=round(delay, 3))
                    await self._pause(delay)
                    continue
                if sent == 0:
                    await self._pause(self._settings.sender_poll)
        finally:
            await self.close()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def close(self) -> None:
        for channel in self._channels.values():
            try:
                await channel.close()
            except Exception:
                log.exception("channel_close_failed", channel=channel.name)

    async def tick(self) -> int:
        """One claim and its sends; returns how many deliveries it claimed."""
        s = self._settings
        await self._sample()
        claimed = await self._store.outbound.claim(
            self.owner, self._clock.time(), s.sender_lease, s.sender_batch
        )
        if claimed:
            await self.deliver(claimed)
        return len(claimed)

    async def _sample(self) -> None:
        now = self._clock.time()
        if now - self._sampled_at < SAMPLE_INTERVAL:
            return
        self._sampled_at = now
        backlog = await self._store.outbound.depth(now)
        oldest = backlog.oldest_due
        self._funnel.offline_queue(
            backlog.due, now - oldest if oldest is not None else 0.0, backlog.dead, backlog.disabled_webhooks
        )

    async def deliver(self, claimed: Sequence[Claimed]) -> None:
        now = self._clock.time()
        found = await self._store.outbound.targets(claimed)
        finished: list[Finished] = []
        jobs: list[Job] = []
        for group in groups(claimed):
            job = await self._prepare(group, found, now, finished)
            if job is not None:
                jobs.append(job)
        outcomes = await asyncio.gather(*[self._send(job) for job in jobs])
        done = self._clock.time()
        latencies: dict[str, list[float]] = {}
        for job, outcome in zip(jobs, outcomes, strict=True):
            finished += self._settle(job, outcome, done)
            if outcome.result == "sent":
                latencies.setdefault(job.message.channel, []).extend(done - r.created_at for r in job.rows)
        await self._store.outbound.finish(self.owner, finished, done)
        self._report(claimed, finished, latencies)

    def _report(
        self, claimed: Sequence[Claimed], finished: Sequence[Finished], latencies: dict[str, list[float]]
    ) -> None:
        channel_of = {row.id: row.channel for row in claimed}
        by_channel: dict[str, list[str]] = {}
        for item in finished:
            by_channel.setdefault(channel_of[item.id], []).append(item.status)
        for channel, results in by_channel.items():
            self._funnel.offline_settled(channel, results, latencies.get(channel, []))

    async def _prepare(
        self,
        group: tuple[Claimed, ...],
        found: Mapping[tuple[str, str, str], PushSubscription | Device | WebhookEndpoint | Profile],
        now: float,
        finished: list[Finished],
    ) -> Job | None:
        first = group[0]
        channel = self._channels.get(first.channel)
        if channel is None:
            why = OFF.get(first.channel, f"no sender for channel {first.channel}")
            finished += [Finished(r.id, "failed", error=why) for r in group]
            return None
        rules = await self._rules_of(first.app)
        notes: list[JSON] = [orjson.loads(r.payload) for r in group]
        live: list[tuple[Claimed, JSON]] = []
        for row, note in zip(group, notes, strict=True):
            if expired(row.created_at, rules.ttl_of(str(note.get("type", ""))), now):
                finished.append(Finished(row.id, "expired", error="past the notification's TTL"))
            else:
                live.append((row, note))
        record = found.get((first.app, first.user, first.target))
        if record is None:
            finished += [Finished(r.id, "failed", error="the target was removed") for r, _ in live]
            return None
        if not live:
            return None
        rows = tuple(r for r, _ in live)
        notifications = tuple(n for _, n in live)
        target = await self._target(record, first, notifications[0], rules, now)
        if first.channel == "web_push":
            await self._vapid.load(first.app)
        kind = str(notifications[0].get("type", ""))
        ttl = rules.ttl_of(kind)
        group_key = notifications[0].get("group_key")
        message = Message(
            key=message_key(first.app, first.user, tuple(r.seq for r in rows), first.channel, first.target),
            app=first.app,
            user=first.user,
            channel=cast(ChannelName, first.channel),
            target=target,
            notifications=notifications,
            priority=notifications[0].get("priority", "normal"),
            attempt=max(r.attempts for r in rows),
            replace_key=str(group_key) if group_key and len(rows) == 1 else None,
            ttl=int(ttl) if ttl is not None else DEFAULT_TTL,
        )
        return Job(rows, message)

    async def _target(
        self,
        record: PushSubscription | Device | WebhookEndpoint | Profile,
        row: Claimed,
        note: JSON,
        rules: AppRules,
        now: float,
    ) -> Target:
        if isinstance(record, PushSubscription):
            return WebPushTarget(record.id, record.endpoint, record.p256dh, record.auth)
        if isinstance(record, Device):
            platform = record.platform if record.platform in ("android", "ios", "web") else "android"
            return DeviceTarget(record.id, platform, record.token)  # type: ignore[arg-type]
        if isinstance(record, WebhookEndpoint):
            return WebhookTarget(record.id, record.url, record.active_secrets(now))
        category = rules.category_of(str(note.get("type", "")))
        return EmailTarget(
            address=record.email or "",
            name=record.name or "",
            locale=record.locale or "en",
            unsubscribe_url=await self._unsubscribe_url(row.app, row.user, category),
        )

    async def _unsubscribe_url(self, app: str, user: str, category: str) -> str:
        base = self._settings.public_url.rstrip("/")
        if not base:
            return ""
        secret = self._secrets.get(app)
        if secret is None:
            record = await self._store.apps.get(app)
            if record is None:
                return ""
            secret = self._secrets[app] = record.jwt_secret
        return f"{base}/v1/unsubscribe/{make_token(secret, app, user, category)}"

    async def _rules_of(self, app: str) -> AppRules:
        now = self._clock.monotonic()
        cached = self._rules.get(app)
        if cached is None or now - cached[0] > RULES_TTL:
            cached = (now, await self._store.preferences.rules(app) or AppRules())
            self._rules[app] = cached
        return cached[1]

    async def _send(self, job: Job) -> Outcome:
        channel = self._channels[job.message.channel]
        async with self._limit:
            span = _span_of(job)
            try:
                outcome = await channel.send(job.message)
            except Exception as exc:  # a bug in an adapter must not take the loop down; its rows go dead
                # Only the type: an adapter's exception text or traceback could hold a key or a secret.
                log.error("channel_send_crashed", channel=channel.name, error=type(exc).__name__)
                tracing.end_span(span, exc, {"tidings.result": "failed"})
                return Outcome(
                    "failed", detail=bounded(f"the {channel.name} adapter failed: {type(exc).__name__}")
                )
            tracing.end_span(span, None, {"tidings.result": outcome.result})
            return outcome

    def _settle(self, job: Job, outcome: Outcome, now: float) -> list[Finished]:
        channel = job.message.channel
        policy: RetryPolicy = self._policies.get(channel, RetryPolicy())
        out: list[Finished] = []
        for row in job.rows:
            settled = settle(
                outcome.result,
                row.attempts,
                policy,
                now=now,
                rand=self._rand(),
                retry_after=outcome.retry_after,
            )
            error = None if outcome.result == "sent" else (outcome.detail or outcome.result)
            ok = None if outcome.result == "gone" else outcome.result == "sent"
            out.append(Finished(row.id, settled.status, settled.next_at, error, settled.remove_target, ok))
        return out

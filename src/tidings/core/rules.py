"""What reaches whom, and by which channel: an app's rules and a user's preferences, as pure decisions.

An **app's rules** (``AppRules``, set by the producer) say, per event type, its *category*, its aggregation
window and its time to live (TTL); per category, whether it is *critical* and its default channels; the
app-wide default channels; and the per-user caps of the offline channels. A **user's preferences**
(``UserPreferences``) switch channels on or off per category, mute actors and objects (or threads), and set
quiet hours in the user's time zone.

``decide`` turns (event, rules, preferences, now) into a ``Verdict`` for one recipient, in this order:

1. a *critical* category bypasses every preference, mute, quiet hour and cap (security alerts...);
2. a muted actor, object or thread suppresses the notification (no inbox row);
3. ``in_app`` off for the category suppresses it too: the inbox is what offline channels deliver, so a
   category without an inbox row has nothing to push or mail;
4. every offline channel that is on gets a ``ChannelPlan``: ``low`` priority goes to a digest
   (``digest_delay`` later); quiet hours defer push and email to their end (the inbox is still updated);
   anything else is due at once, under the channel's cap unless the event is ``high`` priority (the store
   applies caps in its write transaction, where the per-user counters are: see ``core.aggregation``).

Everything here is pure (``zoneinfo`` reads the time zone database, nothing else) and total on the JSON the
stores hold: ``*_from_json`` accept what ``*_to_json`` wrote, and the API validates what users send.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tidings.core.models import JSON, ChannelPlan, Event

CHANNELS = ("in_app", "web_push", "email", "webhook", "mobile_push")
OFFLINE_CHANNELS = CHANNELS[1:]
# What quiet hours hold back (a webhook is not a person).
QUIET_CHANNELS = frozenset({"web_push", "email", "mobile_push"})
MAX_ACTORS = 3  # actors an aggregate shows ("Bob, Carol and 3 others")
DEFAULT_WINDOW = 3600.0
DEFAULT_CHANNELS: Mapping[str, bool] = {
    "in_app": True,
    "web_push": True,
    "email": False,
    "webhook": False,
    "mobile_push": False,
}


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``limit`` deliveries per ``per`` seconds (fixed windows aligned to multiples of ``per``)."""

    limit: int
    per: float = 3600.0


DEFAULT_CAPS: Mapping[str, Cap] = {
    "web_push": Cap(10),
    "email": Cap(5),
    "webhook": Cap(60),
    "mobile_push": Cap(10),
}


@dataclass(frozen=True, slots=True)
class TypeRule:
    """Per event type; None means the app-wide default."""

    category: str | None = None
    aggregate_window: float | None = None
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class CategoryRule:
    critical: bool = False
    channels: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AppRules:
    """An app's notification rules; ``AppRules()`` are the defaults of an app that set none."""

    channels: Mapping[str, bool] = field(default_factory=lambda: dict(DEFAULT_CHANNELS))
    categories: Mapping[str, CategoryRule] = field(default_factory=dict)
    types: Mapping[str, TypeRule] = field(default_factory=dict)
    caps: Mapping[str, Cap] = field(default_factory=lambda: dict(DEFAULT_CAPS))
    aggregate_window: float = DEFAULT_WINDOW  # 0: no aggregation
    digest_delay: float = 3600.0  # low-priority offline deliveries wait this long, for a digest
    ttl: float | None = None  # None: events never go stale
    # Retention (``core.retention``): per user inbox; None: the process-wide default, 0: no limit.
    retention_max_age: float | None = None  # seconds
    retention_max_count: int | None = None  # rows

    def category_of(self, event_type: str) -> str:
        """The type's category; a type the rules do not name is its own category."""
        rule = self.types.get(event_type)
        return rule.category if rule is not None and rule.category else event_type

    def window_of(self, event_type: str) -> float:
        rule = self.types.get(event_type)
        window = rule.aggregate_window if rule is not None else None
        return self.aggregate_window if window is None else window

    def ttl_of(self, event_type: str) -> float | None:
        rule = self.types.get(event_type)
        return rule.ttl if rule is not None and rule.ttl is not None else self.ttl

    def is_critical(self, category: str) -> bool:
        rule = self.categories.get(category)
        return rule is not None and rule.critical

    def default_channel(self, category: str, channel: str) -> bool:
        rule = self.categories.get(category)
        if rule is not None and channel in rule.channels:
            return rule.channels[channel]
        return self.channels.get(channel, DEFAULT_CHANNELS[channel])


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times of day in minutes after midnight; ``start`` > ``end`` spans midnight; equal: none."""

    start: int
    end: int
    zone: str


@dataclass(frozen=True, slots=True)
class UserPreferences:
    categories: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)
    muted_actors: frozenset[str] = frozenset()
    muted_objects: frozenset[str] = frozenset()  # an object id, or a thread an object belongs to
    quiet_hours: QuietHours | None = None


NO_PREFERENCES = UserPreferences()

# The kinds of decision the log records (``Decision.kind``).
DROP = "drop"  # the whole event: stale
SUPPRESS = "suppress"  # no notification for this user: a mute, or in_app off
DELIVER = "deliver"  # a channel chosen, due at once
DEFER = "defer"  # a channel chosen, due later (quiet hours, a cap's digest, low priority)
AGGREGATE = "aggregate"  # joined the user's current aggregate of its group
CANCEL = "cancel"  # a pending offline delivery dropped because the user read or saw the notification


@dataclass(frozen=True, slots=True)
class Decision:
    """One entry of the decision log: what happened to event ``event_id`` for ``user``, and why.

    ``user`` is "" for a decision about the whole event (a stale drop). At most one entry per (app, event,
    user, kind, channel): recording one again (a redelivery) changes nothing.
    """

    app: str
    event_id: str
    user: str
    kind: str
    reason: str
    channel: str = ""
    seq: int | None = None
    at: float = 0.0
    detail: JSON | None = None


@dataclass(frozen=True, slots=True)
class Deferred:
    """A pending offline delivery of notification ``seq`` (the ``deferred`` table), due at ``due_at``.

    No sender exists yet: a future web push / email / webhook sender takes the rows that are due (a
    ``digest`` row joins the user's other digest rows of that channel into one message) and deletes them.
    Reading or seeing the notification deletes its rows (read-sync), an aggregate moves them to its new seq.
    """

    app: str
    user: str
    seq: int
    channel: str
    event_id: str
    due_at: float
    reason: str
    digest: bool = False
    # The W3C context the send continues (``sender.send`` becomes its child); None unless traced and sampled.
    traceparent: str | None = None
    tracestate: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """For one recipient: ``suppressed`` (a reason) or an inbox row for ``in_app_reason`` plus ``channels``."""

    suppressed: str | None = None
    in_app_reason: str = ""
    channels: tuple[ChannelPlan, ...] = ()


# --- staleness ----------------------------------------------------------------------------------------------


def stale_reason(event: Event, rules: AppRules, now: float) -> str | None:
    """Why the event is too old to notify anyone (processed later than its type's TTL), or None."""
    ttl = rules.ttl_of(event.type)
    late = now - event.accepted_at
    if ttl is None or late <= ttl:
        return None
    return f"stale: processed {late:.0f}s after it was accepted, over the {ttl:.0f}s TTL of {event.type}"


# --- the decision ---------------------------------------------------------------------------------------------


def decide(event: Event, rules: AppRules, prefs: UserPreferences, now: float) -> Verdict:
    """The verdict for one recipient (see the module docstring for the order of the rules)."""
    category = rules.category_of(event.type)
    if rules.is_critical(category):
        plans = tuple(
            ChannelPlan(channel, f"critical category {category}")
            for channel in OFFLINE_CHANNELS
            if rules.default_channel(category, channel)
        )
        return Verdict(in_app_reason=f"critical category {category}", channels=plans)
    muted = muted_reason(event, prefs)
    if muted is not None:
        return Verdict(suppressed=muted)
    in_app, why = _switch(category, "in_app", rules, prefs)
    if not in_app:
        return Verdict(suppressed=f"in_app off for {category} ({why})")
    plans = tuple(
        _offline(event, channel, why_on, rules, prefs, now)
        for channel in OFFLINE_CHANNELS
        for on, why_on in [_switch(category, channel, rules, prefs)]
        if on
    )
    return Verdict(in_app_reason=why, channels=plans)


def muted_reason(event: Event, prefs: UserPreferences) -> str | None:
    actor = event.actor.get("id") if event.actor else None
    if isinstance(actor, str) and actor in prefs.muted_actors:
        return "muted actor"
    for key in ("id", "thread"):
        value = event.object.get(key) if event.object else None
        if isinstance(value, str) and value in prefs.muted_objects:
            return "muted object" if key == "id" else "muted thread"
    return None


def _switch(category: str, channel: str, rules: AppRules, prefs: UserPreferences) -> tuple[bool, str]:
    """Whether ``channel`` is on for ``category``, and why: the user's choice, else the app's default."""
    chosen = prefs.categories.get(category, {}).get(channel)
    if chosen is not None:
        return chosen, "user preference"
    return rules.default_channel(category, channel), "app default"


def _offline(
    event: Event, channel: str, why: str, rules: AppRules, prefs: UserPreferences, now: float
) -> ChannelPlan:
    if event.priority == "low":
        return ChannelPlan(channel, "low priority: digest", due_at=now + rules.digest_delay, digest=True)
    if channel in QUIET_CHANNELS and prefs.quiet_hours is not None:
        until = quiet_until(prefs.quiet_hours, now)
        if until is not None:
            return ChannelPlan(channel, "quiet hours", due_at=until)
    cap = rules.caps.get(channel)
    if cap is None or event.priority == "high":
        return ChannelPlan(channel, why)
    return ChannelPlan(channel, why, cap=cap.limit, cap_window=cap.per)


# --- quiet hours ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@functools.cache
def known_zones() -> frozenset[str]:
    """The IANA names the API accepts (a set lookup, so no name ever reaches the file system unchecked)."""
    return frozenset(zoneinfo.available_timezones())


def quiet_until(quiet: QuietHours, now: float) -> float | None:
    """The instant the quiet period around ``now`` ends, or None when ``now`` is outside quiet hours.

    Times are local wall-clock times in ``quiet.zone``. An end that falls into a daylight-saving gap (a local
    time that does not exist that day) ends at the instant the clocks jump past it.
    """
    if quiet.start == quiet.end:
        return None
    tz = zone(quiet.zone)
    local = datetime.fromtimestamp(now, tz)
    minute = local.hour * 60 + local.minute
    inside = (
        quiet.start <= minute < quiet.end
        if quiet.start < quiet.end
        else minute >= quiet.start or minute < quiet.end
    )
    if not inside:
        return None
    day = local.date() if minute < quiet.end else local.date() + timedelta(days=1)
    for _ in range(3):  # bounded: a local end time exists within a day of a DST change
        wall = datetime(day.year, day.month, day.day, quiet.end // 60, quiet.end % 60, tzinfo=tz)
        for end in _instants(wall):
            if end > now:
                return end
        day += timedelta(days=1)
    return None  # unreachable for real zones; outside quiet hours rather than deferred forever


def _instants(wall: datetime) -> list[float]:
    """The instants a local wall-clock time names, earliest first: two in the hour repeated when clocks go
    back (fold 0 and 1), one otherwise; a time in a daylight-saving gap names none, and is taken as fold 0
    gives it (past the jump)."""
    naive = wall.replace(tzinfo=None)
    real = sorted(
        {
            instant
            for fold in (0, 1)
            if datetime.fromtimestamp(instant := wall.replace(fold=fold).timestamp(), wall.tzinfo).replace(
                tzinfo=None
            )
            == naive
        }
    )
    return real or [wall.timestamp()]


# --- cap windows ----------------------------------------------------------------------------------------------


def cap_window_start(now: float, per: float) -> float:
    """The start of the fixed cap window holding ``now`` (windows are aligned to multiples of ``per``)."""
    return now - (now % per) if per > 0 else now


# --- JSON (what the stores keep) ------------------------------------------------------------------------------


def rules_to_json(rules: AppRules) -> JSON:
    return {
        "channels": dict(rules.channels),
        "categories": {
            name: {"critical": rule.critical, "channels": dict(rule.channels)}
            for name, rule in rules.categories.items()
        },
        "types": {
            name: {"category": rule.category, "aggregate_window": rule.aggregate_window, "ttl": rule.ttl}
            for name, rule in rules.types.items()
        },
        "caps": {name: {"limit": cap.limit, "per": cap.per} for name, cap in rules.caps.items()},
        "aggregate_window": rules.aggregate_window,
        "digest_delay": rules.digest_delay,
        "ttl": rules.ttl,
        "retention": {"max_age": rules.retention_max_age, "max_count": rules.retention_max_count},
    }


def rules_from_json(obj: Mapping[str, Any]) -> AppRules:
    defaults = AppRules()
    caps = obj.get("caps")
    return AppRules(
        channels={**DEFAULT_CHANNELS, **obj.get("channels", {})},
        categories={
            name: CategoryRule(bool(rule.get("critical", False)), dict(rule.get("channels", {})))
            for name, rule in obj.get("categories", {}).items()
        },
        types={
            name: TypeRule(rule.get("category"), rule.get("aggregate_window"), rule.get("ttl"))
            for name, rule in obj.get("types", {}).items()
        },
        caps=_caps(caps),
        aggregate_window=float(obj.get("aggregate_window", defaults.aggregate_window)),
        digest_delay=float(obj.get("digest_delay", defaults.digest_delay)),
        ttl=obj.get("ttl"),
        retention_max_age=(obj.get("retention") or {}).get("max_age"),
        retention_max_count=(obj.get("retention") or {}).get("max_count"),
    )


def _caps(obj: Mapping[str, Any] | None) -> dict[str, Cap]:
    if obj is None:
        return dict(DEFAULT_CAPS)
    return {name: Cap(int(cap["limit"]), float(cap["per"])) for name, cap in obj.items()}


def prefs_to_json(prefs: UserPreferences) -> JSON:
    quiet = prefs.quiet_hours
    return {
        "categories": {name: dict(channels) for name, channels in prefs.categories.items()},
        "mutes": {"actors": sorted(prefs.muted_actors), "objects": sorted(prefs.muted_objects)},
        "quiet_hours": None
        if quiet is None
        else {"start": _clock_text(quiet.start), "end": _clock_text(quiet.end), "time_zone": quiet.zone},
    }


def prefs_from_json(obj: Mapping[str, Any]) -> UserPreferences:
    mutes = obj.get("mutes") or {}
    quiet = obj.get("quiet_hours")
    return UserPreferences(
        categories={name: dict(channels) for name, channels in (obj.get("categories") or {}).items()},
        muted_actors=frozenset(mutes.get("actors", ())),
        muted_objects=frozenset(mutes.get("objects", ())),
        quiet_hours=None
        if not quiet
        else QuietHours(clock_minutes(quiet["start"]), clock_minutes(quiet["end"]), quiet["time_zone"]),
    )


def clock_minutes(text: str) -> int:
    """``"22:30"`` -> 1350; raises ``ValueError`` for anything but ``HH:MM`` (00:00 to 23:59)."""
    if not _CLOCK.fullmatch(text):
        raise ValueError("a time of day is HH:MM, 00:00 to 23:59")
    return int(text[:2]) * 60 + int(text[3:])


_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _clock_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"

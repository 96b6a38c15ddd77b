"""The pure rules: who gets a notification, by which channel, and when (``tidings.core.rules``)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tidings.core.models import Event, Priority
from tidings.core.rules import (
    AppRules,
    Cap,
    CategoryRule,
    QuietHours,
    TypeRule,
    UserPreferences,
    cap_window_start,
    clock_minutes,
    decide,
    known_zones,
    prefs_from_json,
    prefs_to_json,
    quiet_until,
    rules_from_json,
    rules_to_json,
    stale_reason,
)
from tidings.testing import FakeClock

PARIS = ZoneInfo("Europe/Paris")


def event(
    type_: str = "post.liked",
    *,
    actor: str = "bob",
    obj: dict[str, str] | None = None,
    priority: Priority = "normal",
    accepted_at: float = 1_790_000_000.0,
) -> Event:
    return Event(
        id="e1",
        app="a",
        type=type_,
        accepted_at=accepted_at,
        recipients=("alice",),
        actor={"id": actor, "name": actor.title()},
        object=obj or {"id": "post:42", "thread": "post:42"},
        priority=priority,
    )


def at_paris(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS).timestamp()


def channels(verdict_channels: tuple[object, ...]) -> list[str]:
    return [plan.channel for plan in verdict_channels]  # type: ignore[attr-defined]


def test_defaults_reach_the_inbox_and_web_push_under_its_cap() -> None:
    """With nothing configured: in the inbox, pushed to the web (10 an hour at most), no email."""
    clock = FakeClock()
    verdict = decide(event(), AppRules(), UserPreferences(), clock.time())
    assert verdict.suppressed is None
    assert verdict.in_app_reason == "app default"
    [push] = verdict.channels
    assert (push.channel, push.due_at, push.cap, push.cap_window) == ("web_push", None, 10, 3600.0)


def test_user_switches_override_app_and_category_defaults() -> None:
    """A user's choice per category beats the category's default, which beats the app-wide one."""
    rules = AppRules(categories={"post.liked": CategoryRule(channels={"email": True})})
    clock = FakeClock()
    assert channels(decide(event(), rules, UserPreferences(), clock.time()).channels) == ["web_push", "email"]
    prefs = UserPreferences(categories={"post.liked": {"web_push": False}})
    verdict = decide(event(), rules, prefs, clock.time())
    assert channels(verdict.channels) == ["email"]
    assert verdict.channels[0].reason == "app default"


def test_in_app_off_suppresses_the_category() -> None:
    """Turning the inbox off for a category means no notification of it at all."""
    prefs = UserPreferences(categories={"post.liked": {"in_app": False}})
    verdict = decide(event(), AppRules(), prefs, FakeClock().time())
    assert verdict.suppressed == "in_app off for post.liked (user preference)"


def test_types_map_to_categories() -> None:
    """A type the app maps to a category follows that category's preferences."""
    rules = AppRules(
        types={"post.liked": TypeRule(category="likes"), "post.loved": TypeRule(category="likes")}
    )
    prefs = UserPreferences(categories={"likes": {"in_app": False}})
    now = FakeClock().time()
    assert decide(event("post.loved"), rules, prefs, now).suppressed is not None
    assert decide(event("comment.created"), rules, prefs, now).suppressed is None


@pytest.mark.parametrize(
    ("prefs", "reason"),
    [
        (UserPreferences(muted_actors=frozenset({"bob"})), "muted actor"),
        (UserPreferences(muted_objects=frozenset({"post:42"})), "muted object"),
        (UserPreferences(muted_objects=frozenset({"thread:7"})), "muted thread"),
    ],
)
def test_mutes_suppress(prefs: UserPreferences, reason: str) -> None:
    """A muted actor, object or thread never notifies the user."""
    obj = {"id": "post:42"} if reason != "muted thread" else {"id": "comment:9", "thread": "thread:7"}
    assert decide(event(obj=obj), AppRules(), prefs, FakeClock().time()).suppressed == reason


def test_critical_categories_bypass_preferences_mutes_quiet_hours_and_caps() -> None:
    """A security alert reaches the user whatever they switched off, muted or scheduled."""
    rules = AppRules(
        types={"login.new": TypeRule(category="security")},
        categories={"security": CategoryRule(critical=True, channels={"email": True})},
    )
    prefs = UserPreferences(
        categories={"security": {"in_app": False, "email": False, "web_push": False}},
        muted_actors=frozenset({"bob"}),
        quiet_hours=QuietHours(0, 23 * 60 + 59, "Europe/Paris"),
    )
    verdict = decide(event("login.new"), rules, prefs, at_paris(2026, 11, 25, 3))
    assert verdict.suppressed is None
    assert verdict.in_app_reason == "critical category security"
    assert [(p.channel, p.due_at, p.cap) for p in verdict.channels] == [
        ("web_push", None, 0),
        ("email", None, 0),
    ]


def test_quiet_hours_defer_push_and_email_to_their_end_in_the_users_zone() -> None:
    """22:00-07:00 in Paris: a like at 23:30 local is pushed at 07:00 local; the inbox gets it now."""
    rules = AppRules(channels={"email": True, "webhook": True})
    prefs = UserPreferences(quiet_hours=QuietHours(22 * 60, 7 * 60, "Europe/Paris"))
    clock = FakeClock(at_paris(2026, 11, 25, 23, 30))
    verdict = decide(event(), rules, prefs, clock.time())
    assert verdict.suppressed is None
    by_channel = {p.channel: p for p in verdict.channels}
    assert by_channel["web_push"].due_at == by_channel["email"].due_at == at_paris(2026, 11, 26, 7)
    assert by_channel["web_push"].reason == "quiet hours"
    assert by_channel["webhook"].due_at is None  # quiet hours are for people
    clock.advance(8 * 3600)  # 07:30 local: outside quiet hours again
    assert all(p.due_at is None for p in decide(event(), rules, prefs, clock.time()).channels)


def test_quiet_hours_within_one_day_and_empty_ones() -> None:
    """A 13:00-14:00 window defers only inside it; start == end is no quiet hours at all."""
    lunch = QuietHours(13 * 60, 14 * 60, "Europe/Paris")
    assert quiet_until(lunch, at_paris(2026, 6, 1, 13, 15)) == at_paris(2026, 6, 1, 14)
    assert quiet_until(lunch, at_paris(2026, 6, 1, 14, 0)) is None
    assert quiet_until(lunch, at_paris(2026, 6, 1, 12, 59)) is None
    assert quiet_until(QuietHours(600, 600, "Europe/Paris"), at_paris(2026, 6, 1, 10)) is None


def test_quiet_hours_across_a_daylight_saving_change() -> None:
    """The night the clocks go forward (Paris, 2026-03-29), quiet hours still end at 07:00 local time."""
    night = QuietHours(22 * 60, 7 * 60, "Europe/Paris")
    end = quiet_until(night, at_paris(2026, 3, 28, 23))
    assert end == at_paris(2026, 3, 29, 7)
    assert end - at_paris(2026, 3, 28, 23) == 7 * 3600  # one hour shorter than usual
    gap = QuietHours(1 * 60, 2 * 60 + 30, "Europe/Paris")  # ends inside the 02:00-03:00 gap that day
    until = quiet_until(gap, at_paris(2026, 3, 29, 1, 30))
    assert until is not None
    assert until > at_paris(2026, 3, 29, 1, 30)


def test_the_zones_accepted_are_the_iana_names_only() -> None:
    zones = known_zones()
    assert {"Europe/Paris", "America/New_York", "UTC"} <= zones
    assert "../../etc/passwd" not in zones
    assert "europe/paris" not in zones


def test_quiet_hours_in_the_repeated_hour_end_the_same_night() -> None:
    """The night the clocks go back (Paris, 2026-10-25, 03:00 CEST -> 02:00 CET), 22:00-02:30 quiet hours seen at
    02:10 CET (the second 02:10) end 20 minutes later, not the next night."""
    night = QuietHours(22 * 60, 2 * 60 + 30, "Europe/Paris")
    now = datetime(2026, 10, 25, 1, 10, tzinfo=ZoneInfo("UTC")).timestamp()  # 02:10 CET
    assert quiet_until(night, now) == now + 20 * 60
    first = datetime(2026, 10, 25, 0, 10, tzinfo=ZoneInfo("UTC")).timestamp()  # the first 02:10 (CEST)
    assert quiet_until(night, first) == first + 20 * 60  # the first 02:30, an hour before the second


def test_low_priority_goes_to_a_digest_and_high_priority_skips_caps() -> None:
    """Likes marked low wait for a digest; a mention marked high is pushed at once, uncapped."""
    clock = FakeClock()
    low = decide(event(priority="low"), AppRules(digest_delay=1800), UserPreferences(), clock.time())
    [push] = low.channels
    assert (push.due_at, push.digest) == (clock.time() + 1800, True)
    [high] = decide(event(priority="high"), AppRules(), UserPreferences(), clock.time()).channels
    assert (high.due_at, high.cap) == (None, 0)


def test_an_event_past_its_types_ttl_is_stale() -> None:
    """Processed later than its type's TTL, an event is dropped, with the reason saying by how much."""
    clock = FakeClock()
    rules = AppRules(types={"story.posted": TypeRule(ttl=600)}, ttl=86400)
    fresh = event("story.posted", accepted_at=clock.time())
    clock.advance(600)
    assert stale_reason(fresh, rules, clock.time()) is None
    clock.advance(1)
    reason = stale_reason(fresh, rules, clock.time())
    assert reason == "stale: processed 601s after it was accepted, over the 600s TTL of story.posted"
    assert stale_reason(event("post.liked", accepted_at=fresh.accepted_at), rules, clock.time()) is None
    assert stale_reason(fresh, AppRules(), clock.time() + 10**9) is None  # no TTL: never stale


def test_rules_and_preferences_survive_their_json() -> None:
    """What the stores keep reads back as the same rules and preferences."""
    rules = AppRules(
        channels={"in_app": True, "web_push": False, "email": True, "webhook": False, "mobile_push": True},
        categories={"security": CategoryRule(True, {"email": True})},
        types={"post.liked": TypeRule("likes", 600.0, 3600.0)},
        caps={"email": Cap(3, 86400.0)},
        aggregate_window=0.0,
        digest_delay=60.0,
        ttl=7200.0,
    )
    assert rules_from_json(rules_to_json(rules)) == rules
    assert rules_from_json({}) == AppRules()
    prefs = UserPreferences(
        {"likes": {"email": False}}, frozenset({"bob"}), frozenset({"post:1"}), QuietHours(1350, 420, "UTC")
    )
    assert prefs_from_json(prefs_to_json(prefs)) == prefs
    assert prefs_to_json(prefs)["quiet_hours"] == {"start": "22:30", "end": "07:00", "time_zone": "UTC"}


@pytest.mark.parametrize("text", ["24:00", "7:00", "07:60", "07-00", "\u0660\u0667:\u0660\u0660", "07:00 "])
def test_times_of_day_are_strict(text: str) -> None:
    """Only HH:MM from 00:00 to 23:59 (ASCII digits) is a time of day."""
    with pytest.raises(ValueError, match="time of day"):
        clock_minutes(text)


def test_cap_windows_are_aligned() -> None:
    """Cap windows are fixed, aligned to multiples of their length."""
    assert cap_window_start(7250.0, 3600.0) == 7200.0
    assert cap_window_start(7200.0, 3600.0) == 7200.0

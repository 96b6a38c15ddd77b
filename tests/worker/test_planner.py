"""The fan-out decisions end to end on the embedded backends: topic chunk jobs, staleness, preferences, quiet
hours, caps, aggregation and the decision log, driven batch by batch with a fake clock."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

from tidings.core.models import FanoutPart
from tidings.core.rules import (
    AppRules,
    CategoryRule,
    QuietHours,
    TypeRule,
    UserPreferences,
)

from .stack import OpenStack, Stack, event

USERS = [f"f{i:03d}" for i in range(95)]


async def all_rows(stack: Stack) -> Counter[str]:
    """How many inbox rows each subscriber got (any seq)."""
    counts: Counter[str] = Counter()
    for user in USERS:
        counts[user] = len(await stack.store.inbox.backlog("app1", user, 0, 100))
    return counts


async def test_a_large_topic_is_split_into_chunk_jobs_shared_through_the_log(open_stack: OpenStack) -> None:
    """95 followers, chunks of 10, 3 per split: every follower gets one notification, via 10 chunk jobs."""
    stack = await open_stack(fanout_chunk=10, fanout_split=3)
    await stack.store.topics.subscribe_many("app1", "followers:bob", USERS)
    await stack.send(event("E1", topic="followers:bob"))
    await stack.drain()
    assert await all_rows(stack) == Counter(dict.fromkeys(USERS, 1))
    jobs = [d.event for d in stack.handled if d.event.part is not None]
    chunks = [j.part for j in jobs if j.part is not None and j.part.kind == "chunk"]
    splits = [j.part for j in jobs if j.part is not None and j.part.kind == "split"]
    assert len(chunks) == 10
    assert len(splits) == 3  # after chunks 0-2, 3-5 and 6-8; the last split appends the tail
    assert [c.index for c in chunks] == list(range(10))
    assert chunks[0] == FanoutPart("chunk", "E1", 0, None, "f009")
    assert chunks[-1] == FanoutPart("chunk", "E1", 9, "f089", None)
    assert {j.id for j in jobs} >= {"E1.0", "E1.9", "E1+3"}
    assert all(j.idempotency_key is None for j in jobs)
    # Every inbox row names the producer's event, not a job.
    [row] = await stack.store.inbox.backlog("app1", "f050", 0, 10)
    assert row.event_id == "E1"


async def test_a_redelivered_split_appends_the_same_jobs_and_notifies_nobody_twice(
    open_stack: OpenStack,
) -> None:
    """A worker dies after appending chunk jobs but before its ack: the split runs again, nothing doubles."""
    stack = await open_stack(fanout_chunk=10, fanout_split=20)
    await stack.store.topics.subscribe_many("app1", "followers:bob", USERS)
    await stack.send(event("E1", topic="followers:bob"))
    [topic_event] = await stack.runtime.log.read(10, timeout=0)
    await stack.worker.process([topic_event])
    await stack.worker.process([topic_event])  # as after a crash before the ack
    await stack.drain()
    assert await all_rows(stack) == Counter(dict.fromkeys(USERS, 1))
    assert len([d for d in stack.handled if d.event.part is not None]) == 10  # duplicates refused by id


async def test_subscribers_added_while_the_chunks_wait_are_covered_once(open_stack: OpenStack) -> None:
    """Chunk ranges tile the id space: a follower who joins between the split and the chunks is notified once."""
    stack = await open_stack(fanout_chunk=10, fanout_split=20)
    await stack.store.topics.subscribe_many("app1", "followers:bob", USERS)
    await stack.send(event("E1", topic="followers:bob"))
    [topic_event] = await stack.runtime.log.read(10, timeout=0)
    await stack.worker.process([topic_event])
    late = ["a-first", "f0095", "f0415", "zz-last"]
    await stack.store.topics.subscribe_many("app1", "followers:bob", late)
    await stack.drain()
    for user in [*USERS, *late]:
        assert len(await stack.store.inbox.backlog("app1", user, 0, 10)) == 1, user


async def test_a_small_topic_is_fanned_out_inline(stack: Stack) -> None:
    """A topic smaller than a chunk needs no jobs: its one event fans out directly."""
    await stack.store.topics.subscribe_many("app1", "followers:bob", ["alice", "carol"])
    await stack.send(event("E1", topic="followers:bob"))
    await stack.drain()
    assert [d.event.id for d in stack.handled] == ["E1"]
    assert [n["event_id"] for n in await stack.inbox("carol")] == ["E1"]


async def test_stale_events_are_dropped_and_the_drop_recorded(stack: Stack) -> None:
    """An event processed later than its type's TTL reaches nobody; the decision log says why."""
    await stack.store.preferences.set_rules("app1", AppRules(types={"story.posted": TypeRule(ttl=60)}))
    await stack.send(event("E1", type_="story.posted", accepted_at=stack.clock.time()))
    stack.clock.advance(61)
    await stack.drain()
    assert await stack.inbox("alice") == []
    [drop] = await stack.store.decisions.for_event("app1", "E1", user=None, after=None, limit=10)
    assert (drop.user, drop.kind) == ("", "drop")
    assert drop.reason == "stale: processed 61s after it was accepted, over the 60s TTL of story.posted"


async def test_mutes_and_switched_off_categories_are_suppressed_and_recorded(stack: Stack) -> None:
    """Alice muted Bob; Carol switched likes off; Dan gets it: two suppressions, one delivery, all recorded."""
    prefs = stack.store.preferences
    await prefs.set_user("app1", "alice", UserPreferences(muted_actors=frozenset({"bob"})))
    await prefs.set_user("app1", "carol", UserPreferences(categories={"post.liked": {"in_app": False}}))
    await stack.send(event("E1", recipients=("alice", "carol", "dan")))
    await stack.drain()
    assert [await stack.inbox(u) != [] for u in ("alice", "carol", "dan")] == [False, False, True]
    found = await stack.store.decisions.for_event("app1", "E1", user=None, after=None, limit=10)
    assert [(d.user, d.kind, d.channel, d.reason) for d in found] == [
        ("alice", "suppress", "", "muted actor"),
        ("carol", "suppress", "", "in_app off for post.liked (user preference)"),
        ("dan", "deliver", "in_app", "app default"),
        ("dan", "deliver", "web_push", "app default"),
    ]
    assert stack.live == []  # nothing was published for alice


async def test_quiet_hours_defer_the_push_but_not_the_inbox(stack: Stack) -> None:
    """At 23:30 in Paris, with quiet hours 22:00-07:00: the inbox and live stream now, the push at 07:00."""
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2026, 11, 25, 23, 30, tzinfo=paris).timestamp()
    stack.clock.advance(now - stack.clock.time())
    quiet = UserPreferences(quiet_hours=QuietHours(22 * 60, 7 * 60, "Europe/Paris"))
    await stack.store.preferences.set_user("app1", "alice", quiet)
    await stack.send(event("E1", accepted_at=now))
    await stack.drain()
    assert [m.seq for m in stack.live] == [1]
    [push] = await stack.store.decisions.pending("app1", "alice")
    assert (push.channel, push.due_at, push.reason) == (
        "web_push",
        datetime(2026, 11, 26, 7, 0, tzinfo=paris).timestamp(),
        "quiet hours",
    )


async def test_critical_categories_reach_a_user_who_muted_and_switched_off_everything(stack: Stack) -> None:
    """A new-login alert gets through mutes, switches and quiet hours, by inbox and email."""
    rules = AppRules(
        types={"login.new": TypeRule(category="security")},
        categories={"security": CategoryRule(critical=True, channels={"email": True, "web_push": False})},
    )
    await stack.store.preferences.set_rules("app1", rules)
    prefs = UserPreferences(
        categories={"security": {"in_app": False, "email": False}},
        muted_actors=frozenset({"bob"}),
        quiet_hours=QuietHours(0, 1439, "UTC"),
    )
    await stack.store.preferences.set_user("app1", "alice", prefs)
    await stack.send(event("E1", type_="login.new"))
    await stack.drain()
    assert [n["type"] for n in await stack.inbox("alice")] == ["login.new"]
    assert [(p.channel, p.due_at) for p in await stack.store.decisions.pending("app1", "alice")] == [
        ("email", stack.clock.time())
    ]


async def test_a_returning_user_gets_the_aggregate_not_every_like(stack: Stack) -> None:
    """500 likes on one post while Alice is away: her backlog holds one notification counting all 500."""
    for n in range(500):
        await stack.send(event(f"E{n:03d}", actor=f"u{n}", group="post:42:like"))
        stack.clock.advance(1)
    await stack.drain()
    backlog = await stack.store.inbox.backlog("app1", "alice", 0, 100)
    assert [n.seq for n in backlog] == [500]
    [shown] = await stack.inbox("alice")
    assert (shown["count"], [a["id"] for a in shown["actors"]]) == (500, ["u499", "u498", "u497"])
    assert await stack.store.inbox.counts("app1", "alice") == (1, 1)
    assert len(await stack.store.decisions.pending("app1", "alice")) == 1  # one push, for the aggregate


async def test_the_app_sets_the_aggregation_window_per_type(stack: Stack) -> None:
    """Windows are per event type: 60 s for likes here, so a like 61 s after the first starts a new one."""
    await stack.store.preferences.set_rules(
        "app1", AppRules(types={"post.liked": TypeRule(aggregate_window=60)})
    )
    await stack.send(event("E1", group="g"))
    await stack.drain()
    stack.clock.advance(61)
    await stack.send(event("E2", group="g", actor="carol"))
    await stack.drain()
    assert [(n["seq"], n["count"]) for n in await stack.inbox("alice")] == [(1, 1), (2, 1)]


async def test_pushes_over_the_cap_are_deferred_into_a_digest(stack: Stack) -> None:
    """At most 10 pushes an hour by default: the 11th distinct notification's push waits for the digest."""
    for n in range(11):
        await stack.send(event(f"E{n:02d}"))
    await stack.drain()
    pending = await stack.store.decisions.pending("app1", "alice")
    assert [p.digest for p in pending] == [False] * 10 + [True]
    [defer] = await stack.store.decisions.for_event("app1", "E10", user="alice", after=None, limit=1)
    assert (defer.kind, defer.reason) == ("defer", "cap of 10 per 3600s reached: digest")


async def test_high_priority_skips_caps_and_low_priority_waits_for_a_digest(stack: Stack) -> None:
    """Priorities end to end: a mention marked high is pushed past the cap; a low-priority like is digested."""
    for n in range(10):
        await stack.send(event(f"E{n:02d}"))
    await stack.send(event("HI", priority="high"), event("LO", priority="low"))
    await stack.drain()
    pending = {p.event_id: p for p in await stack.store.decisions.pending("app1", "alice")}
    assert (pending["HI"].digest, pending["HI"].due_at) == (False, stack.clock.time())
    assert (pending["LO"].digest, pending["LO"].due_at) == (True, stack.clock.time() + 3600)
    [high] = [d for d in stack.handled if d.event.id == "HI"]
    assert high.lane == "high"
    [row] = [n for n in await stack.inbox("alice") if n["event_id"] == "HI"]
    assert row["priority"] == "high"


async def test_a_redelivered_event_creates_no_second_row_or_decision(stack: Stack) -> None:
    """The same delivery processed twice (a crash before the ack): one row, one set of decisions."""
    await stack.store.preferences.set_user("app1", "carol", UserPreferences(muted_actors=frozenset({"bob"})))
    await stack.send(event("E1", recipients=("alice", "carol")))
    deliveries = await stack.runtime.log.read(10, timeout=0)
    await stack.worker.process(deliveries)
    await stack.worker.process(deliveries)
    assert len(await stack.inbox("alice")) == 1
    assert len(await stack.store.decisions.for_event("app1", "E1", user=None, after=None, limit=10)) == 3

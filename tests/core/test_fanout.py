"""Fan-out planning, pure (``tidings.core.fanout``): job ids and split jobs, recipients in chunks, staleness and
each chunk's verdicts, without an event loop or a store."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.fanout import (
    MAX_CHUNK_INDEX,
    chunk_range,
    chunked,
    job,
    job_id,
    plan_chunk,
    recipient_chunks,
    root_of,
    split_jobs,
    stale_drop,
    within,
)
from tidings.core.models import Event, FanoutPart, InboxWrite
from tidings.core.rules import (
    DROP,
    MAX_ACTORS,
    SUPPRESS,
    AppRules,
    TypeRule,
    UserPreferences,
    decide,
)

ROOT = "01JD0000000000000000000000"
EVENT = Event(id="evt1", app="social", type="post.liked", accepted_at=1.0, recipients=("alice",))
TOPIC_EVENT = Event(
    id=ROOT,
    app="social",
    type="post.liked",
    accepted_at=1.0,
    topic="followers:bob",
    actor={"id": "bob"},
    idempotency_key="producer-key",
)

# --- job ids --------------------------------------------------------------------------------------------------


def test_job_ids_are_derived_from_the_root_event() -> None:
    """Chunk and split jobs of one event have ids of their own, at most 32 characters, and one root."""
    assert job_id(ROOT, 0, "chunk") == ROOT + ".0"
    assert job_id(ROOT, 0xFFFFF, "split") == ROOT + "+fffff"
    assert len(job_id(ROOT, 0xFFFFF, "chunk")) == 32
    part = FanoutPart("chunk", ROOT, 3, "a", "b")
    assert root_of(replace(EVENT, id=job_id(ROOT, 3, "chunk"), part=part)).id == ROOT


def test_job_ids_refuse_more_than_2_20_chunks() -> None:
    """An index past the 5 hex digits would make ids longer than 32 characters: refused, with the remedy."""
    with pytest.raises(ValueError, match="fanout_chunk"):
        job_id(ROOT, MAX_CHUNK_INDEX + 1, "chunk")


def test_root_of_a_producer_event_is_itself() -> None:
    assert root_of(EVENT) is EVENT


def test_a_job_carries_its_part_and_no_idempotency_key() -> None:
    """A job keeps the event's content, under its derived id; the producer's key stays with the root."""
    part = FanoutPart("split", ROOT, 2, "f009")
    made = job(TOPIC_EVENT, part)
    assert (made.id, made.part, made.idempotency_key) == (ROOT + "+2", part, None)
    assert replace(made, id=ROOT, part=None, idempotency_key="producer-key") == TOPIC_EVENT
    assert root_of(made) == replace(TOPIC_EVENT, idempotency_key=None)


# --- split jobs -----------------------------------------------------------------------------------------------


def test_a_split_that_found_all_its_bounds_ends_with_the_next_split() -> None:
    """3 bounds found of at most 3: three chunk jobs, then a split job going on after the last bound."""
    jobs = split_jobs(TOPIC_EVENT, FanoutPart("split", ROOT), ["f009", "f019", "f029"], 3)
    assert [j.part for j in jobs] == [
        FanoutPart("chunk", ROOT, 0, None, "f009"),
        FanoutPart("chunk", ROOT, 1, "f009", "f019"),
        FanoutPart("chunk", ROOT, 2, "f019", "f029"),
        FanoutPart("split", ROOT, 3, "f029"),
    ]
    assert [j.id for j in jobs] == [ROOT + ".0", ROOT + ".1", ROOT + ".2", ROOT + "+3"]


def test_a_split_that_found_fewer_bounds_ends_with_the_tail_chunk() -> None:
    """Fewer bounds than asked for: the subscribers after the last one (less than a chunk) are the tail."""
    jobs = split_jobs(TOPIC_EVENT, FanoutPart("split", ROOT, 3, "f029"), ["f039"], 3)
    assert [j.part for j in jobs] == [
        FanoutPart("chunk", ROOT, 3, "f029", "f039"),
        FanoutPart("chunk", ROOT, 4, "f039", None),
    ]


def test_a_redelivered_split_makes_the_same_jobs() -> None:
    """Pure in its inputs: a split run again after a crash appends byte-identical jobs (the log dedupes ids)."""
    part = FanoutPart("split", ROOT, 5, "m")
    assert split_jobs(TOPIC_EVENT, part, ["n", "o"], 2) == split_jobs(TOPIC_EVENT, part, ["n", "o"], 2)


@settings(max_examples=200)
@given(
    st.lists(st.text("abcdefgh", min_size=1, max_size=4), unique=True, max_size=12).map(sorted),
    st.integers(1, 6),
    st.integers(0, 100),
    st.sampled_from([None, ""]),
)
def test_split_jobs_tile_the_range_after_the_split(
    bounds: list[str], split: int, index: int, after: str | None
) -> None:
    """Chunk ranges are consecutive from ``after``, numbered on from the split's index; exactly one last job
    (a split when ``split`` bounds were found, else the open-ended tail chunk) goes on from the last bound."""
    bounds = bounds[:split]
    jobs = split_jobs(TOPIC_EVENT, FanoutPart("split", ROOT, index, after), bounds, split)
    parts = [j.part for j in jobs]
    assert all(p is not None for p in parts)
    assert [p.index for p in parts if p is not None] == list(range(index, index + len(bounds) + 1))
    chunks, last = parts[:-1], parts[-1]
    assert [(p.after, p.until) for p in chunks if p is not None] == list(
        zip([after, *bounds], bounds, strict=False)
    )
    assert last is not None
    assert (last.after, last.until) == ([after, *bounds][-1], None)
    assert last.kind == ("split" if len(bounds) == split else "chunk")
    assert all(j.id == job_id(ROOT, p.index, p.kind) for j, p in zip(jobs, parts, strict=True) if p)
    assert all(j.idempotency_key is None and root_of(j).id == ROOT for j in jobs)


# --- recipients -----------------------------------------------------------------------------------------------


def test_recipients_in_order_one_chunk() -> None:
    """Each recipient gets the event once, in the order the producer listed them."""
    assert list(recipient_chunks(["carol", "alice", "bob"], 10)) == [["carol", "alice", "bob"]]


def test_recipients_drop_duplicates() -> None:
    """A recipient listed twice in one event is notified once, at their first position."""
    chunks = recipient_chunks(iter(["bob", "alice", "bob", "bob", "carol", "alice"]), 2)
    assert list(chunks) == [["bob", "alice"], ["carol"]]


def test_no_recipients_no_chunks() -> None:
    """An event with nobody to notify plans nothing."""
    assert list(recipient_chunks([], 3)) == []


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]) | st.text(max_size=3), max_size=30),
    st.integers(1, 7),
)
def test_recipient_chunks_are_the_ordered_set_of_recipients(recipients: list[str], size: int) -> None:
    """Joined, the chunks are exactly the distinct recipients, each at its first appearance; all but the last
    chunk are full."""
    chunks = list(recipient_chunks(recipients, size))
    users = [user for chunk in chunks for user in chunk]
    assert len(users) == len(set(users))
    assert set(users) == set(recipients)
    assert users == sorted(users, key=recipients.index)
    assert all(len(chunk) == size for chunk in chunks[:-1])


def test_chunk_range_is_the_whole_topic_or_the_jobs_range() -> None:
    assert chunk_range(TOPIC_EVENT) == (None, None)
    chunk = job(TOPIC_EVENT, FanoutPart("chunk", ROOT, 1, "f009", "f019"))
    assert chunk_range(chunk) == ("f009", "f019")


def test_within_keeps_the_users_up_to_the_end_of_the_range() -> None:
    page = ["f010", "f015", "f019", "f020", "f031"]
    assert within(page, "f019") == ["f010", "f015", "f019"]
    assert within(page, None) == page
    assert within(page, "a") == []


def test_chunked_cuts_into_fixed_sizes() -> None:
    """A long list is cut into equal chunks, the last one shorter."""
    assert list(chunked(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []
    assert list(chunked("ab", 5)) == [["a", "b"]]


def test_chunked_is_lazy() -> None:
    """Chunks of an endless source (a huge topic's subscribers) are produced one at a time."""
    assert list(itertools.islice(chunked(itertools.count(), 2), 3)) == [[0, 1], [2, 3], [4, 5]]


def test_chunked_rejects_size_below_one_at_once() -> None:
    """A chunk size below 1 fails at the call, not later when the first chunk is taken."""
    with pytest.raises(ValueError, match=">= 1"):
        chunked([1, 2], 0)


@settings(max_examples=200)
@given(st.lists(st.integers(), max_size=50), st.integers(1, 10))
def test_chunked_preserves_items(items: list[int], size: int) -> None:
    """Joined back together, the chunks are the input; only the last may be short."""
    chunks = list(chunked(items, size))
    assert [item for chunk in chunks for item in chunk] == items
    assert all(len(chunk) == size for chunk in chunks[:-1])
    assert all(0 < len(chunk) <= size for chunk in chunks)


# --- decisions ------------------------------------------------------------------------------------------------

STORY_RULES = AppRules(types={"story.posted": TypeRule(ttl=60)})
STORY = Event(id="E1", app="app1", type="story.posted", accepted_at=1000.0, recipients=("alice",))


def test_a_stale_event_is_one_drop_decision_for_nobody_in_particular() -> None:
    """Processed 61 s after it was accepted, over a 60 s TTL: one DROP (user ""), at the clock reading."""
    drop = stale_drop(STORY, STORY_RULES, 1061.0)
    assert drop is not None
    assert (drop.app, drop.event_id, drop.user, drop.kind, drop.at) == ("app1", "E1", "", DROP, 1061.0)
    assert drop.reason == "stale: processed 61s after it was accepted, over the 60s TTL of story.posted"


def test_a_fresh_event_or_one_without_ttl_is_not_dropped() -> None:
    assert stale_drop(STORY, STORY_RULES, 1060.0) is None
    assert stale_drop(STORY, AppRules(), 1e12) is None


LIKE = Event(
    id="E1", app="app1", type="post.liked", accepted_at=1000.0, actor={"id": "bob"}, recipients=("x",)
)


def test_a_chunk_suppresses_mutes_and_switched_off_categories_and_writes_the_rest() -> None:
    """Alice muted Bob; Carol switched likes off; Dan set nothing: two suppressions, one write, in order."""
    prefs = {
        "alice": UserPreferences(muted_actors=frozenset({"bob"})),
        "carol": UserPreferences(categories={"post.liked": {"in_app": False}}),
    }
    chunk = plan_chunk(LIKE, ["alice", "carol", "dan"], AppRules(), prefs, 1001.0)
    assert [(d.user, d.kind, d.reason, d.at) for d in chunk.suppressed] == [
        ("alice", SUPPRESS, "muted actor", 1001.0),
        ("carol", SUPPRESS, "in_app off for post.liked (user preference)", 1001.0),
    ]
    [write] = chunk.writes
    usual = decide(LIKE, AppRules(), UserPreferences(), 1001.0)
    assert write == InboxWrite("app1", "dan", LIKE, 0.0, MAX_ACTORS, usual.channels, "app default")


def test_a_grouped_event_carries_its_types_aggregation_window() -> None:
    """Only an event with a group key aggregates, over its type's window (the app's default otherwise)."""
    rules = AppRules(types={"post.liked": TypeRule(aggregate_window=60)})
    grouped = replace(LIKE, group_key="post:42:like")
    assert [w.aggregate_window for w in plan_chunk(grouped, ["a"], rules, {}, 1001.0).writes] == [60.0]
    assert [w.aggregate_window for w in plan_chunk(grouped, ["a"], AppRules(), {}, 1001.0).writes] == [3600.0]
    assert [w.aggregate_window for w in plan_chunk(LIKE, ["a"], rules, {}, 1001.0).writes] == [0.0]


PREFS = st.builds(
    UserPreferences,
    categories=st.dictionaries(
        st.just("post.liked"),
        st.dictionaries(st.sampled_from(["in_app", "web_push", "email", "webhook"]), st.booleans()),
    ),
    muted_actors=st.frozensets(st.sampled_from(["bob", "carol"])),
)


@settings(max_examples=200)
@given(
    st.lists(st.text("abcdef", min_size=1, max_size=3), unique=True, max_size=12),
    st.dictionaries(st.text("abcdef", min_size=1, max_size=3), PREFS, max_size=6),
    st.sampled_from(["low", "normal", "high"]),
)
def test_each_user_of_a_chunk_gets_exactly_their_own_verdict(
    users: list[str], prefs: dict[str, UserPreferences], priority: str
) -> None:
    """Deciding the usual verdict once per chunk changes nothing: every user is either written (with the
    channels ``decide`` gives for their preferences) or suppressed (with its reason), once, in chunk order."""
    event = replace(LIKE, priority=priority)  # type: ignore[arg-type]
    chunk = plan_chunk(event, users, AppRules(), prefs, 1001.0)
    written = {w.user: w for w in chunk.writes}
    suppressed = {d.user: d for d in chunk.suppressed}
    assert sorted([*written, *suppressed]) == sorted(users)
    assert [w.user for w in chunk.writes] == [u for u in users if u in written]
    for user in users:
        verdict = decide(event, AppRules(), prefs.get(user, UserPreferences()), 1001.0)
        if verdict.suppressed is not None:
            assert (suppressed[user].kind, suppressed[user].reason) == (SUPPRESS, verdict.suppressed)
        else:
            assert (written[user].channels, written[user].reason) == (verdict.channels, verdict.in_app_reason)

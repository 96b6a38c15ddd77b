"""Fan-out planning: one inbox write per distinct recipient, and bounded chunks of any list."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.fanout import chunked, plan_writes
from tidings.core.models import Event, InboxWrite

EVENT = Event(id="evt1", app="social", type="post.liked", accepted_at=1.0, recipients=("alice",))


def test_plan_writes_one_per_recipient_in_order() -> None:
    """Each recipient gets the event once, in the order the producer listed them."""
    writes = plan_writes(EVENT, ["carol", "alice", "bob"])
    assert writes == [
        InboxWrite(app="social", user="carol", event=EVENT),
        InboxWrite(app="social", user="alice", event=EVENT),
        InboxWrite(app="social", user="bob", event=EVENT),
    ]


def test_plan_writes_drops_duplicate_recipients() -> None:
    """A recipient listed twice in one event is notified once, at their first position."""
    users = [
        write.user for write in plan_writes(EVENT, iter(["bob", "alice", "bob", "bob", "carol", "alice"]))
    ]
    assert users == ["bob", "alice", "carol"]


def test_plan_writes_no_recipients() -> None:
    """An event with nobody to notify plans no writes."""
    assert plan_writes(EVENT, []) == []


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]) | st.text(max_size=3), max_size=30))
def test_plan_writes_is_the_ordered_set_of_recipients(recipients: list[str]) -> None:
    """The planned users are exactly the distinct recipients, each at its first appearance."""
    users = [write.user for write in plan_writes(EVENT, recipients)]
    assert len(users) == len(set(users))
    assert set(users) == set(recipients)
    assert users == sorted(users, key=recipients.index)
    assert all(write.event is EVENT and write.app == EVENT.app for write in plan_writes(EVENT, recipients))


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

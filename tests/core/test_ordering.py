"""Order by key (``tidings.core.ordering``): what an event's key is, and that a key lands on one partition,
the same in every process, spread evenly over the partitions."""

from __future__ import annotations

import collections

from hypothesis import given
from hypothesis import strategies as st

from tidings.core.models import Event, FanoutPart
from tidings.core.ordering import event_partition, ordering_key, partition_of


def _event(**fields: object) -> Event:
    return Event(id="e1", app="a", type="t", accepted_at=1.0, **fields)  # type: ignore[arg-type]


def test_the_producers_key_wins() -> None:
    assert ordering_key(_event(recipients=("u1",), ordering_key="post-7")) == "post-7"


def test_one_recipient_is_the_default_key() -> None:
    assert ordering_key(_event(recipients=("u1",))) == "u1"


def test_a_topic_is_the_key_of_a_topic_event() -> None:
    assert ordering_key(_event(topic="followers:cid")) == "followers:cid"


def test_the_event_id_is_the_key_of_an_event_to_several_recipients() -> None:
    assert ordering_key(_event(recipients=("u1", "u2"))) == "e1"


def test_the_chunks_of_a_celebritys_fan_out_spread_over_the_partitions() -> None:
    chunks = [_event(topic="t", part=FanoutPart("chunk", root="e0", index=i)) for i in range(200)]
    used = collections.Counter(event_partition(chunk, 8) for chunk in chunks)
    assert len(used) == 8
    assert max(used.values()) < 200 / 8 * 2


@given(st.text(max_size=40), st.integers(1, 64))
def test_a_key_lands_inside_the_lane(key: str, partitions: int) -> None:
    assert 0 <= partition_of(key, partitions) < partitions


def test_one_partition_takes_everything() -> None:
    assert {partition_of(str(i), 1) for i in range(100)} == {0}


def test_keys_spread_evenly() -> None:
    counts = collections.Counter(partition_of(f"user-{i}", 16) for i in range(16_000))
    assert min(counts.values()) > 800
    assert max(counts.values()) < 1200


def test_a_key_lands_where_it_always_has() -> None:
    """Every process and every release must agree where a key is (Python's salted ``hash`` would not): a
    change here moves keys between partitions of a running deployment, and breaks their order."""
    assert [partition_of(f"k{i}", 12) for i in range(12)] == [11, 8, 2, 5, 3, 3, 4, 9, 1, 1, 8, 7]

"""The one wire encoding of the nouns (``tidings.core.models``): an event crosses the log as bytes and comes back
with every field; a notification row renders the JSON a user sees."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.models import (
    PRIORITIES,
    Event,
    FanoutPart,
    InboxItem,
    InboxWrite,
    event_from_bytes,
    event_to_bytes,
    render_notification,
    trace_carrier,
)

TEXT = st.text(max_size=12)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
JSON_OBJECT = st.dictionaries(TEXT, JSON_VALUE, max_size=4)
PARTS = st.builds(
    FanoutPart,
    kind=st.sampled_from(("split", "chunk")),
    root=TEXT,
    index=st.integers(0, 10_000),
    after=st.none() | TEXT,
    until=st.none() | TEXT,
)
TRACES = st.dictionaries(
    st.sampled_from(("traceparent", "tracestate")), st.text(max_size=64), min_size=1, max_size=2
)
EVENTS = st.builds(
    Event,
    id=TEXT,
    app=TEXT,
    type=TEXT,
    accepted_at=st.floats(0, 4e9, allow_nan=False),
    recipients=st.none() | st.lists(TEXT, max_size=4).map(tuple),
    topic=st.none() | TEXT,
    actor=st.none() | JSON_OBJECT,
    object=st.none() | JSON_OBJECT,
    data=JSON_OBJECT,
    group_key=st.none() | TEXT,
    priority=st.sampled_from(PRIORITIES),
    idempotency_key=st.none() | TEXT,
    trace=st.none() | TRACES,
    part=st.none() | PARTS,
    ordering_key=st.none() | TEXT,
    cancel_key=st.none() | TEXT,
)


@given(EVENTS)
def test_an_event_round_trips_through_its_bytes_with_every_field(event: Event) -> None:
    assert event_from_bytes(event_to_bytes(event)) == event


def test_an_event_without_tracing_or_part_encodes_as_before_they_existed() -> None:
    """Payloads written before tracing and topic jobs had no such keys: absent, not null."""
    raw = orjson.loads(event_to_bytes(Event(id="e1", app="a", type="t", accepted_at=1.5)))
    assert "trace" not in raw
    assert "part" not in raw
    assert raw == {
        "id": "e1",
        "app": "a",
        "type": "t",
        "accepted_at": 1.5,
        "recipients": None,
        "topic": None,
        "actor": None,
        "object": None,
        "data": {},
        "group_key": None,
        "priority": "normal",
        "idempotency_key": None,
    }


def test_an_old_minimal_payload_reads_with_the_defaults() -> None:
    raw = orjson.dumps({"id": "e1", "app": "a", "type": "t", "accepted_at": 2.0, "data": None})
    assert event_from_bytes(raw) == Event(id="e1", app="a", type="t", accepted_at=2.0)


@pytest.mark.parametrize(
    "carrier",
    [
        None,
        "00-abc-01",
        ["traceparent"],
        {},
        {f"k{i}": "v" for i in range(5)},
        {"traceparent": 1},
        {"traceparent": "x" * 513},
    ],
)
def test_a_malformed_trace_carrier_is_dropped_and_the_event_stays_readable(carrier: Any) -> None:
    assert trace_carrier(carrier) is None
    raw = orjson.loads(event_to_bytes(Event(id="e1", app="a", type="t", accepted_at=1.0)))
    raw["trace"] = carrier
    event = event_from_bytes(orjson.dumps(raw))
    assert (event.id, event.trace) == ("e1", None)


def test_a_well_formed_trace_carrier_is_kept() -> None:
    carrier = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "x" * 512}
    assert trace_carrier(carrier) == carrier
    assert trace_carrier({1: "v"}) is None  # only a carrier built in-process can have a non-string key


def test_an_inbox_item_shows_its_read_seen_and_archived_times_as_rfc3339_or_null() -> None:
    payload = orjson.dumps({"seq": 3, "read_at": None, "seen_at": None})
    assert InboxItem(3, payload, None, None).to_json() == {
        "seq": 3,
        "read_at": None,
        "seen_at": None,
        "archived_at": None,
    }
    item = InboxItem(3, payload, read_at=1_790_000_000.5, seen_at=0.0, archived_at=1_790_000_000.5)
    assert item.to_json() == {
        "seq": 3,
        "read_at": "2026-09-21T14:13:20.500Z",
        "seen_at": "1970-01-01T00:00:00.000Z",
        "archived_at": "2026-09-21T14:13:20.500Z",
    }


def test_a_notification_without_an_actor_shows_no_actors() -> None:
    event = Event(id="e1", app="a", type="system.notice", accepted_at=1.0, data={"text": "maintenance"})
    body = orjson.loads(
        render_notification(InboxWrite("a", "alice", event), seq=1, notification_id="n1", created_at=0.25)
    )
    assert (body["actors"], body["count"], body["replaces"]) == ([], 1, None)
    assert (body["event_id"], body["data"], body["created_at"]) == (
        "e1",
        {"text": "maintenance"},
        "1970-01-01T00:00:00.250Z",
    )

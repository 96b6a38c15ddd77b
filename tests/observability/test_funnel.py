"""The funnel observer: one call per stage and batch reaches the metrics and the journal alike."""

from __future__ import annotations

from tidings.core.models import Event, InboxWrite
from tidings.observability.funnel import Funnel
from tidings.observability.journal import Journal
from tidings.testing import FakeClock

from .metrics_support import value


def _event(event_id: str, priority: str = "high") -> Event:
    return Event(event_id, "funnel-app", "post.liked", accepted_at=1_790_000_000.0, priority=priority)  # type: ignore[arg-type]


def test_accepted_counts_each_event_and_remembers_it() -> None:
    """Two accepted events: the funnel's first stage and the per-priority counter grow by two, and the
    journal can answer "when was it accepted" for each."""
    journal = Journal()
    funnel = Funnel(FakeClock(), journal)
    before = value("tidings_funnel_total", stage="accepted")
    before_high = value("tidings_events_accepted_total", priority="high")
    funnel.accepted([_event("e1"), _event("e2")], trace_id=None)
    assert value("tidings_funnel_total", stage="accepted") == before + 2
    assert value("tidings_events_accepted_total", priority="high") == before_high + 2
    record = journal.event("e2")
    assert record is not None
    assert record.accepted_at == 1_790_000_000.0


def test_stored_observes_latency_per_write_and_counts_rows() -> None:
    """Three rows committed 2 s after acceptance: three inbox writes, three latency observations in the
    2.5 s bucket and none below it."""
    clock = FakeClock(1_790_000_002.0)
    funnel = Funnel(clock, Journal())
    writes = [InboxWrite("funnel-app", user, _event("e3")) for user in ("a", "b", "c")]
    rows_before = value("tidings_inbox_writes_total")
    under = value("tidings_accepted_to_stored_seconds_bucket", le="1.0")
    within = value("tidings_accepted_to_stored_seconds_bucket", le="2.5")
    funnel.stored(writes, rows=3)
    assert value("tidings_inbox_writes_total") == rows_before + 3
    assert value("tidings_accepted_to_stored_seconds_bucket", le="1.0") == under
    assert value("tidings_accepted_to_stored_seconds_bucket", le="2.5") == within + 3


def test_delivered_tells_live_from_resumed_frames() -> None:
    """A live frame (held since the bus) and a resumed one (read from the store) written to one connection:
    the journal records both, marked live or not; only the live one has a latency to observe."""
    clock = FakeClock(1_790_000_000.5)
    journal = Journal()
    funnel = Funnel(clock, journal)
    held = funnel.holding("ws", 7, accepted_at=1_790_000_000.0, trace=None)
    delivered_before = value("tidings_funnel_total", stage="delivered_live")
    observed_before = value("tidings_accepted_to_delivered_seconds_count")
    funnel.delivered("funnel-app", "alice", "ws", [6, 7], [(7, held)])
    assert value("tidings_funnel_total", stage="delivered_live") == delivered_before + 2
    assert value("tidings_accepted_to_delivered_seconds_count") == observed_before + 1
    assert journal.deliveries("funnel-app", "alice", 6) == [("ws", clock.time(), False)]
    assert journal.deliveries("funnel-app", "alice", 7) == [("ws", clock.time(), True)]


def test_connection_and_overflow_signals() -> None:
    """Open, close and a slow consumer's overflow move the gauges and counters a dashboard reads."""
    funnel = Funnel(FakeClock(), Journal())
    open_before = value("tidings_connections", transport="sse")
    closes_before = value("tidings_slow_consumer_closes_total")
    funnel.connected("sse", +1)
    assert value("tidings_connections", transport="sse") == open_before + 1
    funnel.overflowed("sse")
    funnel.connected("sse", -1)
    assert value("tidings_connections", transport="sse") == open_before
    assert value("tidings_slow_consumer_closes_total") == closes_before + 1

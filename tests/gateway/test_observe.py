"""The delivery bookkeeping of one connection (``gateway.observe``): what counts as delivered, and when."""

from __future__ import annotations

from tidings.core.models import LiveMessage
from tidings.gateway.observe import MAX_HELD, DeliveryObserver
from tidings.observability.funnel import Funnel
from tidings.observability.journal import JOURNAL
from tidings.testing import FakeClock


def _heard(observer: DeliveryObserver, seq: int, last_seq: int, accepted_at: float = 1.0) -> None:
    observer.heard(LiveMessage("a", "obs", seq, b"{}", accepted_at=accepted_at), last_seq)


def test_live_messages_are_delivered_live_once_written_and_backlog_rows_are_not() -> None:
    """A held (heard live) seq is journaled as live when written; a resumed one as not live."""
    observer = DeliveryObserver("a", "obs-1", "ws", Funnel(FakeClock(5.0)))
    _heard(observer, 2, last_seq=1)
    observer.written(2, [1, 2])
    assert JOURNAL.deliveries("a", "obs-1", 1) == [("ws", 5.0, False)]
    assert JOURNAL.deliveries("a", "obs-1", 2) == [("ws", 5.0, True)]
    assert observer.held == {}


def test_a_long_gap_fill_forgets_what_waits_but_keeps_what_is_queued() -> None:
    """At MAX_HELD, messages still waiting for a gap-fill (seq > last_seq) and stale ones (at or below the
    last written seq) are forgotten; queued ones (written seq < seq <= last_seq) still wait for their write."""
    observer = DeliveryObserver("a", "obs-2", "ws", Funnel(FakeClock(1.0)))
    _heard(observer, 1, last_seq=0)
    observer.written(1, [1])
    _heard(observer, 3, last_seq=1)  # heard during a gap-fill (a page queues it below)
    for seq in range(10, 10 + MAX_HELD - 1):
        _heard(observer, seq, last_seq=1)
    assert len(observer.held) == MAX_HELD
    _heard(observer, 500, last_seq=3)  # 3 is queued now (last_seq 3), everything else waits
    assert set(observer.held) == {3, 500}
    observer.forget()
    assert observer.held == {}

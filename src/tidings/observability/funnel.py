"""One observer for the delivery funnel: each stage reported once, per batch, to metrics, journal and spans.

A stage of an event's life is seen by three instruments: the Prometheus counters and histograms
(``metrics``), the process's bounded journal behind the admin page's "where is my notification" view
(``journal``), and the OpenTelemetry spans (``tracing``). Call sites name the stage once, with the whole
batch, and ``Funnel`` feeds every instrument; so no stage can be counted in one place and forgotten in
another, and the per-batch shape is where any per-message cost would show.

Stages, in order: ``accepted`` (events), then per notification ``fanned_out``, ``stored``, ``delivered``
(once per connection written to), ``seen``, ``read``; beside them ``rejected`` (events refused by reason),
``dead_lettered`` (an event no store accepts, set aside after its tries), the offline senders' outcomes
and queue (``offline_settled``, ``offline_queue``), and the connection and queue
signals of the live path. Label values come only from small fixed sets (see ``metrics``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter, Gauge

from tidings.core.clock import Clock, SystemClock
from tidings.core.models import Event, InboxWrite, TraceCarrier
from tidings.observability import metrics, tracing
from tidings.observability.journal import JOURNAL, Journal

if TYPE_CHECKING:
    from opentelemetry.trace import Span

UNDELIVERED = {"tidings.delivered": False}  # a delivery span ended without its frame reaching the socket

# A live notification on its way to one connection: its seq, when its event was accepted (0.0 unknown) and
# its ``gateway.deliver`` span (None when tracing is off or the trace is not sampled), or None for a
# notification read from the store (a resume or gap-fill: no latency to measure, no span).
Held = tuple[float, "Span | None"]


class Funnel:
    """The funnel's observer; one per process (``FUNNEL``), or one per test with its own journal and clock."""

    __slots__ = ("clock", "journal")

    def __init__(self, clock: Clock | None = None, journal: Journal = JOURNAL) -> None:
        self.clock = clock or SystemClock()
        self.journal = journal

    # -- ingest

    def accepted(self, events: Iterable[Event], trace_id: str | None) -> None:
        """Events appended durably (new ones only: an idempotent replay is not accepted twice)."""
        by_priority: dict[str, int] = {}  # the counters once per priority, not per event
        for event in events:
            by_priority[event.priority] = by_priority.get(event.priority, 0) + 1
            self.journal.accepted(event, trace_id)
        for priority, count in by_priority.items():
            _accepted(priority).inc(count)
            metrics.FUNNEL["accepted"].inc(count)

    def rejected(self, reason: str, count: int = 1) -> None:
        """Events refused (validation_failed, rate_limited, ...): ``reason`` is an error code."""
        metrics.events_rejected_total.labels(reason).inc(count)

    # -- fan-out

    def fanned_out(self, event: Event, recipients: int, spans: tracing.BatchSpans | None = None) -> None:
        """A fan-out job of ``event`` planned ``recipients`` inbox writes."""
        metrics.fanout_recipients.observe(recipients)
        metrics.FUNNEL["fanned_out"].inc(recipients)
        self.journal.fanned_out(event, recipients, self.clock.time())
        if spans is not None:
            spans.fanned_out(event, recipients)

    def stored(self, writes: Sequence[InboxWrite], rows: int) -> None:
        """``rows`` inbox rows committed for ``writes`` (their events' accepted->stored latency)."""
        now = self.clock.time()
        metrics.inbox_writes_total.inc(rows)
        metrics.FUNNEL["stored"].inc(rows)
        for write in writes:
            metrics.accepted_to_stored_seconds.observe(max(0.0, now - write.event.accepted_at))

    def dead_lettered(self, reason: str, count: int = 1) -> None:
        """Events set aside after their tries (a poison message no store accepts)."""
        metrics.events_rejected_total.labels(reason).inc(count)

    def lag(self, events: int) -> None:
        metrics.log_lag.set(events)

    # -- live delivery

    def holding(self, transport: str, seq: int, accepted_at: float, trace: TraceCarrier | None) -> Held:
        """A live notification for a connection, to be observed once its frame is written (or dropped)."""
        span = None
        if trace is not None:
            attributes = {"tidings.transport": transport, "tidings.seq": seq}
            span = tracing.start_span("gateway.deliver", trace, attributes)
        return (accepted_at, span)

    def undelivered(self, held: Iterable[Held | None]) -> None:
        """Held notifications whose frames never reached the socket (the client resumes them from the store)."""
        for item in held:
            if item is not None:
                tracing.end_span(item[1], attributes=UNDELIVERED)

    def delivered(
        self, app: str, user: str, transport: str, seqs: Sequence[int], live: Sequence[tuple[int, Held]] = ()
    ) -> None:
        """One write of the notification frames of ``seqs`` reached one connection's socket; ``live``: those
        of them heard on the bus, with what was held for them (the others were read from the store).

        Per write, not per frame: one funnel increment and one journal record; per live frame only its
        latency (a lock-free bucket bump) and, when traced, its span's end."""
        if not seqs:
            return
        now = self.clock.time()
        if live:
            metrics.accepted_to_delivered_seconds.observe_all(
                [now - accepted_at for _seq, (accepted_at, _span) in live if accepted_at]
            )
            for _seq, (_accepted_at, span) in live:
                if span is not None:
                    tracing.end_span(span)
        metrics.FUNNEL["delivered_live"].inc(len(seqs))
        self.journal.delivered(app, user, transport, now, seqs, [seq for seq, _held in live])

    def sent(self, transport: str, frames: int) -> None:
        """Frames of any kind (notifications, heartbeats, control) written to ``transport`` connections."""
        _sent(transport).inc(frames)

    def connected(self, transport: str, delta: int) -> None:
        """A live connection opened (+1) or closed (-1)."""
        _connections(transport).inc(delta)

    def overflowed(self, transport: str) -> None:
        """A connection's send queue overflowed: it is closed as a slow consumer and resumes from the store."""
        metrics.outbox_overflows_total.labels(transport=transport).inc()
        metrics.slow_consumer_closes_total.inc()

    # -- offline senders

    def offline_settled(self, channel: str, results: Sequence[str], latencies: Sequence[float]) -> None:
        """A sender batch's outcomes on one channel (``pending`` counts as a retry) and the stored->provider
        latencies of the ones a provider accepted."""
        for result in results:
            metrics.offline_sends_total.labels(channel, "retry" if result == "pending" else result).inc()
            if result == "pending":
                metrics.offline_retries_total.labels(channel).inc()
        for seconds in latencies:
            metrics.stored_to_provider_seconds.labels(channel).observe(max(0.0, seconds))

    def offline_queue(self, due: int, oldest_age: float, dead: int, disabled_webhooks: int = 0) -> None:
        """The ledger as one sender sampled it: due deliveries, the oldest one's age, dead letters, and the
        webhook endpoints disabled after failing for a day."""
        metrics.offline_queue_depth.set(due)
        metrics.offline_oldest_due_seconds.set(max(0.0, oldest_age))
        metrics.dead_letters.set(dead)
        metrics.webhooks_disabled.set(disabled_webhooks)

    # -- the user's own marks

    def marked(self, field: Literal["read", "seen"], rows: int) -> None:
        """Rows marked read or seen now (a repeated mark changes nothing and counts nothing)."""
        metrics.FUNNEL[field].inc(rows)


@functools.cache
def _accepted(priority: str) -> Counter:
    # Looked up once per priority (three of them), as ``_sent`` below.
    return metrics.events_accepted_total.labels(priority)


@functools.cache
def _sent(transport: str) -> Counter:
    # Looked up once per transport: ``labels()`` takes a lock and hashes its values, on every write otherwise.
    return metrics.deliveries_total.labels(transport=transport, result="sent")


@functools.cache
def _connections(transport: str) -> Gauge:
    # Looked up once per transport: a resume storm opens thousands of connections a second.
    return metrics.connections.labels(transport=transport)


FUNNEL = Funnel()  # one per process, like the metrics registry and the journal

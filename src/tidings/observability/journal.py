"""A bounded, process-local memory of recent events and live deliveries, for the admin page's "where is my
notification" view.

What the store cannot tell, this process remembers: when an event was accepted here (and its trace id), when
it was fanned out here and to how many recipients, and each notification frame written to a connection of
this process (transport, time, live or resume backlog). Inbox rows and seen/read come from the store.

Bounds: the last ``max_events`` events and the last ``max_deliveries`` delivered (app, user, seq) are kept;
older ones are forgotten first (FIFO), so memory is bounded whatever the traffic. In a deployment of many
processes each one knows only what passed through it: an API process knows acceptances, a worker fan-outs,
a gateway its own connections' deliveries. Nothing here holds a body, a token or a payload.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tidings.core.models import Event

MAX_EVENTS = 50_000  # about 12 MB at the bound (an event id, a few shared strings, two floats)
MAX_DELIVERIES = 100_000  # about 21 MB at the bound
MAX_COPIES = 16  # deliveries kept per notification (devices, resumes): a reconnect loop cannot grow one entry

K = TypeVar("K")
V = TypeVar("V")


@dataclass(slots=True)
class EventRecord:
    """One event as this process saw it; fields stay None for the stages that happened elsewhere."""

    app: str
    type: str | None = None
    priority: str | None = None
    accepted_at: float | None = None
    recipients: int | None = None  # listed recipients (None for a topic event)
    topic: str | None = None
    trace_id: str | None = None
    fanned_out_at: float | None = None  # when the first fan-out job of it ran here
    fanned_out_to: int | None = None  # inbox writes planned by the fan-out jobs that ran here


# One delivery: (transport, time written, live: pushed from the bus rather than read from the store on resume).
Delivery = tuple[str, float, bool]
DeliveryKey = tuple[str, str, int]  # (app, user, seq)


class _Bounded(Generic[K, V]):
    """A dict that forgets its oldest keys past ``limit`` (a deque of keys in insertion order)."""

    __slots__ = ("_items", "_order", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: dict[K, V] = {}
        self._order: deque[K] = deque()

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        if key not in self._items:
            self._order.append(key)
            if len(self._order) > self.limit:
                self._items.pop(self._order.popleft(), None)
        self._items[key] = value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self._order.clear()


class Journal:
    def __init__(self, max_events: int = MAX_EVENTS, max_deliveries: int = MAX_DELIVERIES) -> None:
        self._events: _Bounded[str, EventRecord] = _Bounded(max_events)
        # A single delivery is stored as the tuple itself; a second one (another device) makes a list.
        self._deliveries: _Bounded[DeliveryKey, Delivery | list[Delivery]] = _Bounded(max_deliveries)

    def accepted(self, event: Event, trace_id: str | None) -> None:
        record = self._events.get(event.id) or EventRecord(event.app)
        record.type, record.priority, record.accepted_at = event.type, event.priority, event.accepted_at
        record.recipients = len(event.recipients) if event.recipients is not None else None
        record.topic, record.trace_id = event.topic, trace_id
        self._events.put(event.id, record)

    def fanned_out(self, event: Event, recipients: int, at: float) -> None:
        """A fan-out job of ``event`` planned ``recipients`` inbox writes at ``at``. A large topic is fanned
        out in several chunk jobs: their counts add up (a batch run again after a failure counts again)."""
        record = self._events.get(event.id)
        if record is None:
            record = EventRecord(event.app, event.type, event.priority, topic=event.topic)
            self._events.put(event.id, record)
        if record.fanned_out_at is None:
            record.fanned_out_at = at
        record.fanned_out_to = (record.fanned_out_to or 0) + recipients

    def delivered(
        self, app: str, user: str, seqs: Iterable[tuple[int, bool]], transport: str, at: float
    ) -> None:
        """Frames of these (seq, live) were written to one connection of ``user`` at ``at``."""
        for seq, live in seqs:
            key, delivery = (app, user, seq), (transport, at, live)
            earlier = self._deliveries.get(key)
            if earlier is None:
                self._deliveries.put(key, delivery)
            elif isinstance(earlier, list):
                if len(earlier) < MAX_COPIES:
                    earlier.append(delivery)
            else:
                self._deliveries.put(key, [earlier, delivery])

    def event(self, event_id: str) -> EventRecord | None:
        return self._events.get(event_id)

    def deliveries(self, app: str, user: str, seq: int) -> list[Delivery]:
        found = self._deliveries.get((app, user, seq))
        if found is None:
            return []
        return list(found) if isinstance(found, list) else [found]

    def sizes(self) -> tuple[int, int]:
        """(events, deliveries) remembered now."""
        return len(self._events), len(self._deliveries)

    def clear(self) -> None:
        self._events.clear()
        self._deliveries.clear()


JOURNAL = Journal()  # one per process, like the metrics registry

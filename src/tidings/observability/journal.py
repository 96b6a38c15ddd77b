"""A bounded, process-local memory of recent events and live deliveries, for the admin page's "where is my
notification" view.

What the store cannot tell, this process remembers: when an event was accepted here (and its trace id), when
it was fanned out here and to how many recipients, and each notification frame written to a connection of
this process (transport, time, live or resume backlog). Inbox rows and seen/read come from the store.

Deliveries are recorded **per write**, not per frame: one record holds the seqs one write sent to one connection
of a user (their range, and the seqs themselves only when the range has holes), the time, the transport and
which of them came live. The gateway writes ~30 frames per write under load, so this costs a tuple per write
instead of a dict entry per frame (docs/performance.md, issue 12); a lookup scans the user's records.

Bounds: the last ``max_events`` events and the last ``max_deliveries`` deliveries (one per seq and connection
written to: a second device or a resume counts again) are kept; older ones are forgotten first (FIFO, whole
records), so memory is bounded whatever the traffic. In a deployment of many
processes each one knows only what passed through it: an API process knows acceptances, a worker fan-outs,
a gateway its own connections' deliveries. Nothing here holds a body, a token or a payload.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tidings.core.models import Event

MAX_EVENTS = 50_000  # about 12 MB at the bound (an event id, a few shared strings, two floats)
MAX_DELIVERIES = 100_000  # at most ~15 MB at the bound (one record per delivery), ~0.5 MB at 30 per write

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
UserKey = tuple[str, str]  # (app, user)
# One write to one connection: (first seq, last seq, deliveries, the seqs when first..last has holes else
# None, transport, time, live: True all, False none, else the live seqs).
_Write = tuple[int, int, int, "tuple[int, ...] | None", str, float, "bool | frozenset[int]"]


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
        self.max_deliveries = max_deliveries
        self._writes: dict[UserKey, deque[_Write]] = {}  # per user, oldest first
        self._order: deque[UserKey] = deque()  # whose write came when, oldest first (for forgetting)
        self._deliveries = 0  # deliveries in the records kept

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
        self, app: str, user: str, transport: str, at: float, seqs: Sequence[int], live: Sequence[int] = ()
    ) -> None:
        """One write of the frames of ``seqs`` (ascending) to one connection of ``user`` at ``at``; ``live``:
        those of them that came from the bus (the others were read from the store). One record per write."""
        count = len(seqs)
        if not count:
            return
        first, last = seqs[0], seqs[-1]
        holes = None if last - first + 1 == count else tuple(seqs)
        flag: bool | frozenset[int] = True if len(live) == count else (frozenset(live) if live else False)
        key = (app, user)
        writes = self._writes.get(key)
        if writes is None:
            writes = self._writes[key] = deque()
        writes.append((first, last, count, holes, transport, at, flag))
        self._order.append(key)
        self._deliveries += count
        while self._deliveries > self.max_deliveries:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        key = self._order.popleft()
        writes = self._writes[key]
        self._deliveries -= writes.popleft()[2]
        if not writes:
            del self._writes[key]

    def event(self, event_id: str) -> EventRecord | None:
        return self._events.get(event_id)

    def deliveries(self, app: str, user: str, seq: int) -> list[Delivery]:
        """Every remembered write of ``seq`` to a connection of ``user``, oldest first."""
        found: list[Delivery] = []
        for first, last, _count, holes, transport, at, live in self._writes.get((app, user), ()):
            if first <= seq <= last and (holes is None or seq in holes):
                found.append((transport, at, live if isinstance(live, bool) else seq in live))
        return found

    def sizes(self) -> tuple[int, int]:
        """(events, deliveries) remembered now."""
        return len(self._events), self._deliveries

    def clear(self) -> None:
        self._events.clear()
        self._writes.clear()
        self._order.clear()
        self._deliveries = 0


JOURNAL = Journal()  # one per process, like the metrics registry

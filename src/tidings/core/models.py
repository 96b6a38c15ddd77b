"""The nouns of Tidings as plain frozen dataclasses, and their one wire encoding.

A notification is serialized once, where it is made (the fan-out worker, inside the inbox commit), and
crosses the bus and the gateway as those bytes: the gateway only frames them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tidings.core.clock import isoformat

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
JSON = dict[str, Any]
TraceCarrier = dict[str, str]  # W3C trace context headers: traceparent (and tracestate)


@dataclass(frozen=True, slots=True)
class App:
    """A tenant: one social product. Everything is scoped to one app.

    After a rotation the replaced API key hash / JWT secret is kept as ``previous_*`` and still accepted
    until ``previous_*_until`` (epoch seconds); ``tidings.auth`` compares that time with its clock.
    """

    name: str
    api_key_hash: str
    jwt_secret: str
    origins: tuple[str, ...] = ()
    created_at: float = 0.0
    previous_key_hash: str | None = None
    previous_key_until: float | None = None
    previous_jwt_secret: str | None = None
    previous_secret_until: float | None = None


@dataclass(frozen=True, slots=True)
class FanoutPart:
    """A share of one topic event's fan-out, put back on the log as a job of its own (see ``tidings.planner``).

    ``split``: find the boundaries of the subscribers after ``after``, one every chunk, and append a ``chunk``
    job per range (and the next ``split`` when there are more); ``chunk``: fan out to the subscribers in
    (``after``, ``until``] (``until`` None: to the end). ``root`` is the producer's event id: inbox rows and
    decisions carry it. ``index`` numbers the chunks, so a redelivered split appends the same job ids again.
    """

    kind: Literal["split", "chunk"]
    root: str
    index: int = 0
    after: str | None = None
    until: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """What a producer sent, as accepted (durable) by the API."""

    id: str
    app: str
    type: str
    accepted_at: float
    recipients: tuple[str, ...] | None = None
    topic: str | None = None
    actor: JSON | None = None
    object: JSON | None = None
    data: JSON = field(default_factory=dict)
    group_key: str | None = None
    priority: Priority = "normal"
    idempotency_key: str | None = None
    # W3C trace context of the request that accepted it ({"traceparent": ..., "tracestate": ...}), so the
    # fan-out joins the producer's trace across processes; None when tracing is off.
    trace: TraceCarrier | None = None
    part: FanoutPart | None = None  # set on the fan-out jobs a large topic event is split into
    # Events with the same ordering key are fanned out in acceptance order, whatever the number of workers
    # (None: the default of ``tidings.core.ordering.ordering_key``).
    ordering_key: str | None = None
    # The producer's handle to retract the event later (``POST /v1/events/cancel``); None: only by its id.
    cancel_key: str | None = None


def event_to_bytes(event: Event) -> bytes:
    obj: JSON = {
        "id": event.id,
        "app": event.app,
        "type": event.type,
        "accepted_at": event.accepted_at,
        "recipients": list(event.recipients) if event.recipients is not None else None,
        "topic": event.topic,
        "actor": event.actor,
        "object": event.object,
        "data": event.data,
        "group_key": event.group_key,
        "priority": event.priority,
        "idempotency_key": event.idempotency_key,
    }
    if event.trace is not None:  # absent rather than null: payloads without tracing stay as they were
        obj["trace"] = event.trace
    if event.part is not None:
        part = event.part
        obj["part"] = [part.kind, part.root, part.index, part.after, part.until]
    if event.ordering_key is not None:  # absent rather than null, as trace: older readers see what they knew
        obj["ordering_key"] = event.ordering_key
    if event.cancel_key is not None:
        obj["cancel_key"] = event.cancel_key
    return orjson.dumps(obj)


def event_from_bytes(raw: bytes) -> Event:
    obj = orjson.loads(raw)
    recipients = obj.get("recipients")
    return Event(
        id=obj["id"],
        app=obj["app"],
        type=obj["type"],
        accepted_at=obj["accepted_at"],
        recipients=tuple(recipients) if recipients is not None else None,
        topic=obj.get("topic"),
        actor=obj.get("actor"),
        object=obj.get("object"),
        data=obj.get("data") or {},
        group_key=obj.get("group_key"),
        priority=obj.get("priority", "normal"),
        idempotency_key=obj.get("idempotency_key"),
        trace=trace_carrier(obj.get("trace")),
        part=_part(obj.get("part")),
        ordering_key=obj.get("ordering_key"),
        cancel_key=obj.get("cancel_key"),
    )


def _part(value: object) -> FanoutPart | None:
    if not isinstance(value, list):
        return None
    kind, root, index, after, until = value
    return FanoutPart(kind, root, index, after, until)


def trace_carrier(value: object) -> TraceCarrier | None:
    """``value`` as a trace carrier when it is a small dict of strings (else None: tracing is best effort,
    and a malformed carrier must never make an event or a live message unreadable)."""
    if not isinstance(value, dict) or not 0 < len(value) <= 4:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 512 for k, v in value.items()):
        return None
    return value


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """An offline delivery (web push, email, webhook) the fan-out decided for one notification.

    ``due_at`` None: due at once, unless the user's cap for the channel (``cap`` per ``cap_window`` seconds;
    0: no cap) is used up, when the store defers it into a digest due at the end of the cap window.
    """

    channel: str
    reason: str
    due_at: float | None = None
    digest: bool = False
    cap: int = 0
    cap_window: float = 3600.0


@dataclass(frozen=True, slots=True)
class InboxWrite:
    """One planned inbox row: what the fan-out decided, before the store gives it a seq.

    ``aggregate_window`` > 0 (seconds) makes the row join the user's current aggregate of the event's
    ``group_key`` (and type) when that aggregate started less than the window ago: the store then commits a
    new row that ``replaces`` it, with the latest ``max_actors`` actors and the summed ``count``.
    ``channels`` are the offline deliveries decided for it; ``reason`` why it reaches the inbox (decision log).
    """

    app: str
    user: str
    event: Event
    aggregate_window: float = 0.0
    max_actors: int = 3
    channels: tuple[ChannelPlan, ...] = ()
    reason: str = ""
    # The store.write span's context, set by the worker only for a sampled trace: offline sends continue it.
    trace: TraceCarrier | None = None


@dataclass(frozen=True, slots=True)
class StoredNotification:
    """A committed inbox row as it travels: ``payload`` is the notification JSON made at commit."""

    app: str
    user: str
    seq: int
    event_id: str
    payload: bytes
    # "notification"; "retract": a retraction's marker row (``payload`` is the retract frame); "gone": a write
    # whose event was retracted, or whose row was removed: nothing to publish.
    kind: str = "notification"


@dataclass(frozen=True, slots=True)
class InboxItem:
    """A row for the user API: the immutable payload plus the mutable read/seen state."""

    seq: int
    payload: bytes
    read_at: float | None
    seen_at: float | None
    archived_at: float | None = None

    def to_json(self) -> JSON:
        obj: JSON = orjson.loads(self.payload)
        obj["read_at"] = isoformat(self.read_at) if self.read_at is not None else None
        obj["seen_at"] = isoformat(self.seen_at) if self.seen_at is not None else None
        obj["archived_at"] = isoformat(self.archived_at) if self.archived_at is not None else None
        return obj


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """What crosses the live bus: at most once, addressed to (app, user)."""

    app: str
    user: str
    seq: int
    payload: bytes
    kind: str = "notification"
    accepted_at: float = 0.0  # when the API accepted the event (for the accepted -> delivered histogram)
    trace: TraceCarrier | None = None  # W3C trace context of the publish, so delivery joins the event's trace


# A commit renders all its rows with one created_at: format it once.
_timestamp = functools.lru_cache(maxsize=8)(isoformat)


def render_notification(
    write: InboxWrite,
    *,
    seq: int,
    notification_id: str,
    created_at: float,
    actors: list[JSON] | None = None,
    count: int = 1,
    replaces: int | None = None,
) -> bytes:
    """The notification JSON a user sees, serialized once (see module docstring). An aggregate passes its
    ``actors`` (latest first), ``count`` (events merged) and the seq it ``replaces``."""
    event = write.event
    if actors is None:
        actors = [event.actor] if event.actor is not None else []
    return orjson.dumps(
        {
            "seq": seq,
            "id": notification_id,
            "event_id": event.id,
            "type": event.type,
            "actors": actors,
            "count": count,
            "object": event.object,
            "data": event.data,
            "priority": event.priority,
            "group_key": event.group_key,
            "created_at": _timestamp(created_at),
            "read_at": None,
            "seen_at": None,
            "replaces": replaces,
        }
    )

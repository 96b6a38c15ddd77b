"""The nouns of Tidings as plain frozen dataclasses, and their one wire encoding.

A notification is serialized once, where it is made (the fan-out worker, inside the inbox commit), and
crosses the bus and the gateway as those bytes: the gateway only frames them.
"""

from __future__ import annotations

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
    """A tenant: one social product. Everything is scoped to one app."""

    name: str
    api_key_hash: str
    jwt_secret: str
    origins: tuple[str, ...] = ()
    created_at: float = 0.0


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
    )


def trace_carrier(value: object) -> TraceCarrier | None:
    """``value`` as a trace carrier when it is a small dict of strings (else None: tracing is best effort,
    and a malformed carrier must never make an event or a live message unreadable)."""
    if not isinstance(value, dict) or not 0 < len(value) <= 4:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 512 for k, v in value.items()):
        return None
    return value


@dataclass(frozen=True, slots=True)
class InboxWrite:
    """One planned inbox row: what the fan-out decided, before the store gives it a seq."""

    app: str
    user: str
    event: Event


@dataclass(frozen=True, slots=True)
class StoredNotification:
    """A committed inbox row as it travels: ``payload`` is the notification JSON made at commit."""

    app: str
    user: str
    seq: int
    event_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class InboxItem:
    """A row for the user API: the immutable payload plus the mutable read/seen state."""

    seq: int
    payload: bytes
    read_at: float | None
    seen_at: float | None

    def to_json(self) -> JSON:
        obj: JSON = orjson.loads(self.payload)
        obj["read_at"] = isoformat(self.read_at) if self.read_at is not None else None
        obj["seen_at"] = isoformat(self.seen_at) if self.seen_at is not None else None
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


def render_notification(write: InboxWrite, *, seq: int, notification_id: str, created_at: float) -> bytes:
    """The notification JSON a user sees, serialized once (see module docstring)."""
    event = write.event
    return orjson.dumps(
        {
            "seq": seq,
            "id": notification_id,
            "event_id": event.id,
            "type": event.type,
            "actors": [event.actor] if event.actor is not None else [],
            "count": 1,
            "object": event.object,
            "data": event.data,
            "priority": event.priority,
            "group_key": event.group_key,
            "created_at": isoformat(created_at),
            "read_at": None,
            "seen_at": None,
            "replaces": None,
        }
    )

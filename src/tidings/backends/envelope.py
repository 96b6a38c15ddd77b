"""How a ``LiveMessage`` crosses a network bus, the same on every engine.

One JSON header line, then the notification payload as it was serialized at commit (never re-encoded):
``{"a": app, "u": user, "s": seq, "k": kind, "t": accepted_at}\\n<payload>``, plus ``"tc"``, the W3C trace
context of the publish (``{"traceparent": ...}``), only when tracing is on. orjson never writes a raw newline,
so the first newline ends the header.
"""

from __future__ import annotations

import base64

import orjson

from tidings.core.models import JSON, LiveMessage, trace_carrier


def encode_live(message: LiveMessage) -> bytes:
    header: JSON = {
        "a": message.app,
        "u": message.user,
        "s": message.seq,
        "k": message.kind,
        "t": message.accepted_at,
    }
    if message.trace is not None:
        header["tc"] = message.trace
    return orjson.dumps(header) + b"\n" + message.payload


def decode_live(data: bytes) -> LiveMessage:
    """Raises ``ValueError`` on anything that is not an envelope (a bus may carry others' traffic)."""
    header, sep, payload = data.partition(b"\n")
    if not sep:
        raise ValueError("no envelope header")
    fields = orjson.loads(header)
    if not isinstance(fields, dict):
        raise ValueError("envelope header is not an object")
    app, user, seq, kind = fields.get("a"), fields.get("u"), fields.get("s"), fields.get("k", "notification")
    if not (
        isinstance(app, str) and isinstance(user, str) and isinstance(seq, int) and isinstance(kind, str)
    ):
        raise ValueError("envelope header fields")
    accepted_at = fields.get("t", 0.0)
    if not isinstance(accepted_at, int | float) or isinstance(accepted_at, bool):
        raise ValueError("envelope header fields")
    # A bad trace context is dropped, never fatal: tracing must not cost a delivery.
    return LiveMessage(app, user, seq, payload, kind, float(accepted_at), trace_carrier(fields.get("tc")))


def token(value: str) -> str:
    """A user or app id as one subject/routing-key token: unpadded base64url, so '.', '*', '>', ' ' and any
    other character of an id can never split or wildcard a NATS subject or an AMQP routing key."""
    return base64.urlsafe_b64encode(value.encode()).rstrip(b"=").decode() or "_"

"""The live protocol (``/v1/ws`` and ``/v1/stream``) as an AsyncAPI 3.0 document, served at ``/asyncapi.json``.

Hand-written from the frame shapes in ``tidings.core.frames`` and docs/protocol.md (which stay the reference:
change them together). The OpenAPI document cannot describe a WebSocket or an event stream's messages; this
one does, so a client author sees every frame, in both directions, in one machine-readable place.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import Request

from tidings import __version__
from tidings.core.frames import MAX_SEQ, MAX_TOKEN_CHARS

PATH = "/asyncapi.json"

# The WebSocket error codes sent in {"type":"error"} before a server-initiated close (docs/protocol.md).
WS_ERROR_CODES = (
    "invalid_frame",
    "auth_timeout",
    "auth_required",
    "unauthorized",
    "origin_not_allowed",
    "token_expired",
    "user_mismatch",
    "rate_limited",
    "unavailable",
    "draining",
    "slow_consumer",
)

_SEQ = {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}
_EPOCH = {
    "type": "string",
    "description": "Names one life of the user's stream: it changes when the store is recreated; compare it with "
    "the epoch of the cursor's stream, and drop the cursor when it differs",
}


def _obj(properties: dict[str, Any], required: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, **extra}


_NOTIFICATION = _obj(
    {
        "seq": {**_SEQ, "description": "per-user, gap-free, increasing: resume after the last one seen"},
        "id": {"type": "string"},
        "event_id": {"type": "string", "description": "the id POST /v1/events answered"},
        "type": {"type": "string"},
        "actors": {"type": "array", "items": {"type": "object"}, "description": "latest first"},
        "count": {"type": "integer", "minimum": 1, "description": "events merged into this one"},
        "object": {"type": ["object", "null"]},
        "data": {"type": "object"},
        "priority": {"type": "string", "enum": ["low", "normal", "high"]},
        "group_key": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "read_at": {"type": ["string", "null"], "format": "date-time"},
        "seen_at": {"type": ["string", "null"], "format": "date-time"},
        "replaces": {
            "type": ["integer", "null"],
            "description": "an aggregate's earlier seq this one replaces (drop it from the list)",
        },
    },
    ["seq", "id", "event_id", "type", "created_at"],
)

_READ = _obj(
    {
        "type": {"const": "read"},
        "field": {"type": "string", "enum": ["read", "seen"]},
        "seqs": {"type": "array", "items": _SEQ, "description": "these seqs were marked"},
        "up_to": {**_SEQ, "description": "every seq up to this one was marked"},
        "unread": {"type": "integer", "minimum": 0},
        "unseen": {"type": "integer", "minimum": 0},
    },
    ["type", "field", "unread", "unseen"],
    description="A read or seen mark made by any of the user's clients, with the counts after it.",
)

_COUNTS = {"unread": {"type": "integer", "minimum": 0}, "unseen": {"type": "integer", "minimum": 0}}

_RETRACT = _obj(
    {
        "type": {"const": "retract"},
        "seqs": {"type": "array", "items": _SEQ, "description": "remove these notifications"},
        **_COUNTS,
    },
    ["type", "seqs", "unread", "unseen"],
    description=(
        "The producer retracted these notifications (with the counts after it). In a backlog it stands at its "
        "own seq (SSE: its id:); a seq the client does not have needs nothing."
    ),
)

_STATE = _obj(
    {
        "type": {"const": "state"},
        "action": {"type": "string", "enum": ["archive", "unarchive", "unread", "delete"]},
        "seqs": {"type": "array", "items": _SEQ, "description": "the notifications that changed"},
        **_COUNTS,
    },
    ["type", "action", "seqs", "unread", "unseen"],
    description="A state change made by any of the user's clients, with the counts after it.",
)

_SCHEMAS: dict[str, dict[str, Any]] = {
    "Notification": _NOTIFICATION,
    "Auth": _obj(
        {
            "type": {"const": "auth"},
            "token": {"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_CHARS},
            "after": {**_SEQ, "description": "resume after this seq; omitted: only what comes next"},
        },
        ["type", "token"],
        additionalProperties=False,
    ),
    "Ping": _obj({"type": {"const": "ping"}}, ["type"], additionalProperties=False),
    "Pong": _obj({"type": {"const": "pong"}}, ["type"], additionalProperties=False),
    "Ready": _obj(
        {"type": {"const": "ready"}, "user": {"type": "string"}, "last_seq": _SEQ, "epoch": _EPOCH},
        ["type", "user", "last_seq", "epoch"],
    ),
    "Reset": _obj(
        {
            "type": {"const": "reset"},
            "last_seq": _SEQ,
            "epoch": _EPOCH,
            "reason": {"const": "expired", "description": "the cursor was below the retention floor"},
        },
        ["type", "last_seq", "epoch"],
        description=(
            "Right after ready when the resume cursor was ahead of the user's last_seq: the stream goes on "
            "from last_seq. Drop the cursor and reload the list (or resume from 0). With reason expired, the "
            "cursor's seqs were swept by retention: last_seq is where the stream goes on (the latest page "
            "follows)."
        ),
    ),
    "NotificationFrame": _obj(
        {"type": {"const": "notification"}, "notification": {"$ref": "#/components/schemas/Notification"}},
        ["type", "notification"],
    ),
    "Read": _READ,
    "Retract": _RETRACT,
    "State": _STATE,
    "Error": _obj(
        {
            "type": {"const": "error"},
            "code": {"type": "string", "enum": list(WS_ERROR_CODES)},
            "message": {"type": "string"},
        },
        ["type", "code", "message"],
        description="Sent right before a close the server initiates; the close code says what to do next.",
    ),
    "SseReady": _obj(
        {"user": {"type": "string"}, "last_seq": _SEQ, "epoch": _EPOCH}, ["user", "last_seq", "epoch"]
    ),
    "SseError": _obj({"code": {"enum": ["slow_consumer", "token_expired"]}}, ["code"]),
    "TokenExpired": _obj(
        {"type": {"const": "token_expired"}, "grace": {"type": "number", "minimum": 0}},
        ["type", "grace"],
        description=(
            "The connection's token expired: send an auth frame with a fresh token of the same user within "
            "`grace` seconds, or the connection is closed (1008 token_expired). SSE: event token_expired, then "
            "the stream ends; reconnect with a fresh token and Last-Event-ID."
        ),
    ),
    "Reauthed": _obj(
        {
            "type": {"const": "reauthed"},
            "expires_at": {"type": "number", "description": "the new token's exp"},
        },
        ["type", "expires_at"],
        description="The fresh token of an in-band re-auth was accepted; nothing is resent.",
    ),
}


def _message(name: str, schema: str, summary: str) -> dict[str, Any]:
    return {
        "name": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{schema}"},
    }


_MESSAGES: dict[str, dict[str, Any]] = {
    "auth": _message("auth", "Auth", "First frame, within TIDINGS_AUTH_TIMEOUT (10 s)"),
    "ping": _message("ping", "Ping", "Keep-alive; the other side answers pong"),
    "pong": _message("pong", "Pong", "The answer to a ping"),
    "ready": _message("ready", "Ready", "Sent once after a successful auth"),
    "notification": _message("notification", "NotificationFrame", "Backlog, then live, in seq order"),
    "read": _message("read", "Read", "Read-sync: a mark made by another of the user's clients"),
    "reset": _message("reset", "Reset", "Right after ready: the resume cursor was ahead of the server"),
    "error": _message("error", "Error", "Why the server is about to close the connection"),
    "sseReady": _message("ready", "SseReady", "event: ready (first, after retry:)"),
    "sseNotification": _message(
        "notification", "Notification", "event: notification, with id: <seq> (Last-Event-ID on reconnect)"
    ),
    "sseReset": _message(
        "reset", "Reset", "event: reset, with id: <last_seq> (same JSON as the WebSocket frame)"
    ),
    "sseRead": _message("read", "Read", "event: read (same JSON as the WebSocket frame)"),
    "sseError": _message("error", "SseError", "event: error, then the stream ends; reconnect"),
    "tokenExpired": _message("token_expired", "TokenExpired", "At the token's exp: re-auth within the grace"),
    "reauthed": _message("reauthed", "Reauthed", "The answer to an auth frame sent after ready (re-auth)"),
    "sseTokenExpired": _message(
        "token_expired", "TokenExpired", "event: token_expired (the stream ends next)"
    ),
    "retract": _message("retract", "Retract", "Notifications the producer retracted: remove them"),
    "state": _message(
        "state", "State", "Archive, unarchive, unread or delete made by one of the user's clients"
    ),
    "sseRetract": _message(
        "retract", "Retract", "event: retract, with id: <seq> (same JSON as the WebSocket frame)"
    ),
    "sseState": _message("state", "State", "event: state (same JSON as the WebSocket frame)"),
}

_WS_CLOSES = (
    "Close codes: 1007 invalid_frame; 1008 auth_timeout, auth_required, unauthorized, origin_not_allowed, "
    "token_expired, user_mismatch (a re-auth of another user), rate_limited (client frames over "
    "TIDINGS_WS_CLIENT_RATE/_BURST); 1009 a frame over TIDINGS_MAX_FRAME_BYTES; 1011 unavailable (reconnect with "
    "backoff); 1012 draining (reconnect with jittered backoff); 1013 slow_consumer (reconnect). Resume with "
    "`after` = the last seq seen; one ahead of the user's last_seq gets `reset` right after `ready`."
)


def _refs(*names: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/messages/{name}"} for name in names}


def document(server_url: str = "127.0.0.1:8080") -> dict[str, Any]:
    """The AsyncAPI 3.0 document; ``server_url`` is the host:port the reader reached (shown as the server)."""
    ws_in = ("auth", "ping", "pong")
    ws_out = (
        "ready",
        "reset",
        "notification",
        "read",
        "retract",
        "state",
        "ping",
        "pong",
        "tokenExpired",
        "reauthed",
        "error",
    )
    sse_out = (
        "sseReady",
        "sseReset",
        "sseNotification",
        "sseRead",
        "sseRetract",
        "sseState",
        "sseTokenExpired",
        "sseError",
    )

    def ops(channel: str, action: str, names: tuple[str, ...], summary: str) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{n}"} for n in names],
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tidings live delivery",
            "version": __version__,
            "description": (
                "Every notification of a user, exactly once and in seq order, across reconnects: resume with "
                "the last seq seen. The HTTP API is at /openapi.json; prose and limits in docs/protocol.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "ws": {"host": server_url, "protocol": "ws", "description": "WebSocket (wss behind TLS)"},
            "http": {"host": server_url, "protocol": "http", "description": "Server-Sent Events"},
        },
        "channels": {
            "websocket": {
                "address": "/v1/ws",
                "title": "WebSocket",
                "description": "JSON text frames (binary frames of UTF-8 JSON are accepted). " + _WS_CLOSES,
                "servers": [{"$ref": "#/servers/ws"}],
                "messages": _refs(*dict.fromkeys(ws_in + ws_out)),
            },
            "stream": {
                "address": "/v1/stream",
                "title": "Server-Sent Events",
                "description": (
                    "Credentials: Authorization: Bearer <JWT>, or ?ticket= from POST /v1/me/stream-tickets. "
                    "Bad credentials answer 401 JSON before any stream. Resume with Last-Event-ID or ?after=. "
                    "`: ping` comments keep the connection alive; on drain the stream ends with a retry: hint."
                ),
                "servers": [{"$ref": "#/servers/http"}],
                "messages": _refs(*sse_out),
            },
        },
        "operations": {
            # Actions are the server's: it receives what a client sends, and sends the rest.
            "receiveClientFrames": ops("websocket", "receive", ws_in, "What a client sends"),
            "sendServerFrames": ops("websocket", "send", ws_out, "What the server sends"),
            "sendEvents": ops("stream", "send", sse_out, "The SSE events"),
        },
        "components": {"schemas": _SCHEMAS, "messages": _MESSAGES},
    }


def install(app: FastAPI) -> None:
    async def asyncapi(request: Request) -> JSONResponse:
        host = request.headers.get("host") or "127.0.0.1:8080"
        return JSONResponse(document(host))

    app.add_route(PATH, asyncapi, methods=["GET", "HEAD"], include_in_schema=False)

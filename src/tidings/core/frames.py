"""The live wire format: WebSocket client frames (parsed) and server frames and SSE events (encoded).

Client frames are a tagged union of frozen dataclasses, told apart by their JSON ``type``. Parsing is
total: whatever a client sends, ``parse_client_frame`` returns a frame or raises ``FrameError`` and nothing
else, and its messages never echo the input (an auth frame carries a token).

Server frames are built as bytes. A notification payload is JSON serialized once by the worker; it is spliced
into its frame by byte concatenation, never decoded and encoded again: measured, encoding JSON per message
costs more than a third of a gateway's throughput (docs/performance.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from tidings.errors import FrameError

MAX_TOKEN_CHARS = 8192
# Seqs are stored as signed 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT).
MAX_SEQ = 2**63 - 1
# Larger than any unpadded auth frame, even one whose 8192-char token is written as \u escapes of
# astral characters (12 bytes each); a gateway can use it as its transport's message size limit too.
MAX_CLIENT_FRAME_BYTES = 128 * 1024


@dataclass(frozen=True, slots=True)
class AuthFrame:
    """``{"type": "auth", "token": JWT, "after": SEQ}``; ``after`` None: from the user's ``last_seq``."""

    token: str
    after: int | None = None


@dataclass(frozen=True, slots=True)
class PingFrame:
    """``{"type": "ping"}``: the server answers with a pong."""


@dataclass(frozen=True, slots=True)
class PongFrame:
    """``{"type": "pong"}``: the client's answer to a server ping."""


ClientFrame = AuthFrame | PingFrame | PongFrame

_KEYS: dict[str, frozenset[str]] = {
    "auth": frozenset({"type", "token", "after"}),
    "ping": frozenset({"type"}),
    "pong": frozenset({"type"}),
}


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Parse one client frame; raises ``FrameError`` (only) when it is not exactly a valid frame."""
    obj = _load_object(data)
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _KEYS:
        raise FrameError("missing or unknown frame type")
    if not obj.keys() <= _KEYS[kind]:
        raise FrameError(f"unknown key in {kind} frame")
    if kind == "ping":
        return PingFrame()
    if kind == "pong":
        return PongFrame()
    return AuthFrame(token=_token(obj.get("token")), after=_after(obj.get("after")))


def _load_object(data: str | bytes) -> dict[str, Any]:
    if not isinstance(data, str | bytes):
        raise FrameError("frame must be text or bytes")
    if len(data) > MAX_CLIENT_FRAME_BYTES:
        raise FrameError("frame too large")
    try:
        # orjson rejects invalid UTF-8 in bytes and lone surrogates in str, as JSONDecodeError.
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("frame must be a JSON object")
    return obj


def _token(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN_CHARS:
        raise FrameError(f"token must be a non-empty string of at most {MAX_TOKEN_CHARS} characters")
    return value


def _after(value: object) -> int | None:
    if value is None:
        return None
    # bool is a subclass of int in Python, but `true` is not a seq.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise FrameError("after must be an integer seq >= 0")
    return value


def _dumps(obj: dict[str, object]) -> bytes:
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        # orjson refuses lone surrogates (a JWT `sub` may decode to one); escaped ASCII JSON is still valid.
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


def encode_ready(user: str, last_seq: int, epoch: str) -> bytes:
    """``{"type":"ready","user":…,"last_seq":…,"epoch":…}``: sent once, after a successful auth."""
    return _dumps({"type": "ready", "user": user, "last_seq": last_seq, "epoch": epoch})


def encode_reset(last_seq: int, epoch: str, *, expired: bool = False) -> bytes:
    """``{"type":"reset","last_seq":…,"epoch":…}``: right after ready when the client's cursor was ahead of
    ``last_seq``; the stream goes on from ``last_seq``. SSE sends the same JSON as ``event: reset``.
    ``expired``: the cursor was below the retention floor; ``last_seq`` is then where the stream goes on from
    (the latest page follows) and the frame says ``"reason":"expired"``."""
    if expired:
        return _dumps({"type": "reset", "last_seq": last_seq, "epoch": epoch, "reason": "expired"})
    return _dumps({"type": "reset", "last_seq": last_seq, "epoch": epoch})


def encode_notification(payload: bytes) -> bytes:
    """Frame an already serialized notification (its JSON bytes, spliced as is)."""
    return b'{"type":"notification","notification":' + payload + b"}"


def encode_read(field: str, *, seqs: list[int] | None, up_to: int | None, unread: int, unseen: int) -> bytes:
    """``{"type":"read","field":"read"|"seen","seqs":[…]|"up_to":N,"unread":n,"unseen":n}``: a read or seen
    mark made by any of the user's clients, with the counts after it (read-sync). SSE sends the same JSON as
    ``event: read``."""
    obj: dict[str, object] = {"type": "read", "field": field}
    if seqs is not None:
        obj["seqs"] = seqs
    if up_to is not None:
        obj["up_to"] = up_to
    obj["unread"], obj["unseen"] = unread, unseen
    return _dumps(obj)


def encode_error(code: str, message: str) -> bytes:
    """``{"type":"error","code":…,"message":…}``: sent before the server closes the connection."""
    return _dumps({"type": "error", "code": code, "message": message})


# --- token lifetime (docs/protocol.md "Token lifetime and re-authentication") --------------------------------------


def encode_token_expired(grace: float) -> bytes:
    """``{"type":"token_expired","grace":S}``: the connection's token has just expired; the client has ``S``
    seconds to send ``{"type":"auth","token":…}`` with a fresh token of the same user, or the server closes it
    with 1008 (error code ``token_expired``). SSE sends the same JSON as ``event: token_expired`` (and then
    ends the stream: the client reconnects with a fresh token)."""
    return _dumps({"type": "token_expired", "grace": grace})


def encode_reauthed(expires_at: float) -> bytes:
    """``{"type":"reauthed","expires_at":EXP}``: the fresh token of an in-band re-auth was accepted; the
    connection now lives until ``EXP`` (the new token's ``exp``, seconds since the epoch). Nothing is resent."""
    return _dumps({"type": "reauthed", "expires_at": expires_at})


_PING = b'{"type":"ping"}'
_PONG = b'{"type":"pong"}'


def encode_ping() -> bytes:
    return _PING


def encode_pong() -> bytes:
    return _PONG


# The SSE spec ends a line with CRLF, LF or CR; every one of them would cut a data line short.
_SSE_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def sse_event(event: str, data: bytes, id: int | None = None) -> bytes:
    """One SSE event: ``id: N`` (when given), ``event: X``, one ``data:`` line per line of ``data``.

    A client joins the data lines with LF, so ``data`` arrives intact up to its line-break style.
    Raises ``ValueError`` for an event name with a line break or a negative id (server bugs, not input).
    """
    if "\r" in event or "\n" in event:
        raise ValueError("SSE event name must not contain a line break")
    head = b"event: " + event.encode() + b"\n"
    if id is not None:
        if id < 0:
            raise ValueError("SSE id must be >= 0")
        head = b"id: %d\n" % id + head
    lines = _SSE_LINE_BREAK.split(data)
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def sse_comment(text: str) -> bytes:
    """``: text`` (a heartbeat clients ignore); each line of ``text`` becomes its own comment line."""
    lines = _SSE_LINE_BREAK.split(text.encode())
    return b"".join(b": " + line + b"\n" for line in lines) + b"\n"


def sse_retry(ms: int) -> bytes:
    """``retry: ms``: how long a browser waits before it reconnects."""
    if ms < 0:
        raise ValueError("SSE retry must be >= 0")
    return b"retry: %d\n\n" % ms


_DECIMAL = re.compile(r"[0-9]{1,19}")


def parse_last_event_id(value: str | None) -> int | None:
    """The seq in a ``Last-Event-ID`` header (or ``?after=``): ASCII decimal >= 0; None when absent."""
    if value is None:
        return None
    # A strict pattern: int() would also take "+1", " 1", "1_0" and non-ASCII digits.
    if not _DECIMAL.fullmatch(value) or int(value) > MAX_SEQ:
        raise FrameError("Last-Event-ID must be a seq: a decimal integer >= 0")
    return int(value)


# --- the life of a notification (retraction and per-user states) ----------------------------------------------


def encode_retract(seqs: list[int], *, unread: int, unseen: int) -> bytes:
    """``{"type":"retract","seqs":[…],"unread":n,"unseen":n}``: these notifications are gone (the producer
    retracted them); remove them, and show the counts after. SSE sends the same JSON as ``event: retract``.
    A backlog shows a retraction at the seq of its marker row (SSE: with that ``id:``), so a resumed stream
    learns of it too."""
    return _dumps({"type": "retract", "seqs": seqs, "unread": unread, "unseen": unseen})


def encode_state(action: str, *, seqs: list[int], unread: int, unseen: int) -> bytes:
    """``{"type":"state","action":"archive"|"unarchive"|"unread"|"delete","seqs":[…],"unread":n,"unseen":n}``:
    a state change made by one of the user's clients, with the counts after it. SSE: ``event: state``."""
    return _dumps({"type": "state", "action": action, "seqs": seqs, "unread": unread, "unseen": unseen})


RETRACT_PREFIX = b'{"type":"retract"'
STATE_PREFIX = b'{"type":"state"'


def sync_event_name(frame: bytes) -> str:
    """The SSE event name of a frame the API made for live connections (read-sync, state, retract)."""
    if frame.startswith(STATE_PREFIX):
        return "state"
    if frame.startswith(RETRACT_PREFIX):
        return "retract"
    return "read"

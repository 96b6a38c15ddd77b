"""The server side of RFC 6455 as far as the gateway needs it, sans I/O: the opening handshake, client frames
in, server frames out. ``gateway.listener`` drives it on an asyncio transport.

Why not websockets' ``ServerProtocol`` (decision 0002): it keeps the parsed request, a stream reader and a
parser generator alive per connection (about 3.5 KB), while a gateway connection after its handshake only ever
reads a few small frames (auth, ping, pong, close). This module keeps one ``bytes`` buffer and a few ints.
The subtle parts reuse websockets' helpers (``accept_key``; ``apply_mask``, in C when built).

Scope: no extensions (any RSV bit is a protocol error), no subprotocols, text and binary messages up to
``max_size`` bytes (fragments included), control frames answered or reported. Violations raise
``WireError`` carrying the close code to send.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.utils import accept_key

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

MAX_REQUEST_BYTES = 8192  # an opening handshake larger than this is refused (431)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (OP_CONT, OP_TEXT, OP_BINARY)
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")
_SHORT_TEXT = [bytes((0x81, n)) for n in range(126)]


class WireError(Exception):
    """The peer broke the protocol: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


# --- opening handshake -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """The outcome of a request: ``response`` to write; ``accepted`` when it is a 101 (then frames follow,
    starting with ``rest``); ``origin`` and ``host`` for the admission check."""

    response: bytes
    accepted: bool
    origin: str | None = None
    host: str = ""
    rest: bytes = b""


def _refusal(status: int, reason: str, extra: str = "") -> Handshake:
    body = reason.encode() + b"\n"
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n{extra}"
    return Handshake((head + "Connection: close\r\n\r\n").encode() + body, accepted=False)


def read_handshake(buffer: bytes, path: str) -> Handshake | None:
    """The handshake in ``buffer``, or None while the request's head is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_REQUEST_BYTES:
            return _refusal(431, "Request Header Fields Too Large")
        return None
    try:
        lines = buffer[:end].decode("latin-1").split("\r\n")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        return _refusal(400, "Bad Request")
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    headers = _headers(lines[1:])
    if headers is None or method != "GET" or version != "HTTP/1.1":
        return _refusal(400, "Bad Request")
    if urlsplit(target).path != path:
        return _refusal(404, "Not Found")
    key = headers.get("sec-websocket-key", "")
    if (
        "websocket" not in headers.get("upgrade", "").lower()
        or "upgrade" not in headers.get("connection", "").lower()
        or not _valid_key(key)
    ):
        return _refusal(400, "Bad Request")
    if headers.get("sec-websocket-version") != "13":
        return _refusal(426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n")
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()
    origin = headers.get("origin")
    return Handshake(response, True, origin, headers.get("host", ""), buffer[end + 4 :])


def _headers(lines: list[str]) -> dict[str, str] | None:
    """Header names lower-cased; a repeated header is refused (None), as is a line without a colon."""
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or name in headers:
            return None
        headers[name] = value.strip()
    return headers


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode(), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False


# --- frames ---------------------------------------------------------------------------------------------------


def text_frame_header(size: int) -> bytes:
    """The header of an unmasked, final text frame of ``size`` payload bytes (a server frame)."""
    if size < 126:
        return _SHORT_TEXT[size]
    if size < 65536:
        return _HEAD16.pack(0x81, 126, size)
    return _HEAD64.pack(0x81, 127, size)


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A server control frame (close, ping, pong); its payload is at most 125 bytes."""
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return control_frame(OP_CLOSE, _U16.pack(code) + reason.encode()[:123])


class FrameReader:
    """Client frames from a byte stream: ``feed`` returns the complete messages and control frames so far,
    as ``(opcode, payload)``; a fragmented message comes out once, under its first frame's opcode."""

    __slots__ = ("_buffer", "_fragments", "_opcode", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = b""
        self._fragments: list[bytes] | None = None  # a fragmented message in progress
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        while True:
            frame = self._frame(buffer, pos)
            if frame is None:
                break
            fin, opcode, payload, pos = frame
            message = self._message(fin, opcode, payload)
            if message is not None:
                out.append(message)
        self._buffer = buffer[pos:]
        return out

    def _frame(self, buffer: bytes, pos: int) -> tuple[bool, int, bytes, int] | None:
        """One frame at ``pos``: (fin, opcode, unmasked payload, next position), or None if incomplete."""
        if len(buffer) - pos < 2:
            return None
        first, second = buffer[pos], buffer[pos + 1]
        if first & 0x70:
            raise WireError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        if not second & 0x80:
            raise WireError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        opcode, size, head = first & 0x0F, second & 0x7F, pos + 2
        if opcode not in _DATA and opcode not in _CONTROL:
            raise WireError(CLOSE_PROTOCOL_ERROR, "unknown opcode")
        if opcode in _CONTROL and (size > 125 or not first & 0x80):
            raise WireError(CLOSE_PROTOCOL_ERROR, "bad control frame")
        if size >= 126:
            width = 2 if size == 126 else 8
            if len(buffer) - head < width:
                return None
            size = (_U16 if width == 2 else _U64).unpack_from(buffer, head)[0]
            head += width
        if size > self.max_size:
            raise WireError(CLOSE_TOO_BIG, "frame too big")
        end = head + 4 + size
        if len(buffer) < end:
            return None
        payload = apply_mask(buffer[head + 4 : end], buffer[head : head + 4])
        return bool(first & 0x80), opcode, payload, end

    def _message(self, fin: bool, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode in _CONTROL:
            return opcode, payload
        if opcode == OP_CONT:
            if self._fragments is None:
                raise WireError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            self._fragments.append(payload)
            if sum(map(len, self._fragments)) > self.max_size:
                raise WireError(CLOSE_TOO_BIG, "message too big")
            if not fin:
                return None
            message, self._fragments = b"".join(self._fragments), None
            return self._opcode, message
        if self._fragments is not None:
            raise WireError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        if fin:
            return opcode, payload
        self._fragments, self._opcode = [payload], opcode
        return None

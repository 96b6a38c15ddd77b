"""The live wire format: client frame parsing (total, strict) and server/SSE frame encoding."""

from __future__ import annotations

import contextlib
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.frames import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_SEQ,
    MAX_TOKEN_CHARS,
    AuthFrame,
    PingFrame,
    PongFrame,
    encode_error,
    encode_notification,
    encode_ping,
    encode_pong,
    encode_ready,
    parse_client_frame,
    parse_last_event_id,
    sse_comment,
    sse_event,
    sse_retry,
)
from tidings.errors import FrameError

# orjson writes integers of 64 bits at most; larger ones are covered by the parametrized cases.
ints64 = st.integers(-(2**63), 2**64 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | ints64 | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
tokens = st.text(min_size=1, max_size=64).filter(lambda t: not re.search("[\ud800-\udfff]", t))


@pytest.mark.parametrize(
    ("raw", "frame"),
    [
        (b'{"type":"auth","token":"t.k.n","after":16}', AuthFrame("t.k.n", 16)),
        ('{"type": "auth", "token": "t.k.n"}', AuthFrame("t.k.n", None)),
        (b'{"type":"auth","token":"x","after":null}', AuthFrame("x", None)),
        (b'{"type":"auth","token":"x","after":0}', AuthFrame("x", 0)),
        (b'{"type":"auth","token":"x","after":9223372036854775807}', AuthFrame("x", MAX_SEQ)),
        (b'{"type":"ping"}', PingFrame()),
        (' {"type":"pong"} ', PongFrame()),
    ],
)
def test_valid_client_frames_parse(raw: str | bytes, frame: object) -> None:
    """A client's auth, ping and pong frames are understood, as text or as binary."""
    assert parse_client_frame(raw) == frame


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",  # not UTF-8
        b"",
        b"{",
        b"[]",
        b'"auth"',
        b"null",
        b"{}",
        b'{"type":null}',
        b'{"type":1}',
        b'{"type":"hello"}',
        b'{"type":"ping","extra":1}',
        b'{"type":"pong","token":"x"}',
        b'{"type":"auth"}',
        b'{"type":"auth","token":""}',
        b'{"type":"auth","token":7}',
        b'{"type":"auth","token":"x","user":"alice"}',
        b'{"type":"auth","token":"x","after":-1}',
        b'{"type":"auth","token":"x","after":true}',
        b'{"type":"auth","token":"x","after":false}',
        b'{"type":"auth","token":"x","after":1.0}',
        b'{"type":"auth","token":"x","after":"16"}',
        b'{"type":"auth","token":"x","after":9223372036854775808}',
        b'{"type":"auth","token":"x","after":100000000000000000000000}',
        '{"type":"auth","token":"\ud800"}',  # a lone surrogate: not encodable text
        b"[" * 5000 + b"]" * 5000,  # deeper than the parser allows
    ],
)
def test_invalid_client_frames_raise_frame_error(raw: str | bytes) -> None:
    """A malformed frame is refused with FrameError, never another exception."""
    with pytest.raises(FrameError):
        parse_client_frame(raw)


def test_token_length_limit() -> None:
    """A token of 8192 characters is accepted; one more character is refused."""
    at_limit = orjson.dumps({"type": "auth", "token": "a" * MAX_TOKEN_CHARS})
    assert parse_client_frame(at_limit) == AuthFrame("a" * MAX_TOKEN_CHARS, None)
    with pytest.raises(FrameError):
        parse_client_frame(orjson.dumps({"type": "auth", "token": "a" * (MAX_TOKEN_CHARS + 1)}))


def test_oversized_frame_and_wrong_input_type_are_refused() -> None:
    """Frames past the size limit, and inputs that are not text or bytes, are refused with FrameError."""
    padded = b'{"type":"ping"}' + b" " * MAX_CLIENT_FRAME_BYTES
    with pytest.raises(FrameError, match="too large"):
        parse_client_frame(padded)
    with pytest.raises(FrameError):
        parse_client_frame(bytearray(b'{"type":"ping"}'))  # type: ignore[arg-type]


def test_frame_errors_do_not_echo_the_token() -> None:
    """A refused auth frame's error message never contains the token the client sent."""
    secret = "s3cret-" + "x" * MAX_TOKEN_CHARS
    with pytest.raises(FrameError) as info:
        parse_client_frame(orjson.dumps({"type": "auth", "token": secret, "after": -5}))
    assert "s3cret" not in str(info.value)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_frame_error(raw: bytes) -> None:
    """Whatever bytes arrive, parsing yields a frame or a FrameError."""
    with contextlib.suppress(FrameError):
        parse_client_frame(raw)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises_anything_but_frame_error(raw: str) -> None:
    """Whatever text arrives (lone surrogates included), parsing yields a frame or a FrameError."""
    with contextlib.suppress(FrameError):
        parse_client_frame(raw)


@settings(max_examples=300)
@given(
    json_values
    | st.dictionaries(
        st.sampled_from(["type", "token", "after", "extra"]),
        json_values | st.sampled_from(["auth", "ping", "pong"]) | st.integers(-5, 5) | ints64,
    )
)
def test_arbitrary_json_never_raises_anything_but_frame_error(value: object) -> None:
    """Any JSON document, including near-miss frames, parses to a valid frame or a FrameError."""
    try:
        frame = parse_client_frame(orjson.dumps(value))
    except FrameError:
        return
    assert isinstance(value, dict)
    if isinstance(frame, AuthFrame):
        assert frame.token == value["token"]
        assert frame.after == value.get("after")
    else:
        assert value == {"type": "ping" if isinstance(frame, PingFrame) else "pong"}


@settings(max_examples=200)
@given(tokens, st.none() | st.integers(0, MAX_SEQ), st.booleans(), st.booleans())
def test_valid_auth_frames_round_trip(token: str, after: int | None, with_after: bool, as_text: bool) -> None:
    """Every valid auth frame a client can write is parsed back to the same token and seq."""
    obj: dict[str, object] = {"type": "auth", "token": token}
    if with_after or after is not None:
        obj["after"] = after
    raw = orjson.dumps(obj)
    assert parse_client_frame(raw.decode() if as_text else raw) == AuthFrame(token, after)


@pytest.mark.parametrize("kind", ["ping", "pong"])
def test_ping_and_pong_round_trip(kind: str) -> None:
    """The server's own ping and pong frames are valid client frames too."""
    encoded = encode_ping() if kind == "ping" else encode_pong()
    assert orjson.loads(encoded) == {"type": kind}
    assert parse_client_frame(encoded) == (PingFrame() if kind == "ping" else PongFrame())


def test_encode_ready() -> None:
    """The ready frame tells the client who it is and the user's last seq."""
    assert orjson.loads(encode_ready("alice", 20, "ep")) == {
        "type": "ready",
        "user": "alice",
        "last_seq": 20,
        "epoch": "ep",
    }


def test_encode_ready_with_a_lone_surrogate_user_is_still_json() -> None:
    """A user id that is not valid Unicode still yields a valid JSON frame rather than an exception."""
    frame = encode_ready("a\ud800b", 1, "ep")
    assert frame.isascii()
    assert orjson.loads(frame.replace(b"\\ud800", b"?")) == {
        "type": "ready",
        "user": "a?b",
        "last_seq": 1,
        "epoch": "ep",
    }


def test_encode_notification_splices_the_payload_bytes() -> None:
    """The notification JSON reaches the client byte for byte, wrapped in its frame."""
    payload = b'{"seq": 17,  "data": {"text": "Bob liked your post"}}'
    frame = encode_notification(payload)
    assert frame == b'{"type":"notification","notification":' + payload + b"}"
    assert orjson.loads(frame)["notification"] == orjson.loads(payload)


def test_encode_error() -> None:
    """The error frame carries a machine code and a human message."""
    assert orjson.loads(encode_error("slow_consumer", "resync")) == {
        "type": "error",
        "code": "slow_consumer",
        "message": "resync",
    }


def test_sse_event_with_id() -> None:
    """A notification event carries its seq as the event id, for Last-Event-ID resume."""
    assert sse_event("notification", b'{"seq":17}', id=17) == (
        b'id: 17\nevent: notification\ndata: {"seq":17}\n\n'
    )


def test_sse_event_without_id_and_multiline_data() -> None:
    """Data with line breaks of any style is split into several data lines, none cut short."""
    assert sse_event("ready", b"a\nb\r\nc\rd") == (b"event: ready\ndata: a\ndata: b\ndata: c\ndata: d\n\n")
    assert sse_event("x", b"") == b"event: x\ndata: \n\n"


@pytest.mark.parametrize("event", ["bad\nname", "bad\rname"])
def test_sse_event_name_with_line_break_is_rejected(event: str) -> None:
    """An event name that would break the stream's framing is refused."""
    with pytest.raises(ValueError, match="line break"):
        sse_event(event, b"{}")


def test_sse_event_negative_id_is_rejected() -> None:
    """A negative event id (never a seq) is refused."""
    with pytest.raises(ValueError, match="id"):
        sse_event("notification", b"{}", id=-1)


def test_sse_comment_and_retry() -> None:
    """Heartbeat comments and retry hints have the SSE wire form browsers expect."""
    assert sse_comment("ping") == b": ping\n\n"
    assert sse_comment("a\nb") == b": a\n: b\n\n"
    assert sse_retry(3000) == b"retry: 3000\n\n"
    with pytest.raises(ValueError, match="retry"):
        sse_retry(-1)


def _parse_sse(stream: bytes) -> list[dict[str, bytes]]:
    """A small SSE reader after the HTML spec: line breaks CRLF/CR/LF, one leading space dropped."""
    events: list[dict[str, bytes]] = []
    fields: dict[str, bytes] = {}
    data: list[bytes] = []
    for line in re.split(rb"\r\n|\r|\n", stream):
        if not line:
            if data:
                events.append({**fields, "data": b"\n".join(data)})
            fields, data = {}, []
            continue
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"data":
            data.append(value)
        elif name:
            fields[name.decode()] = value
    return events


@settings(max_examples=300)
@given(st.binary(max_size=100), st.none() | st.integers(0, MAX_SEQ))
def test_sse_event_data_round_trips_through_a_spec_reader(data: bytes, seq: int | None) -> None:
    """Whatever bytes an event carries, an SSE client reads them back (line breaks normalized to LF)."""
    expected = re.sub(rb"\r\n|\r", b"\n", data)
    events = _parse_sse(sse_comment("hi") + sse_event("notification", data, id=seq))
    want = {"event": b"notification", "data": expected}  # empty data is dispatched too: one "data:" line
    if seq is not None:
        want["id"] = str(seq).encode()
    assert events == [want]


@pytest.mark.parametrize(("value", "seq"), [(None, None), ("0", 0), ("17", 17), (str(MAX_SEQ), MAX_SEQ)])
def test_parse_last_event_id_valid(value: str | None, seq: int | None) -> None:
    """A resuming SSE client's Last-Event-ID is read as the seq it last saw."""
    assert parse_last_event_id(value) == seq


@pytest.mark.parametrize(
    "value",
    ["", " 1", "1 ", "+1", "-1", "1_0", "1.0", "0x10", "\u0661\u0667", "abc", str(MAX_SEQ + 1), "9" * 5000],
)
def test_parse_last_event_id_invalid(value: str) -> None:
    """Anything but a plain decimal seq in Last-Event-ID is refused with FrameError."""
    with pytest.raises(FrameError):
        parse_last_event_id(value)


@settings(max_examples=200)
@given(st.text(max_size=30))
def test_parse_last_event_id_never_raises_anything_but_frame_error(value: str) -> None:
    """Any header value yields a seq or a FrameError."""
    try:
        seq = parse_last_event_id(value)
    except FrameError:
        return
    assert seq is not None
    assert str(seq) == value.lstrip("0").rjust(1, "0")

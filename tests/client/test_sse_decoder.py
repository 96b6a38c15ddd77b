"""The SSE decoder: the event-stream rules a browser follows, on the frames Tidings sends."""

from __future__ import annotations

from tidings.client.sse import ServerEvent, SSEDecoder


def decode(lines: list[str]) -> tuple[list[ServerEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = [event for line in lines if (event := decoder.feed(line)) is not None]
    return events, decoder


def test_a_tidings_stream() -> None:
    """retry, ready, a notification with its id, and a heartbeat comment."""
    events, decoder = decode(
        [
            "retry: 2000",
            "",
            "event: ready",
            'data: {"user":"alice"}',
            "",
            ": ping",
            "",
            "id: 21",
            "event: notification",
            'data: {"seq":21}',
            "",
        ]
    )
    assert events == [
        ServerEvent("ready", '{"user":"alice"}', None),
        ServerEvent("notification", '{"seq":21}', "21"),
    ]
    assert decoder.retry_ms == 2000
    assert decoder.last_event_id == "21"


def test_data_lines_are_joined_with_line_feeds() -> None:
    """A payload split over several data lines arrives whole."""
    events, _ = decode(["data: a", "data:b", "data:  c", ""])
    assert events == [ServerEvent("message", "a\nb\n c", None)]


def test_events_without_data_and_unknown_fields_are_dropped() -> None:
    """As in browsers: no data, no event; unknown fields and bad retry values are ignored."""
    events, decoder = decode(["event: ready", "", "foo: bar", "retry: soon", "data", ""])
    assert events == [ServerEvent("message", "", None)]
    assert decoder.retry_ms is None


def test_the_event_name_does_not_leak_into_the_next_event() -> None:
    """Each event starts over as "message"; the last id carries on."""
    events, _ = decode(["id: 5", "event: notification", "data: x", "", "data: y", ""])
    assert [(e.event, e.id) for e in events] == [("notification", "5"), ("message", "5")]

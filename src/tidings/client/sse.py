"""A Server-Sent Events decoder without I/O: lines in, events out (the parsing rules of the HTML standard).

Feed it the lines of a ``text/event-stream`` body with their line breaks removed; a blank line completes an
event. Comments (``: ping``) and events without data are dropped, as browsers drop them; ``id`` and
``retry`` are remembered as browsers remember them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str
    data: str
    id: str | None


class SSEDecoder:
    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, line: str) -> ServerEvent | None:
        """Take one line; returns the event this line completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerEvent | None:
        data, event = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerEvent(event=event, data="\n".join(data), id=self.last_event_id)

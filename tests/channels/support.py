"""Builders shared by the channel tests."""

from __future__ import annotations

from typing import Any

from tidings.channels.base import ChannelName, Message, Target
from tidings.core.models import Priority

NOTE: dict[str, Any] = {
    "id": "n1",
    "seq": 7,
    "type": "comment",
    "actors": [{"id": "ada", "name": "Ada"}],
    "count": 1,
    "object": {"id": "p1", "type": "post"},
    "data": {"title": "Ada commented on your post", "body": "Nice work!", "url": "https://example.org/p/1"},
    "created_at": "2026-12-03T10:00:00.000Z",
}


def message(
    channel: ChannelName,
    target: Target,
    *notes: dict[str, Any],
    key: str = "msg_1",
    priority: Priority = "normal",
    replace_key: str | None = None,
    ttl: int = 3600,
) -> Message:
    return Message(
        key=key,
        app="demo",
        user="u1",
        channel=channel,
        target=target,
        notifications=notes or (NOTE,),
        priority=priority,
        attempt=1,
        replace_key=replace_key,
        ttl=ttl,
    )

"""The read-sync frame (``tidings.core.frames.encode_read``): a mark made by one client, as every other
connection of the same user receives it, with the counts after the mark."""

from __future__ import annotations

import orjson

from tidings.core import frames


def test_a_mark_up_to_a_seq_carries_up_to_and_the_counts_in_a_fixed_key_order() -> None:
    raw = frames.encode_read("read", seqs=None, up_to=5, unread=1, unseen=2)
    assert raw == b'{"type":"read","field":"read","up_to":5,"unread":1,"unseen":2}'


def test_a_mark_of_listed_seqs_carries_the_seqs() -> None:
    raw = frames.encode_read("seen", seqs=[3, 7], up_to=None, unread=0, unseen=0)
    assert orjson.loads(raw) == {"type": "read", "field": "seen", "seqs": [3, 7], "unread": 0, "unseen": 0}


def test_a_mark_of_no_seqs_still_reports_the_counts() -> None:
    """An empty list is a mark of nothing (counts only), not the same as no list at all."""
    empty = orjson.loads(frames.encode_read("read", seqs=[], up_to=None, unread=4, unseen=4))
    assert empty == {"type": "read", "field": "read", "seqs": [], "unread": 4, "unseen": 4}
    neither = orjson.loads(frames.encode_read("read", seqs=None, up_to=None, unread=4, unseen=4))
    assert neither == {"type": "read", "field": "read", "unread": 4, "unseen": 4}


def test_the_same_json_is_the_data_of_an_sse_read_event() -> None:
    raw = frames.encode_read("read", seqs=None, up_to=2, unread=0, unseen=1)
    event = frames.sse_event("read", raw)
    assert event.startswith(b"event: read\n")
    assert b"data: " + raw + b"\n" in event
    assert event.endswith(b"\n\n")

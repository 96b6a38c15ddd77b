"""The ``retract`` and ``state`` frames, and how a connection frames a retraction's marker row."""

from __future__ import annotations

from tidings.core import frames
from tidings.core.connection import SSE_ENCODER, WS_ENCODER, Connection


def test_the_retract_and_state_frames() -> None:
    assert frames.encode_retract([3, 7], unread=2, unseen=1) == (
        b'{"type":"retract","seqs":[3,7],"unread":2,"unseen":1}'
    )
    assert frames.encode_state("archive", seqs=[4], unread=0, unseen=5) == (
        b'{"type":"state","action":"archive","seqs":[4],"unread":0,"unseen":5}'
    )


def test_sse_names_each_sync_frame_by_its_type() -> None:
    assert frames.sync_event_name(frames.encode_state("delete", seqs=[1], unread=0, unseen=0)) == "state"
    assert frames.sync_event_name(frames.encode_retract([1], unread=0, unseen=0)) == "retract"
    assert (
        frames.sync_event_name(frames.encode_read("read", seqs=[1], up_to=None, unread=0, unseen=0)) == "read"
    )


def _sent(connection: Connection) -> list[bytes]:
    batch = connection.data_to_send()
    return batch.frames if batch is not None else []


def test_a_marker_row_in_a_backlog_is_a_retract_frame_at_its_seq() -> None:
    """Resumed from 0 after seq 1 was retracted (the backlog leaves it out): the marker at seq 2 goes out as a
    ``retract`` frame, not a notification, and the stream goes on from it without a gap."""
    marker = frames.encode_retract([1], unread=0, unseen=0)
    notification = b'{"seq":3}'
    ws = Connection(0, WS_ENCODER)
    ws.data_to_send()
    ws.receive_backlog([(2, marker), (3, notification)])
    assert _sent(ws) == [marker, frames.encode_notification(notification)]
    assert ws.last_seq == 3
    sse = Connection(0, SSE_ENCODER)
    sse.data_to_send()
    sse.receive_backlog([(2, marker)])
    assert _sent(sse) == [b"id: 2\nevent: retract\ndata: " + marker + b"\n\n"]


def test_a_live_marker_and_a_state_frame_on_sse() -> None:
    sse = Connection(0, SSE_ENCODER)
    sse.data_to_send()
    sse.receive_backlog([])
    state = frames.encode_state("unread", seqs=[1], unread=1, unseen=0)
    sse.receive_sync(state)
    sse.receive_live(1, frames.encode_retract([9], unread=1, unseen=0))
    assert _sent(sse) == [
        b"event: state\ndata: " + state + b"\n\n",
        b"id: 1\nevent: retract\ndata: " + frames.encode_retract([9], unread=1, unseen=0) + b"\n\n",
    ]

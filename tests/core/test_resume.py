"""Where a stream starts (``core.resume``): a cursor ahead of the server's ``last_seq`` is reset, never silent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.connection import Connection, Encoder, NeedBacklog
from tidings.core.resume import EPOCH_CHARS, Opened, epoch_of, open_at

ENCODER = Encoder(lambda seq, payload: b"N%d" % seq, lambda: b"HB", lambda payload: payload)
SEQS = st.integers(min_value=0, max_value=10_000)


def test_no_cursor_is_only_what_comes_next_without_a_reset() -> None:
    assert open_at(None, 3, "e") == Opened(last_seq=3, epoch="e", start=3, reset=False)


def test_a_cursor_at_or_below_last_seq_resumes_there() -> None:
    assert open_at(3, 3, "e") == Opened(3, "e", 3, False)
    assert open_at(1, 3, "e") == Opened(3, "e", 1, False)
    assert open_at(0, 0, "e") == Opened(0, "e", 0, False)


def test_a_cursor_ahead_of_last_seq_is_reset_to_it() -> None:
    assert open_at(99, 3, "e") == Opened(3, "e", 3, True)
    assert open_at(1, 0, "e") == Opened(0, "e", 0, True)


def test_negative_seqs_are_refused() -> None:
    with pytest.raises(ValueError, match="seqs"):
        open_at(-1, 3, "e")
    with pytest.raises(ValueError, match="seqs"):
        open_at(None, -1, "e")


@given(after=st.none() | SEQS, last_seq=SEQS)
def test_the_start_is_never_ahead_of_the_server(after: int | None, last_seq: int) -> None:
    """Invariant: a stream starts at or below ``last_seq``; it starts elsewhere than the cursor only on reset."""
    opened = open_at(after, last_seq, "e")
    assert opened.start <= opened.last_seq == last_seq
    assert opened.reset == (after is not None and after > last_seq)
    if after is not None and not opened.reset:
        assert opened.start == after


@given(
    after=SEQS, last_seq=st.integers(min_value=0, max_value=300), more=st.integers(min_value=1, max_value=5)
)
def test_a_connection_started_where_open_at_says_delivers_the_next_seq_at_once(
    after: int, last_seq: int, more: int
) -> None:
    """Whatever the cursor, the seqs after ``last_seq`` go out as they come, and the backlog before them only
    from the start on (never the seqs at or below a cursor that was honoured)."""
    opened = open_at(after, last_seq, "e")
    connection = Connection(opened.start, ENCODER, page_size=50)
    written: list[int] = []
    for _ in range(20):  # the backlog, page by page, as the I/O layer would feed it
        batch = connection.data_to_send()
        if batch is not None:
            written += batch.written
            continue
        asks = [n for n in connection.notices() if isinstance(n, NeedBacklog)]
        if not asks:
            break
        rows = range(asks[0].after + 1, min(asks[0].after + 50, last_seq) + 1)
        connection.receive_backlog([(seq, b"") for seq in rows])
    for seq in range(last_seq + 1, last_seq + 1 + more):
        connection.receive_live(seq, b"")
        batch = connection.data_to_send()
        assert batch is not None, f"seq {seq} was held back"
        written += batch.written
    assert written == list(range(opened.start + 1, last_seq + 1 + more))


def test_the_epoch_is_stable_short_and_names_the_app_and_its_creation() -> None:
    epoch = epoch_of("acme", 1764700000.125)
    assert epoch == epoch_of("acme", 1764700000.125)
    assert len(epoch) == EPOCH_CHARS
    assert int(epoch, 16) >= 0  # hex
    assert epoch != epoch_of("acme", 1764700000.126)  # the app recreated: another stream life
    assert epoch != epoch_of("acme2", 1764700000.125)

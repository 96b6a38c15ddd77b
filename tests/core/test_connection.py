"""The sans-I/O connection core, without an event loop: whatever the bus and the store do, and whenever the
writer writes, the written seqs are strictly ascending, duplicate-free and gap-free (replaced rows aside)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core import frames
from tidings.core.connection import (
    SSE_ENCODER,
    WS_ENCODER,
    Batch,
    Connection,
    Dropped,
    Encoder,
    EndReason,
    NeedBacklog,
    Notice,
    Overflow,
)


def _p(seq: int) -> bytes:
    return b'{"seq":%d}' % seq


def _frame(seq: int, payload: bytes) -> bytes:
    return b"N%d:" % seq + payload


ENCODER = Encoder(_frame, lambda: b"HB", lambda payload: b"SYNC:" + payload)


def _rows(*seqs: int) -> list[tuple[int, bytes]]:
    return [(seq, _p(seq)) for seq in seqs]


def _need(connection: Connection) -> int | None:
    """The store read the core asks for once its outbox is empty (None: none)."""
    assert connection.data_to_send() is None
    wanted = [n.after for n in connection.notices() if isinstance(n, NeedBacklog)]
    assert len(wanted) <= 1
    return wanted[0] if wanted else None


def _tick(connection: Connection, top: int) -> None:
    """A tick, and its heartbeat (none at the first tick) written."""
    connection.receive_tick(top=top)
    batch = connection.data_to_send()
    assert batch is None or batch.frames == [b"HB"]


def _live(after: int = 0, **limits: int) -> Connection:
    """A connection whose resume backlog came back empty: live from ``after``."""
    connection = Connection(after, ENCODER, **limits)
    assert _need(connection) == after
    connection.receive_backlog([])
    assert _need(connection) is None
    return connection


def test_the_resume_backlog_is_asked_first_and_paced_by_the_writer() -> None:
    """The first output is a NeedBacklog; the next page is asked only once the previous one was written."""
    connection = Connection(3, ENCODER, page_size=2)
    assert connection.pending
    assert _need(connection) == 3
    connection.receive_backlog(_rows(4, 5))
    batch = connection.data_to_send()
    assert batch == Batch([_frame(4, _p(4)), _frame(5, _p(5))], [4, 5])
    assert connection.notices() == ()  # no read while frames wait to be written
    assert _need(connection) == 5
    connection.receive_backlog(_rows(6))
    assert connection.data_to_send() == Batch([_frame(6, _p(6))], [6])
    assert _need(connection) is None
    assert connection.last_seq == 6
    assert not connection.pending


def test_live_in_order_goes_out_and_duplicates_are_dropped_notices() -> None:
    """The next seq is queued at once; anything at or below ``last_seq`` is a Dropped notice."""
    connection = _live(0)
    connection.receive_live(1, _p(1))
    connection.receive_live(1, _p(1))
    assert connection.notices() == [Dropped(1)]
    connection.receive_live(2, _p(2))
    assert connection.data_to_send() == Batch([_frame(1, _p(1)), _frame(2, _p(2))], [1, 2])


def test_a_gap_asks_for_the_store_and_the_page_fills_it() -> None:
    """Seq 3 after 1: the core asks for rows after 1, and sends 2, 3 from the page, in order."""
    connection = _live(0)
    connection.receive_live(1, _p(1))
    connection.receive_live(3, _p(3))
    assert connection.data_to_send() == Batch([_frame(1, _p(1))], [1])
    assert _need(connection) == 1
    connection.receive_live(4, _p(4))  # heard while the read is on its way: waits for the store
    connection.receive_backlog(_rows(2, 3))
    assert connection.data_to_send() == Batch([_frame(2, _p(2)), _frame(3, _p(3))], [2, 3])
    assert _need(connection) == 3  # 4 was proved by the bus: read again
    connection.receive_backlog(_rows(4))
    assert connection.data_to_send() == Batch([_frame(4, _p(4))], [4])


def test_control_sync_and_ticks_share_the_order_of_the_outbox() -> None:
    """Pongs, read-sync frames and heartbeats leave in the order they were queued, between notifications."""
    connection = _live(0)
    connection.receive_tick(top=0)  # the first tick: no heartbeat
    connection.receive_tick(top=0)
    connection.receive_live(1, _p(1))
    connection.send_control(b"PONG")
    connection.receive_sync(b"{}")
    batch = connection.data_to_send()
    assert batch == Batch([b"HB", _frame(1, _p(1)), b"PONG", b"SYNC:{}"], [1])
    assert _need(connection) is None


def test_every_tick_but_the_first_is_a_heartbeat_idle_or_not() -> None:
    """A heartbeat every period from the second tick on: an idle client then never waits longer than one period
    for a frame, and a busy one hears it between its notifications."""
    connection = _live(0)
    connection.receive_tick(top=0)
    assert (
        connection.data_to_send() is None
    )  # the first tick, within the first period: the ready frame just went
    connection.receive_tick(top=0)
    assert connection.data_to_send() == Batch([b"HB"], [])
    connection.receive_tick(top=0)
    assert connection.data_to_send() == Batch([b"HB"], [])
    connection.receive_live(1, _p(1))
    connection.receive_tick(top=1)
    assert connection.data_to_send() == Batch([_frame(1, _p(1)), b"HB"], [1])


def test_the_tick_reads_the_store_only_when_its_top_is_above_what_was_delivered() -> None:
    """The tail check: no read while the user's highest committed seq is what was delivered; a read after
    ``last_seq`` when it is above, whose page delivers the lost rows in order."""
    connection = _live(0)
    connection.receive_live(1, _p(1))
    assert connection.data_to_send() == Batch([_frame(1, _p(1))], [1])
    _tick(connection, 1)
    assert _need(connection) is None
    _tick(connection, 3)  # 2 and 3 were committed, their live messages lost
    assert _need(connection) == 1
    _tick(connection, 3)  # a tick while the read is on its way asks nothing more
    assert _need(connection) is None
    connection.receive_backlog(_rows(2, 3))
    assert connection.data_to_send() == Batch([_frame(2, _p(2)), _frame(3, _p(3))], [2, 3])
    assert _need(connection) is None
    connection.receive_live(3, _p(3))  # the late bus message: a duplicate
    assert connection.notices() == [Dropped(3)]


def test_a_top_no_page_gives_is_read_once_not_every_tick() -> None:
    """The newest row was removed (deleted by the user): the counter stays above what any page gives, so the
    first tick reads and finds nothing; later ticks with the same top read nothing; a higher top reads again."""
    connection = _live(0)
    _tick(connection, 4)
    assert _need(connection) == 0
    connection.receive_backlog(_rows(1, 2, 3))  # 4 was removed
    assert connection.data_to_send() == Batch([_frame(s, _p(s)) for s in (1, 2, 3)], [1, 2, 3])
    assert _need(connection) is None
    for _ in range(3):
        _tick(connection, 4)
        assert _need(connection) is None
    _tick(connection, 5)
    assert _need(connection) == 3


def test_a_tick_whose_store_read_failed_is_a_heartbeat_without_a_check() -> None:
    """``top`` None: the ticker could not read the store; the heartbeat still goes, no page is asked for."""
    connection = _live(0)
    connection.receive_tick(top=None)
    connection.receive_tick(top=None)
    assert connection.data_to_send() == Batch([b"HB"], [])
    assert _need(connection) is None


def test_overflow_closes_as_a_slow_consumer_once() -> None:
    """Past the outbox limit: one Overflow notice, the end reason, and nothing more to send."""
    connection = _live(0, max_frames=2)
    for seq in range(1, 6):
        connection.receive_live(seq, _p(seq))
    assert connection.notices() == [Overflow(EndReason.SLOW_CONSUMER)]
    assert connection.end_reason is EndReason.SLOW_CONSUMER
    assert connection.pending
    assert connection.data_to_send() is None
    connection.receive_tick(top=9)
    assert connection.notices() == ()


def test_close_keeps_the_first_reason_and_stops_all_output() -> None:
    """After close nothing is sent; a later reason does not replace the first."""
    connection = _live(0)
    connection.receive_live(1, _p(1))
    connection.close(EndReason.DRAINING)
    connection.close(EndReason.CLIENT_GONE)
    assert connection.end_reason is EndReason.DRAINING
    assert connection.data_to_send() is None
    connection.receive_live(2, _p(2))
    connection.send_control(b"PONG")
    assert connection.data_to_send() is None


def test_the_standard_encoders_make_todays_frames() -> None:
    """WebSocket and SSE frames are the ones core.frames makes (ids on SSE notifications)."""
    assert WS_ENCODER.notification(7, b"{}") == frames.encode_notification(b"{}")
    assert WS_ENCODER.heartbeat() == frames.encode_ping()
    assert WS_ENCODER.sync(b'{"type":"read"}') == b'{"type":"read"}'
    assert SSE_ENCODER.notification(7, b"{}") == frames.sse_event("notification", b"{}", id=7)
    assert SSE_ENCODER.heartbeat() == frames.sse_comment("ping")
    assert SSE_ENCODER.sync(b"{}") == frames.sse_event("read", b"{}")


@pytest.mark.parametrize(("after", "page_size"), [(-1, 10), (0, 0)])
def test_invalid_arguments(after: int, page_size: int) -> None:
    """A negative resume seq or an empty page size is a programming error."""
    with pytest.raises(ValueError, match=">="):
        Connection(after, ENCODER, page_size=page_size)


# --- The model: a store, a lossy bus, a writer that writes when it likes, and the core between them. ---------


@dataclass
class World:
    """The store holds rows 1..N; ``replaced`` rows are left out of backlogs (never out of the bus)."""

    connection: Connection
    after: int
    page_size: int
    committed: int = 0
    replaced: set[int] = field(default_factory=set)
    bus: list[int] = field(default_factory=list)  # live messages in flight, in no particular order
    pending: int | None = None  # the read the core asked for, not answered yet
    snapshot: list[int] | None = None  # what the store returned for it, still on its way
    written: list[int] = field(default_factory=list)
    heard: int = 0

    def commit(self, replace: int | None, publish: bool = True) -> None:
        self.committed += 1
        candidates = [seq for seq in range(1, self.committed) if seq not in self.replaced]
        if replace is not None and candidates:
            self.replaced.add(candidates[replace % len(candidates)])
        if publish:
            self.bus.append(self.committed)

    def live(self, index: int, mode: str) -> None:
        if not self.bus:
            return
        seq = self.bus[index % len(self.bus)]
        if mode != "duplicate":
            self.bus.remove(seq)
        if mode != "drop":
            self.heard = max(self.heard, seq)
            self.connection.receive_live(seq, _p(seq))
            self.notices()

    def write(self) -> None:
        """The writer takes what the core has; with nothing queued, the core may ask for a store read."""
        batch = self.connection.data_to_send()
        if batch is not None:
            notifications = [f for f in batch.frames if f.startswith(b"N")]
            assert notifications == [_frame(seq, _p(seq)) for seq in batch.written]
            for seq in batch.written:
                assert seq > (self.written[-1] if self.written else self.after), "out of order or duplicate"
                assert seq <= self.committed, "sent a row that is not committed"
                self.written.append(seq)
        self.notices()
        self.check()

    def notices(self) -> list[Notice]:
        notices = list(self.connection.notices())
        for notice in notices:
            if isinstance(notice, NeedBacklog):
                assert self.pending is None, "two reads outstanding"
                assert notice.after == self.connection.last_seq
                self.pending = notice.after
            elif isinstance(notice, Dropped):
                assert notice.seq <= self.connection.last_seq
        return notices

    def read(self) -> None:
        if self.pending is None or self.snapshot is not None:
            return
        rows = [seq for seq in range(self.pending + 1, self.committed + 1) if seq not in self.replaced]
        self.snapshot = rows[: self.page_size]

    def answer(self) -> None:
        self.read()
        if self.snapshot is None:
            return
        rows, self.pending, self.snapshot = self.snapshot, None, None
        self.connection.receive_backlog(_rows(*rows))
        self.notices()

    def check(self) -> None:
        top = self.written[-1] if self.written else self.after
        expected = {seq for seq in range(self.after + 1, top) if seq not in self.replaced}
        missing = expected - set(self.written)
        assert not missing, f"gap: {sorted(missing)}"

    def settle(self) -> None:
        """Write and answer until the core stops asking; it must stop, and soon."""
        for _ in range(2 * (self.committed // self.page_size) + 6):
            self.write()
            if self.pending is not None:
                self.answer()
            elif not self.connection.pending or self.connection.end_reason is not None:
                return
        raise AssertionError("the core kept asking")


replace_choice = st.none() | st.integers(0, 20)
KINDS = ("commit",) * 3 + ("live",) * 4 + ("write", "write", "read", "answer", "tick")
Op = tuple[str, int, str, "int | None"]
operations = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 50),
        st.sampled_from(["deliver", "duplicate", "drop"]),
        replace_choice,
    ),
    min_size=4,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    history=st.lists(replace_choice, max_size=6),
    after_pick=st.integers(0, 6),
    page_size=st.integers(1, 4),
    max_frames=st.sampled_from([3, 8, 1000]),
    close_at=st.none() | st.integers(0, 80),
    ops=operations,
)
def test_written_seqs_ascend_without_gaps_or_duplicates_whatever_happens(
    history: list[int | None],
    after_pick: int,
    page_size: int,
    max_frames: int,
    close_at: int | None,
    ops: list[Op],
) -> None:
    """Backlog pages, live messages, duplicates, losses, gaps filled on request, ticks, overflows and closes,
    in any interleaving: every written seq is new, higher than the last, and nothing is skipped but replaced
    rows; a connection that stays open ends up with every row."""
    committed = len(history)
    after = min(after_pick, committed)
    world = World(Connection(after, ENCODER, page_size=page_size, max_frames=max_frames), after, page_size)
    for replace in history:  # rows committed before the client connected; their bus messages are long gone
        world.commit(replace, publish=False)
    world.notices()
    for step, (kind, index, mode, replace) in enumerate(ops):
        if step == close_at:
            world.connection.close(EndReason.CLIENT_GONE)
        if kind == "commit":
            world.commit(replace)
        elif kind == "live":
            world.live(index, mode)
        elif kind == "write":
            world.write()
        elif kind == "read":
            world.read()
        elif kind == "answer":
            world.answer()
        else:  # the ticker's read of the user's top may be stale (an earlier commit's), or fail (None)
            top = None if mode == "drop" else world.committed - index % 3
            world.connection.receive_tick(top=max(top, 0) if top is not None else None)
            world.notices()
    world.settle()
    # The periodic check finds what the bus lost at the tail.
    world.connection.receive_tick(top=world.committed)
    world.settle()
    if world.connection.end_reason is not None:
        assert world.connection.data_to_send() is None  # closed or overflowed: nothing more goes out
        return
    wanted = {seq for seq in range(after + 1, world.committed + 1) if seq not in world.replaced}
    assert wanted <= set(world.written) <= set(range(after + 1, world.committed + 1))
    assert world.connection.last_seq == (world.written[-1] if world.written else after)
    final = list(world.written)
    while world.bus:  # late bus messages change nothing any more
        world.live(0, "deliver")
    world.settle()
    assert world.written == final

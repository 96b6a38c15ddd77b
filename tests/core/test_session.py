"""Per-connection delivery: whatever the live bus does, the client stream is in order, gap-free, unique."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.session import Session, Step


def _p(seq: int) -> bytes:
    return b'{"seq":%d}' % seq


def _rows(*seqs: int) -> list[tuple[int, bytes]]:
    return [(seq, _p(seq)) for seq in seqs]


def _sent(step: Step) -> list[int]:
    return [seq for seq, _ in step.send]


def _resumed(after: int = 0, page_size: int = 500) -> Session:
    """A session whose resume backlog came back empty: it is live from ``after``."""
    session = Session(after, page_size=page_size)
    session.start()
    assert session.backlog([]) == Step((), None)
    return session


def test_start_asks_for_the_resume_backlog() -> None:
    """A resuming client first gets everything after the seq it last saw, read from the store."""
    session = Session(16)
    assert session.last_seq == 16
    assert not session.fetching
    assert session.start() == Step((), 16)
    assert session.fetching
    step = session.backlog(_rows(17, 18, 19))
    assert step == Step(tuple(_rows(17, 18, 19)), None)
    assert session.last_seq == 19
    assert not session.fetching


def test_live_in_order_is_sent_at_once() -> None:
    """Live notifications that follow on from the last seq go straight to the client."""
    session = _resumed(3)
    assert session.live(4, _p(4)) == Step(((4, _p(4)),), None)
    assert _sent(session.live(5, _p(5))) == [5]
    assert session.last_seq == 5


def test_duplicates_and_old_messages_are_dropped() -> None:
    """A notification the client already has is never sent twice."""
    session = _resumed(3)
    assert session.live(3, _p(3)) == Step((), None)
    assert session.live(1, _p(1)) == Step((), None)
    assert _sent(session.live(4, _p(4))) == [4]
    assert session.live(4, _p(4)) == Step((), None)


def test_live_during_the_resume_backlog_waits_for_it() -> None:
    """A live message that arrives before the backlog answer is not sent ahead of older notifications."""
    session = Session(0)
    session.start()
    assert session.live(1, _p(1)) == Step((), None)
    assert session.live(3, _p(3)) == Step((), None)
    # The store was read before 3 was committed: the session asks again rather than leave a gap.
    assert session.backlog(_rows(1, 2)) == Step(tuple(_rows(1, 2)), 2)
    assert session.backlog(_rows(3)) == Step(tuple(_rows(3)), None)
    assert not session.fetching


def test_gap_is_filled_from_the_store_once() -> None:
    """A lost live message is fetched from the store, with one fetch however many messages follow."""
    session = _resumed(2)
    assert session.live(5, _p(5)) == Step((), 2)
    assert session.live(6, _p(6)) == Step((), None)  # already fetching: no second fetch
    assert session.live(4, _p(4)) == Step((), None)
    assert session.backlog(_rows(3, 4, 5, 6)) == Step(tuple(_rows(3, 4, 5, 6)), None)
    assert _sent(session.live(7, _p(7))) == [7]


def test_known_highest_mark_triggers_another_fetch() -> None:
    """A live message newer than the fetch answer makes the session read the store again."""
    session = _resumed(0)
    session.live(3, _p(3))
    session.live(8, _p(8))
    assert session.backlog(_rows(1, 2, 3, 4)) == Step(tuple(_rows(1, 2, 3, 4)), 4)
    assert session.backlog(_rows(5, 6, 7, 8)) == Step(tuple(_rows(5, 6, 7, 8)), None)


def test_full_page_fetches_the_next_page() -> None:
    """A backlog longer than one page arrives in full, page after page."""
    session = Session(0, page_size=2)
    session.start()
    assert session.backlog(_rows(1, 2)) == Step(tuple(_rows(1, 2)), 2)
    assert session.backlog(_rows(3, 4)) == Step(tuple(_rows(3, 4)), 4)
    assert session.backlog([]) == Step((), None)
    assert not session.fetching


def test_backlog_may_skip_replaced_notifications() -> None:
    """Replaced notifications left out of a backlog do not stall the stream."""
    session = _resumed(0)
    session.live(4, _p(4))
    assert session.backlog(_rows(1, 4)) == Step(tuple(_rows(1, 4)), None)
    assert _sent(session.live(5, _p(5))) == [5]


def test_empty_answer_stops_fetching_and_forgets_the_mark() -> None:
    """When the store has nothing newer, the session stops asking instead of looping."""
    session = _resumed(0)
    session.live(3, _p(3))
    assert session.backlog([]) == Step((), None)
    assert not session.fetching
    # The mark is forgotten: an answer that only reaches 1 later does not chase 3 again.
    session.poll()
    assert session.backlog(_rows(1)) == Step(tuple(_rows(1)), None)


def test_empty_answer_older_than_a_live_message_is_asked_again() -> None:
    """A notification that arrives live while an (empty) store read is on its way is not held back."""
    session = Session(0)
    session.start()  # the store is read here and has nothing yet
    session.live(1, _p(1))  # row 1 commits, and its live message overtakes the read's answer
    assert session.backlog([]) == Step((), 0)
    assert session.backlog(_rows(1)) == Step(tuple(_rows(1)), None)
    assert not session.fetching


def test_a_lagging_store_is_asked_again_then_left_to_the_poll() -> None:
    """A store replica behind the bus delays a gap-fill; the session neither loses the gap nor spins on it."""
    session = _resumed(2)
    assert session.live(5, _p(5)) == Step((), 2)
    # The replica shows 3 but not yet 4 and 5, which the live message proved: ask again.
    assert session.backlog(_rows(3)) == Step(tuple(_rows(3)), 3)
    # Still behind, and nothing new heard: give up until the next poll instead of looping.
    assert session.backlog([]) == Step((), None)
    assert session.poll() == Step((), 3)
    assert session.backlog(_rows(4, 5)) == Step(tuple(_rows(4, 5)), None)


def test_stale_rows_in_an_answer_are_not_sent_again() -> None:
    """Rows at or below the last delivered seq, or out of order, are never delivered twice."""
    session = _resumed(2)
    session.poll()
    assert session.backlog(_rows(1, 2)) == Step((), None)
    session.poll()
    assert session.backlog(_rows(2, 4, 3, 5)) == Step(tuple(_rows(4, 5)), None)


def test_poll_fetches_unless_a_fetch_is_pending() -> None:
    """The periodic check reads the store once, and never stacks a second fetch."""
    session = _resumed(5)
    assert session.poll() == Step((), 5)
    assert session.poll() == Step((), None)
    assert session.backlog(_rows(6)) == Step(tuple(_rows(6)), None)
    assert session.poll() == Step((), 6)


@pytest.mark.parametrize(("after", "page_size"), [(-1, 10), (0, 0)])
def test_invalid_arguments(after: int, page_size: int) -> None:
    """A negative resume seq or an empty page size is a programming error."""
    with pytest.raises(ValueError, match=">="):
        Session(after, page_size=page_size)


# --- The model: a store, a lossy bus, a delayed fetch path, and the session between them. ------------------


@dataclass
class World:
    """The store holds rows 1..N; ``replaced`` rows are left out of backlogs (never out of the bus).

    With ``replica_lag``, a read may miss the newest committed rows, as a read replica behind the bus would.
    """

    replica_lag: bool = False
    session: Session = field(default_factory=lambda: Session(0))
    after: int = 0
    committed: int = 0
    replaced: set[int] = field(default_factory=set)
    bus: list[int] = field(default_factory=list)  # live messages in flight, in no particular order
    pending: int | None = None  # the fetch requested and not answered yet
    snapshot: list[int] | None = None  # what the store returned for it, still on its way to the session
    delivered: list[int] = field(default_factory=list)
    heard: int = 0  # the highest seq the session has been given live

    def commit(self, replace: int | None, publish: bool = True) -> None:
        """A new row; as an aggregate it may replace an earlier, not yet replaced one."""
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
            self.apply(self.session.live(seq, _p(seq)))

    def connect(self, after: int, page_size: int) -> None:
        self.after = min(after, self.committed)
        self.session = Session(self.after, page_size=page_size)
        self.apply(self.session.start())

    def read(self, lag: int = 0) -> None:
        """The store reads the pending fetch: the rows committed now (but the last ``lag`` on a replica)."""
        if self.pending is None or self.snapshot is not None:
            return
        visible = self.committed - lag if self.replica_lag else self.committed
        rows = [seq for seq in range(self.pending + 1, visible + 1) if seq not in self.replaced]
        self.snapshot = rows[: self.session.page_size]

    def answer(self, lag: int = 0) -> None:
        """The read reaches the session, maybe after rows committed and live messages arrived since."""
        self.read(lag)
        if self.snapshot is None:
            return
        rows, self.pending, self.snapshot = self.snapshot, None, None
        self.apply(self.session.backlog(_rows(*rows)))

    def apply(self, step: Step) -> None:
        for seq, payload in step.send:
            assert seq > (self.delivered[-1] if self.delivered else self.after), "out of order or duplicate"
            assert seq <= self.committed, "sent a row that is not committed"
            assert payload == _p(seq)
            self.delivered.append(seq)
        if step.fetch_after is not None:
            assert self.pending is None, "two fetches outstanding"
            assert step.fetch_after == self.session.last_seq
            self.pending = step.fetch_after
        self.check()

    def check(self) -> None:
        top = self.delivered[-1] if self.delivered else self.after
        assert self.session.last_seq == top
        assert self.session.fetching == (self.pending is not None)
        expected = {seq for seq in range(self.after + 1, top) if seq not in self.replaced}
        missing = expected - set(self.delivered)
        assert not missing, f"gap: {sorted(missing)}"
        # Liveness: a session that has heard of a newer row is busy fetching it, not waiting for a poll.
        # (A row heard live is committed, and the newest row is never replaced, so a fetch finds something.)
        # A replica that lags may make the session give up until the next poll; that is the design.
        assert self.replica_lag or self.pending is not None or top >= self.heard, "idle with a known gap"

    def settle(self) -> None:
        """Answer fetches until the session stops asking; it must stop, and soon."""
        for _ in range(self.committed // self.session.page_size + 3):
            if self.pending is None:
                return
            self.answer()
        raise AssertionError("the session kept fetching")


replace_choice = st.none() | st.integers(0, 20)
# Weighted towards commits and bus traffic, so that losses, reorderings and slow answers pile up.
KINDS = ("commit",) * 3 + ("live",) * 4 + ("read", "answer", "answer", "poll")
Op = tuple[str, int, str, "int | None"]
operations = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 50),
        st.sampled_from(["deliver", "duplicate", "drop"]),
        replace_choice,
    ),
    min_size=4,
    max_size=60,
)


@pytest.mark.parametrize("replica_lag", [False, True], ids=["primary", "lagging-replica"])
@settings(max_examples=300, deadline=None)
@given(
    history=st.lists(replace_choice, max_size=6),
    after_pick=st.integers(0, 6),
    page_size=st.integers(1, 4),
    ops=operations,
)
def test_stream_is_ordered_unique_and_gap_free_whatever_the_bus_does(
    replica_lag: bool, history: list[int | None], after_pick: int, page_size: int, ops: list[Op]
) -> None:
    """Under loss, duplicates, reordering and slow reads, the client sees each notification once, in order."""
    world = World(replica_lag=replica_lag)
    for replace in history:  # rows committed before the client connected; their bus messages are long gone
        world.commit(replace, publish=False)
    world.connect(after_pick, page_size)
    for kind, index, mode, replace in ops:
        if kind == "commit":
            world.commit(replace)
        elif kind == "live":
            world.live(index, mode)
        elif kind == "read":
            world.read(index % 3)
        elif kind == "answer":
            world.answer(index % 3)
        else:
            world.apply(world.session.poll())
    world.settle()  # the replica has caught up by now: reads see every committed row
    world.apply(world.session.poll())
    world.settle()
    assert not world.session.fetching
    wanted = {seq for seq in range(world.after + 1, world.committed + 1) if seq not in world.replaced}
    assert wanted <= set(world.delivered) <= set(range(world.after + 1, world.committed + 1))
    final = list(world.delivered)
    while world.bus:  # late bus messages change nothing any more
        world.live(0, "deliver")
    assert world.delivered == final


@settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 30), page_size=st.integers(1, 5))
def test_a_perfect_bus_needs_no_fetch_after_the_resume(count: int, page_size: int) -> None:
    """With nothing lost, every notification goes out live as soon as it arrives."""
    session = _resumed(0, page_size=page_size)
    for seq in range(1, count + 1):
        assert session.live(seq, _p(seq)) == Step(((seq, _p(seq)),), None)
    assert not session.fetching


def test_next_live_is_lives_common_case_and_changes_nothing_otherwise() -> None:
    """``next_live`` takes exactly the next seq when no fetch is on its way (as ``live`` would send it alone);
    for anything else it answers False and leaves the state to ``live``."""
    session = Session(after=0)
    session.backlog([])  # the start's fetch answered: nothing stored
    assert session.next_live(1)
    assert session.last_seq == 1
    assert not session.next_live(1)
    assert not session.next_live(3)
    assert session.last_seq == 1
    assert not session.fetching
    assert session.live(3, b"c").fetch_after == 1  # a gap: a fetch now
    assert not session.next_live(2)  # the fetch is on its way: the store answers for 2
    assert session.last_seq == 1

"""``backends.partitions.Partitions``: shares, rebalancing and lost leases, over an in-memory lease store (the
engines' lease stores are exercised by the broker suites: test_order_by_key, test_nats, test_redis...)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from tidings.backends.partitions import Partitions, share

PARTITIONS = 16
T = TypeVar("T")


class SharedLeases:
    """Every member's view of one lease table: partition -> holder, and the members alive."""

    def __init__(self) -> None:
        self.holders: dict[int, str] = {}
        self.members: set[str] = set()


class MemberLeases:
    def __init__(self, table: SharedLeases, member: str) -> None:
        self.table = table
        self.member = member

    async def heartbeat(self) -> None:
        self.table.members.add(self.member)

    async def members(self) -> int:
        return len(self.table.members)

    async def take(self, partition: int) -> bool:
        if partition in self.table.holders:
            return False
        self.table.holders[partition] = self.member
        return True

    async def renew(self, partitions: Sequence[int]) -> set[int]:
        return {p for p in partitions if self.table.holders.get(p) == self.member}

    async def release(self, partition: int) -> None:
        if self.table.holders.get(partition) == self.member:
            del self.table.holders[partition]

    async def leave(self) -> None:
        self.table.members.discard(self.member)


class Member:
    def __init__(self, table: SharedLeases, name: str) -> None:
        self.busy: set[int] = set()
        self.gained: list[int] = []
        self.lost: list[int] = []
        self.partitions = Partitions(
            MemberLeases(table, name),
            PARTITIONS,
            10.0,
            member=name,
            busy=lambda p: p in self.busy,
            gained=self._gained,
            lost=self._lost,
        )

    async def _gained(self, partition: int) -> None:
        self.gained.append(partition)

    async def _lost(self, partition: int) -> None:
        self.lost.append(partition)

    @property
    def held(self) -> set[int]:
        return set(self.partitions.readable())


def test_every_partition_finds_a_holder_whatever_the_member_count() -> None:
    for members in range(1, 40):
        assert share(PARTITIONS, members) * members >= PARTITIONS


async def test_a_joining_member_gets_a_share_and_nothing_is_held_twice() -> None:
    table = SharedLeases()
    first, second = Member(table, "a"), Member(table, "b")
    await first.partitions.round()
    assert len(first.held) == PARTITIONS  # alone: every partition
    await second.partitions.round()
    assert second.held == set()  # none free yet
    await first.partitions.round()  # sees two members: keeps its share, releases the rest
    await second.partitions.round()
    assert len(first.held) == len(second.held) == PARTITIONS // 2
    assert first.held.isdisjoint(second.held)
    assert sorted(second.gained) == sorted(second.held)
    assert sorted(first.lost) == sorted(second.held)


async def test_a_partition_with_deliveries_in_hand_is_not_released() -> None:
    table = SharedLeases()
    first, second = Member(table, "a"), Member(table, "b")
    await first.partitions.round()
    first.busy = set(range(PARTITIONS))  # every partition has a batch in hand
    await second.partitions.round()
    await first.partitions.round()
    assert len(first.held) == PARTITIONS
    first.busy = set()  # the batches were acked
    await first.partitions.round()
    assert len(first.held) == PARTITIONS // 2


async def test_a_lease_lost_to_another_member_is_dropped_at_once() -> None:
    table = SharedLeases()
    first = Member(table, "a")
    await first.partitions.round()
    table.holders[3] = "b"  # "a" was paused past its lease and "b" took partition 3
    await first.partitions.round()
    assert 3 not in first.held
    assert 3 in first.lost


async def test_a_member_that_leaves_releases_everything_for_the_others() -> None:
    table = SharedLeases()
    first, second = Member(table, "a"), Member(table, "b")
    await first.partitions.round()
    await second.partitions.round()
    await first.partitions.start()  # the background rounds, so close has something to stop
    await first.partitions.close()
    assert table.members == {"b"}
    await second.partitions.round()
    assert len(second.held) == PARTITIONS


class VirtualTime:
    """A clock that only ``run`` moves, to the next wake-up once every task waits: ``sleep`` stands for a round
    trip to a slow broker, and calls that sleep at the same time overlap, as requests do on the wire."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), woken))
        await woken

    async def run(self, work: Awaitable[T]) -> T:
        task = asyncio.ensure_future(work)
        for _ in range(100_000):  # bounded
            for _ in range(50):  # no I/O here: a few loop turns bring every task to its next sleep
                await asyncio.sleep(0)
            if task.done():
                return task.result()
            assert self._sleepers, "a task waits on something other than virtual time"
            at, _, woken = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            woken.set_result(None)
        raise AssertionError("virtual time ran away")


LEASE = 1.0
ROUND_TRIP = LEASE / 50
SET_UP = (
    LEASE / 4
)  # a new holder's set-up on a loaded machine: a NATS consumer reset (6 round trips), claims...


class ExpiringLeases(MemberLeases):
    """A lease runs out ``LEASE`` after the broker last wrote it (a NATS key-value entry's max age, a Redis TTL);
    each call is a round trip, written half-way through it."""

    def __init__(self, table: SharedLeases, member: str, time: VirtualTime) -> None:
        super().__init__(table, member)
        self.time = time
        self.expires: dict[int, float] = {}  # partition -> when its lease runs out, on the broker

    async def _half_trip(self) -> None:
        await self.time.sleep(ROUND_TRIP / 2)

    def _live_holder(self, partition: int) -> str | None:
        holder = self.table.holders.get(partition)
        return holder if self.expires.get(partition, 0.0) > self.time.now else None

    async def heartbeat(self) -> None:
        await self._half_trip()
        await super().heartbeat()
        await self._half_trip()

    async def take(self, partition: int) -> bool:
        await self._half_trip()
        taken = self._live_holder(partition) is None
        if taken:
            self.table.holders[partition] = self.member
            self.expires[partition] = self.time.now + LEASE
        await self._half_trip()
        return taken

    async def renew(self, partitions: Sequence[int]) -> set[int]:
        await self._half_trip()
        kept = {p for p in partitions if self._live_holder(p) == self.member}
        for partition in kept:
            self.expires[partition] = self.time.now + LEASE
        await self._half_trip()
        return kept


async def test_a_slow_set_up_of_new_partitions_costs_no_lease_and_leaves_them_readable() -> None:
    """Seen in CI on a loaded machine (issue 13): setting up each new partition took a quarter of the lease, so a
    round that took 16 one after the other outlasted the lease. The member could read none of them (its leases
    counted from the round's start), and by the next round the first ones had run out: dropped, taken again,
    their readers reset, round after round; partitions stayed unread for a minute. A round must leave what it
    took readable, and renew every lease before it runs out."""
    time = VirtualTime()
    table = SharedLeases()
    leases = ExpiringLeases(table, "a", time)
    member = Member(table, "a")
    lost: list[int] = []

    async def set_up(partition: int) -> None:
        await time.sleep(SET_UP)

    async def dropped(partition: int) -> None:
        lost.append(partition)

    member.partitions = Partitions(
        leases,
        PARTITIONS,
        LEASE,
        member="a",
        busy=lambda p: False,
        gained=set_up,
        lost=dropped,
        clock=time.clock,
    )
    await time.run(member.partitions.round())
    assert member.held, "the member took partitions it may not read"
    for _ in range(15):  # five leases' worth of rounds, one every lease / 3 as the background task runs them
        await time.run(time.sleep(LEASE / 3))
        await time.run(member.partitions.round())
        now = time.now
        assert all(leases.expires[p] > now for p in member.held), "reads a partition whose lease ran out"
    assert lost == [], "leases ran out between two rounds"
    assert len(member.held) == PARTITIONS


class SlowHeartbeat(ExpiringLeases):
    async def heartbeat(self) -> None:
        await self.time.sleep(LEASE / 2)  # a stalled event loop or a slow broker, before any take
        await super().heartbeat()


async def test_a_round_slowed_down_before_taking_still_takes_partitions() -> None:
    """The time limit on taking stops further batches, never the first: otherwise a member whose rounds are all
    slow (an overloaded machine) would hold nothing, and partitions nobody holds are read by nobody."""
    time = VirtualTime()
    table = SharedLeases()

    async def set_up(partition: int) -> None:
        await time.sleep(SET_UP)

    async def dropped(partition: int) -> None:
        pass

    partitions = Partitions(
        SlowHeartbeat(table, "a", time),
        PARTITIONS,
        LEASE,
        member="a",
        busy=lambda p: False,
        gained=set_up,
        lost=dropped,
        clock=time.clock,
    )
    await time.run(partitions.round())
    assert len(partitions.readable()) == PARTITIONS

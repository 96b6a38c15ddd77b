"""Which partitions of the lanes one worker's event log consumes: leases, shares and rebalancing.

Every broker log splits each lane into ``settings.log_partitions`` partitions (``core.ordering``: an event goes to
the partition its ordering key hashes to). A partition is consumed by one log at a time, the holder of its lease;
within a partition the holder hands events out in order, and a new holder starts at the oldest event not acked
(each log knows how on its engine). So events with the same key are fanned out in acceptance order, whatever
the number of workers, and after a crash.

A lease is held per partition index, for all three lanes at once. ``Partitions`` runs one round when the log
first reads (an API process, which only appends, never takes a partition), then one every ``lease / 3``
seconds from the start of the last (a slow round does not push the next renewal out), in a task of its own so a
long batch does not let leases lapse:

1. heartbeat: say this member is alive (a member unheard of for ``lease`` seconds is gone);
2. renew what it holds; a lease it lost (it was paused past ``lease``) is dropped at once;
3. share = ceil(partitions / live members): above it, release the surplus partitions that hold nothing handed
   out and unacked (a joining worker then takes them); below it, take free ones (a dead worker's leases expire
   after ``lease`` seconds; a worker that leaves releases its own at once).

Taking is what can make a round long: a new holder sets its reader up (on NATS a consumer reset, six round
trips), and one partition after the other, 16 of them outlasted a 1 s lease on a loaded machine (issue 13):
the leases taken first ran out before the next round renewed them, so they were dropped, taken again and their
readers reset, round after round, and partitions went unread for a minute. So the partitions wanted are taken
all at once (``take`` and ``gained`` run concurrently for different partitions), and no further batch starts
once a third of the lease has gone by since the round began (the first always does): the rest waits for the
next round.

Reads use only partitions whose leases were written less than ``lease`` seconds ago, each counted from the
moment its own take or renewal was sent: a worker cut off from the broker stops consuming before another may
take its partitions. The engines keep leases their own way (``LeaseStore``): a Redis key with a TTL, a NATS
key-value entry with a max age, a RabbitMQ exclusive consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from tidings.errors import TidingsError

log = structlog.get_logger("tidings.partitions")


class LeaseStore(Protocol):
    """One engine's leases. Every method may raise ``UnavailableError``; ``Partitions`` retries next round.
    ``take`` may run for several partitions at once."""

    async def heartbeat(self) -> None: ...

    async def members(self) -> int: ...  # live members, this one included

    async def take(self, partition: int) -> bool: ...  # False: another member holds it

    async def renew(self, partitions: Sequence[int]) -> set[int]: ...  # the ones still held

    async def release(self, partition: int) -> None: ...

    async def leave(self) -> None: ...


def member_id() -> str:
    """A name unique to this log instance, readable in the broker's tools: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def share(partitions: int, members: int) -> int:
    """The partitions one of ``members`` live members holds at most: every partition finds a holder."""
    return math.ceil(partitions / max(1, members))


class Partitions:
    """The partitions this log holds; see the module docstring.

    ``gained(p)`` runs before partition ``p`` is readable (the log resets its reading position to the oldest
    unacked event of the partition); ``lost(p)`` runs once it is not (the log drops what it buffered of ``p``);
    ``changed()`` runs when a partition was gained (it wakes a waiting read). ``busy(p)`` says whether
    deliveries of ``p`` are handed out and not acked yet: such a partition is not released for rebalancing
    until they are.
    """

    def __init__(
        self,
        leases: LeaseStore,
        count: int,
        lease: float,
        *,
        member: str,
        busy: Callable[[int], bool],
        gained: Callable[[int], Awaitable[None]],
        lost: Callable[[int], Awaitable[None]],
        changed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count = max(1, count)
        self._leases = leases
        self._lease = lease
        self._busy = busy
        self._gained = gained
        self._lost = lost
        self._changed = changed
        self._clock = clock  # monotonic seconds; a test passes its own
        self._owned: set[int] = set()
        self._valid: dict[int, float] = {}  # partition -> until when its lease is surely ours (``clock``)
        self._round_started = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._round_lock = asyncio.Lock()
        # Where this member starts looking for free partitions: joiners do not all race for partition 0.
        self._start = int.from_bytes(member.encode()[-4:], "big") % self.count

    def readable(self) -> list[int]:
        """The partitions to read now, in index order: those whose leases were written in time."""
        now = self._clock()
        return sorted(p for p in self._owned if self._valid.get(p, 0.0) > now)

    async def start(self) -> None:
        """The first round (so the first read has partitions), then a round every ``lease / 3``. Idempotent."""
        if self._task is not None:
            return
        self._round_started = self._clock()
        self._task = asyncio.create_task(self._run())
        with contextlib.suppress(TidingsError):
            await self.round()

    async def _run(self) -> None:
        # Ends with close: by the flag too, since a client library may swallow the cancellation mid-call.
        while not self._closing:
            await asyncio.sleep(max(0.0, self._round_started + self._lease / 3 - self._clock()))
            try:
                await self.round()
            except TidingsError as exc:
                log.warning("partition_round_failed", error=exc.code)

    async def round(self) -> None:
        async with self._round_lock:
            self._round_started = self._clock()
            await self._leases.heartbeat()
            renewed_at = self._clock()  # the leases run from here at the latest
            kept = await self._leases.renew(sorted(self._owned))
            for partition in sorted(self._owned - kept):
                log.warning("partition_lease_lost", partition=partition)
                await self._drop(partition)
            for partition in kept:
                self._valid[partition] = renewed_at + self._lease
            target = share(self.count, await self._leases.members())
            surplus = len(self._owned) - target
            for partition in sorted(self._owned, reverse=True):
                if surplus <= 0:
                    break
                if not self._busy(partition):
                    await self._drop(partition)
                    await self._leases.release(partition)
                    surplus -= 1
            await self._take_free(target, until=self._round_started + self._lease / 3)

    async def _take_free(self, target: int, until: float) -> None:
        """Takes free partitions up to ``target``: as many as wanted at once, then, for those another member
        held, as many others; no further batch once ``until`` has passed (the module docstring says why). The
        first batch always goes: a round slowed down before it would otherwise never take anything."""
        steps = ((self._start + step) % self.count for step in range(self.count))
        candidates = [p for p in steps if p not in self._owned]
        first = True
        while candidates and len(self._owned) < target and (first or self._clock() < until):
            first = False
            batch = candidates[: target - len(self._owned)]
            del candidates[: len(batch)]
            taken_at = self._clock()  # a lease taken in this batch runs from here at the latest
            outcomes = await asyncio.gather(*(self._take(p, taken_at) for p in batch), return_exceptions=True)
            if any(outcome is True for outcome in outcomes):
                self._changed()  # a reader waiting for events may now find some here
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def _take(self, partition: int, taken_at: float) -> bool:
        if not await self._leases.take(partition):
            return False
        try:
            await self._gained(partition)
        except BaseException:
            with contextlib.suppress(TidingsError):
                await self._leases.release(partition)
            raise
        self._owned.add(partition)
        self._valid[partition] = taken_at + self._lease
        return True

    async def _drop(self, partition: int) -> None:
        self._owned.discard(partition)
        self._valid.pop(partition, None)
        await self._lost(partition)

    async def close(self) -> None:
        """Stops the rounds and releases every lease, so other workers take the partitions at once."""
        if self._task is None or self._closing:
            return
        self._closing = True
        self._task.cancel()
        await asyncio.wait([self._task], timeout=self._lease)
        async with self._round_lock:
            with contextlib.suppress(TidingsError):
                for partition in sorted(self._owned):
                    await self._drop(partition)
                    await self._leases.release(partition)
                await self._leases.leave()
        self._owned.clear()
        self._valid.clear()

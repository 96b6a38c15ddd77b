"""The opening reads of live streams, coalesced: streams that open at the same moment share one store read.

A resume storm opens thousands of streams within seconds; each needs the user's ``last_seq``, the retention
floor and the first page of its backlog (``ports.Inbox.openings``). Asked one by one, that was three store
round trips per connection and 43% of the gateway's samples (docs/performance.md, issue 12). Here a stream's
request joins the batch being gathered; a batch is sent at the end of the current event loop iteration, at
most ``CONCURRENCY`` batches are in flight, and what arrives meanwhile waits for the next one. So a lone
connection waits for nothing (its batch of one goes at once) and a storm's batches grow with the load.

One ``OpenReads`` per inbox and page size (``for_inbox``), bound to the event loop that first used it.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Final

from tidings.ports import Inbox, Opening, OpenRequest

# Batches in flight at once. One: while it is read, every stream that opens joins the next batch, so a storm
# makes fewer, larger batches (each a reader-thread hop on SQLite, a statement on PostgreSQL). Two cost ~10%
# more server CPU in the 10k resume storm (docs/performance.md, issue 12).
CONCURRENCY: Final = 1
MAX_BATCH: Final = 1000  # requests per batch: bounds one read's time and memory

Waiter = tuple[OpenRequest, "asyncio.Future[Opening]"]


class OpenReads:
    """Gathers ``open`` calls into ``inbox.openings`` batches."""

    def __init__(self, inbox: Inbox, limit: int, *, max_batch: int = MAX_BATCH) -> None:
        self._inbox, self._limit, self._max_batch = inbox, limit, max_batch
        self._loop = asyncio.get_running_loop()
        self._waiting: list[Waiter] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches read so far (tests, the bench's diagnosis)

    async def open(self, app: str, user: str, after: int | None) -> Opening:
        """What the stream of ``user`` with cursor ``after`` needs to open (``ports.Opening``)."""
        future: asyncio.Future[Opening] = self._loop.create_future()
        self._waiting.append(((app, user, after), future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._waiting and not self._scheduled and self._in_flight < CONCURRENCY:
            self._scheduled = True
            self._loop.call_soon(self._send)  # after whatever else this iteration brings in

    def _send(self) -> None:
        self._scheduled = False
        batch = [w for w in self._waiting[: self._max_batch] if not w[1].done()]  # a cancelled one: no read
        del self._waiting[: self._max_batch]
        if batch:
            self._in_flight += 1
            task = self._loop.create_task(self._read(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._schedule()

    async def _read(self, batch: list[Waiter]) -> None:
        try:
            openings = await self._inbox.openings([request for request, _ in batch], self._limit)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # every waiter of the batch gets the store's error
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            for (_, future), opening in zip(batch, openings, strict=True):
                if not future.done():
                    future.set_result(opening)
        finally:
            self._in_flight -= 1
            self._schedule()


_READS: weakref.WeakKeyDictionary[Inbox, dict[int, OpenReads]] = weakref.WeakKeyDictionary()


def for_inbox(inbox: Inbox, limit: int) -> OpenReads:
    """The coalescer of ``inbox``'s opening reads with pages of ``limit`` rows, on the running loop."""
    by_limit = _READS.setdefault(inbox, {})
    reads = by_limit.get(limit)
    if reads is None or reads._loop is not asyncio.get_running_loop():
        reads = by_limit[limit] = OpenReads(inbox, limit)
    return reads

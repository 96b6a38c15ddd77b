"""The ledger check of ``tests/e2e`` for a fleet with several competing workers, plus what only a fleet shows.

``tests/e2e/ledger.py`` holds each user's inbox to the accepted events in each producer's send order. That order
is promised only within one fan-out worker (CONTRACT.md, "Order"; docs/scaling.md, "Fan-out workers"): two
workers take consecutive events of one producer at the same time and commit them in either order, and an event
handed out again after a crash is committed after newer ones. So here the inbox is checked with the e2e checks
for what every topology promises (each accepted event once, seqs 1..n without gaps, nothing nobody sent, and
every client's stream equal to its inbox), and the producer order is measured instead (``Reordering``).

Two more checks that only a fleet needs: every accepted event is eventually acked (the log's lag drains to 0:
no delivery stuck with a worker that gave up on it), and no replica died on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from e2e.ledger import Notification, accepted_by_user, check_inbox, check_stream, fetch_inbox
from e2e.producer import Accepted
from e2e.scenario import Run

from .topology import Topology, metric


@dataclass(frozen=True)
class Late:
    """One event committed to a user's inbox after an event its producer sent later."""

    user: str
    producer: str
    sent_index: int  # its place in the producer's send order
    overtaken_by: int  # the send index of the latest-sent event of that producer committed before it


@dataclass
class Reordering:
    """The per-producer order as the inboxes hold it: every late event, for the report."""

    late: list[Late] = field(default_factory=list)

    def add(self, user: str, producer: str, sent: Sequence[Accepted], got: Sequence[str]) -> None:
        """``sent``: the producer's events to ``user`` in send order; ``got``: their ids in inbox order."""
        position = {a.event_id: i for i, a in enumerate(sent)}
        highest = -1
        for event_id in got:
            i = position[event_id]
            if i < highest:
                overtaker = sent[highest]
                self.late.append(Late(user, producer, _index(sent[i]), _index(overtaker)))
            highest = max(highest, i)

    def summary(self, sent_before_faults: dict[str, int]) -> str:
        """How many events came late, by how far, and how many of them (with the event that overtook them)
        were sent before any fault: reordering by the two workers alone."""
        calm = [x for x in self.late if x.overtaken_by < sent_before_faults.get(x.producer, 0)]
        distance = max((x.overtaken_by - x.sent_index for x in self.late), default=0)
        return (
            f"{len(self.late)} events committed after a later event of their producer "
            f"({len(calm)} of them before any fault), overtaken by up to {distance} sends"
        )


def _index(accepted: Accepted) -> int:
    """The send index of an e2e producer's event, from its Idempotency-Key ``<producer>-<n>``."""
    return int(accepted.key.rsplit("-", 1)[1])


def in_inbox_order(inbox: Sequence[Notification], accepted: Sequence[Accepted]) -> list[Accepted]:
    """``accepted`` sorted as the inbox holds them (missing ones last), so ``check_inbox``'s per-producer order
    check compares like with like and only its other checks (lost, twice, gaps, extra) can fail."""
    position = {n["event_id"]: i for i, n in enumerate(inbox)}
    return sorted(accepted, key=lambda a: position.get(a.event_id, len(inbox)))


def measure_order(
    user: str, inbox: Sequence[Notification], accepted: Sequence[Accepted], reordering: Reordering
) -> None:
    ids = [n["event_id"] for n in inbox]
    for producer in sorted({a.producer for a in accepted}):
        sent = [a for a in accepted if a.producer == producer]
        wanted = {a.event_id for a in sent}
        reordering.add(user, producer, sent, [i for i in ids if i in wanted])


async def check_ledger(run: Run, reordering: Reordering) -> list[str]:
    """Settles, then every guarantee a fleet keeps, over every user and client; the problems found."""
    problems = [] if await run.settle() else [f"not settled: {run.lagging()[:10]}"]
    problems += [p for producer in run.producers for p in producer.problems]
    by_user = accepted_by_user(run.producers)
    for user, token in run.tokens.items():
        inbox = await fetch_inbox(run.server.base_url, token)
        accepted = by_user.get(user, [])
        problems += check_inbox(user, inbox, in_inbox_order(inbox, accepted))
        measure_order(user, inbox, accepted, reordering)
        problems += [p for client in run.clients if client.user == user for p in check_stream(client, inbox)]
    return problems


async def lag_drained(topology: Topology, within: float) -> tuple[bool, float]:
    """Whether the log's lag (events appended, not acked; read from the log by an API replica) reaches 0
    within ``within`` seconds; and the last value read."""
    port = topology.port_of(topology.replicas["api"][0])
    deadline = time.monotonic() + within
    while True:  # bounded by the deadline
        lag = await metric(port, "tidings_log_lag")
        if lag == 0 or time.monotonic() >= deadline:
            return lag == 0, lag
        await asyncio.sleep(0.5)

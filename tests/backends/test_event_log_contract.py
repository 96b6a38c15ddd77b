"""The ``ports.EventLog`` contract, over every log backend (the ``logs`` fixture opens and restarts one).

"Restart" closes the log and what it sits on, then opens a fresh instance on the same data: what a process
exit and a new process see.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from backend_support import LogHarness, appends, make_event

from tidings.core.models import Priority
from tidings.errors import IdempotencyMismatchError
from tidings.ports import Appended, Delivery, EventLog


async def drain(log: EventLog, max_items: int = 1000) -> list[Delivery]:
    """Everything the log hands out now (bounded)."""
    got: list[Delivery] = []
    for _ in range(100):
        batch = await log.read(max_items, 0.05)
        if not batch:
            return got
        got.extend(batch)
    raise AssertionError("the log never ran dry")


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.event.id for d in deliveries]


async def test_appended_events_are_read_back_whole_and_survive_a_restart(logs: LogHarness) -> None:
    """An accepted event comes out of the log exactly as it went in, even after the process restarts."""
    log = await logs.open()
    event = make_event("e1", key="k1")
    assert await log.append(appends(event, body_hash="h1")) == [Appended("e1")]
    log = await logs.restart()
    [delivery] = await drain(log)
    assert delivery.event == event
    assert delivery.lane == "normal"


async def test_same_key_same_body_is_a_duplicate_of_the_first(logs: LogHarness) -> None:
    """Retrying a request with its Idempotency-Key answers with the first event's id and appends nothing."""
    log = await logs.open()
    await log.append(appends(make_event("e1", key="k"), body_hash="h"))
    result = await log.append(appends(make_event("e2", key="k"), body_hash="h"))
    assert result == [Appended("e1", duplicate=True)]
    assert ids(await drain(log)) == ["e1"]


async def test_same_key_different_body_is_refused_in_its_slot(logs: LogHarness) -> None:
    """Reusing a key for another body fails that item only; the rest of the batch is appended."""
    log = await logs.open()
    await log.append(appends(make_event("e1", key="k"), body_hash="h"))
    result = await log.append(
        [*appends(make_event("e2", key="k"), body_hash="other"), *appends(make_event("e3", key="k3"))]
    )
    assert isinstance(result[0], IdempotencyMismatchError)
    assert result[1] == Appended("e3")
    assert ids(await drain(log)) == ["e1", "e3"]


async def test_same_key_twice_in_one_batch_behaves_as_if_sequential(logs: LogHarness) -> None:
    """In one batch, the first use of a key appends; later uses are duplicates or mismatches of it."""
    log = await logs.open()
    result = await log.append(
        [
            *appends(make_event("e1", key="k"), body_hash="h"),
            *appends(make_event("e2", key="k"), body_hash="h"),
            *appends(make_event("e3", key="k"), body_hash="x"),
        ]
    )
    assert result[:2] == [Appended("e1"), Appended("e1", duplicate=True)]
    assert isinstance(result[2], IdempotencyMismatchError)
    assert ids(await drain(log)) == ["e1"]


async def test_idempotency_keys_are_scoped_to_the_app(logs: LogHarness) -> None:
    """Two apps may use the same key: each gets its own event."""
    log = await logs.open()
    result = await log.append(
        [*appends(make_event("e1", key="k"), body_hash="h"), *appends(make_event("e2", app="app2", key="k"))]
    )
    assert result == [Appended("e1"), Appended("e2")]


async def test_keys_are_remembered_across_a_restart(logs: LogHarness) -> None:
    """A retry after the server restarted is still recognised as a retry."""
    log = await logs.open()
    await log.append(appends(make_event("e1", key="k"), body_hash="h"))
    log = await logs.restart()
    assert await log.append(appends(make_event("e9", key="k"), body_hash="h")) == [
        Appended("e1", duplicate=True)
    ]


async def test_lanes_high_before_normal_before_low_in_append_order(logs: LogHarness) -> None:
    """Mentions (high) overtake likes (low); within a lane, events keep the order they were accepted in."""
    log = await logs.open()
    order: list[Priority] = ["low", "normal", "high", "low", "high", "normal", "low", "high"]
    await log.append(appends(*(make_event(f"e{i}-{p}", priority=p) for i, p in enumerate(order))))
    got = await drain(log)
    assert ids(got) == [
        "e2-high",
        "e4-high",
        "e7-high",
        "e1-normal",
        "e5-normal",
        "e0-low",
        "e3-low",
        "e6-low",
    ]
    assert [d.lane for d in got] == ["high"] * 3 + ["normal"] * 2 + ["low"] * 3


async def test_read_hands_out_each_event_once_per_process(logs: LogHarness) -> None:
    """Unacked events are not handed out twice by a running process; reads continue where the last stopped."""
    log = await logs.open()
    await log.append(appends(*(make_event(f"e{i}") for i in range(5))))
    assert ids(await log.read(2, 1.0)) == ["e0", "e1"]
    assert ids(await log.read(2, 1.0)) == ["e2", "e3"]
    assert ids(await log.read(10, 1.0)) == ["e4"]
    assert await log.read(10, 0.05) == []


async def test_concurrent_readers_share_the_events_without_overlap(logs: LogHarness) -> None:
    """Several worker tasks reading at once each get different events, and together all of them."""
    log = await logs.open()
    await log.append(appends(*(make_event(f"e{i:03d}") for i in range(100))))
    batches = await asyncio.gather(*(log.read(7, 0.2) for _ in range(20)))
    seen = [event_id for batch in batches for event_id in ids(batch)]
    assert sorted(seen) == [f"e{i:03d}" for i in range(100)]


async def test_unacked_events_come_again_after_a_restart_acked_ones_never(logs: LogHarness) -> None:
    """A worker that dies before acking gets the event again; what it acked stays done."""
    log = await logs.open()
    await log.append(appends(*(make_event(f"e{i}") for i in range(4))))
    got = await log.read(2, 1.0)
    await log.ack(got)
    assert ids(await log.read(10, 1.0)) == ["e2", "e3"]  # handed out, never acked
    log = await logs.restart()
    assert ids(await drain(log)) == ["e2", "e3"]
    log = await logs.restart()
    assert ids(await drain(log)) == ["e2", "e3"]


async def test_acks_in_any_order(logs: LogHarness) -> None:
    """Acks may arrive out of order: once the gaps are acked too, nothing comes back after a restart."""
    log = await logs.open()
    await log.append(appends(*(make_event(f"e{i}") for i in range(5))))
    got = await log.read(10, 1.0)
    for index in (4, 2, 0, 3, 1):
        await log.ack([got[index]])
    assert await log.lag() == 0
    log = await logs.restart()
    assert await drain(log) == []


async def test_an_unacked_gap_is_redelivered_and_the_acked_prefix_is_not(logs: LogHarness) -> None:
    """With e1 unacked after a restart, e1 comes again (and maybe later acked ones); e0 never does."""
    log = await logs.open()
    await log.append(appends(*(make_event(f"e{i}") for i in range(4))))
    got = await log.read(10, 1.0)
    await log.ack([got[0], got[2]])
    log = await logs.restart()
    again = set(ids(await drain(log)))
    assert {"e1", "e3"} <= again
    assert "e0" not in again


async def test_lag_counts_events_not_acked(logs: LogHarness) -> None:
    """Lag is what was accepted and not yet fully processed, whether or not it was read."""
    log = await logs.open()
    assert await log.lag() == 0
    await log.append(appends(*(make_event(f"e{i}", priority="high" if i % 2 else "low") for i in range(6))))
    assert await log.lag() == 6
    got = await log.read(4, 1.0)
    assert await log.lag() == 6
    await log.ack(got)
    assert await log.lag() == 2


@pytest.mark.serial  # a bound of 1 s on the wall clock
async def test_read_times_out_promptly_with_nothing_to_read(logs: LogHarness) -> None:
    """A read on an empty log returns an empty list after about its timeout, not later."""
    log = await logs.open()
    started = time.monotonic()
    assert await log.read(10, 0.2) == []
    assert 0.15 <= time.monotonic() - started < 1.0


@pytest.mark.serial  # a bound of 1 s on the wall clock
async def test_a_waiting_read_wakes_when_an_event_is_appended(logs: LogHarness) -> None:
    """A worker waiting on an idle log gets a new event at once, not at the end of its timeout."""
    log = await logs.open()
    reader = asyncio.create_task(log.read(10, 10.0))
    await asyncio.sleep(0.05)  # let the reader start waiting
    started = time.monotonic()
    await log.append(appends(make_event("e1")))
    assert ids(await reader) == ["e1"]
    assert time.monotonic() - started < 1.0


async def test_group_commit_of_200_concurrent_appends(logs: LogHarness) -> None:
    """200 producers appending at once all get distinct ids, and every one of those events is durable."""
    log = await logs.open()
    events = [make_event(f"e{i:03d}", key=f"k{i}") for i in range(200)]
    results = await asyncio.gather(*(log.append(appends(e, body_hash="h")) for e in events))
    assert [r for [r] in results] == [Appended(e.id) for e in events]
    log = await logs.restart()
    assert sorted(ids(await drain(log))) == [e.id for e in events]


async def test_an_empty_append_returns_nothing(logs: LogHarness) -> None:
    """Appending no items is a no-op."""
    log = await logs.open()
    assert await log.append([]) == []
    assert await log.lag() == 0


@pytest.mark.parametrize("max_items", [1, 3])
async def test_read_respects_max_items_across_lanes(logs: LogHarness, max_items: int) -> None:
    """A read never hands out more than asked, even when several lanes have events."""
    log = await logs.open()
    await log.append(
        appends(make_event("h", priority="high"), make_event("n"), make_event("l", priority="low"))
    )
    assert ids(await log.read(max_items, 1.0)) == ["h", "n", "l"][:max_items]

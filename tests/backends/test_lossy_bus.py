"""``LossyBus``: the misbehaving bus that gateway tests use to prove gap-fill; it misbehaves reproducibly."""

from __future__ import annotations

import random

from tidings.backends.memory import LossyBus, MemoryBus
from tidings.core.models import LiveMessage


async def run(seed: int, n: int = 1000, **odds: float) -> tuple[list[int], LossyBus]:
    bus = LossyBus(MemoryBus(), random.Random(seed), **odds)
    got: list[int] = []
    await bus.subscribe("app1", "alice", lambda m: got.append(m.seq))
    for start in range(1, n + 1, 10):
        await bus.publish([LiveMessage("app1", "alice", seq, b"{}") for seq in range(start, start + 10)])
    await bus.flush()
    return got, bus


async def test_the_same_seed_misbehaves_the_same_way() -> None:
    """Two runs with one seed deliver the same sequence: a failing gateway test can be replayed."""
    first, _ = await run(7, drop=0.1, duplicate=0.1, reorder=0.1)
    second, _ = await run(7, drop=0.1, duplicate=0.1, reorder=0.1)
    assert first == second


async def test_it_drops_duplicates_and_reorders_but_never_invents() -> None:
    """Some messages are lost, some come twice, some overtake others; nothing arrives that was not sent."""
    got, bus = await run(3, drop=0.1, duplicate=0.1, reorder=0.1)
    assert bus.dropped > 0
    assert bus.duplicated > 0
    assert bus.reordered > 0
    assert set(got) <= set(range(1, 1001))
    assert len(set(got)) == 1000 - bus.dropped
    assert len(got) == 1000 - bus.dropped + bus.duplicated
    assert got != sorted(got)


async def test_with_zero_odds_it_is_a_faithful_bus() -> None:
    """With every probability at zero, every message arrives once, in order."""
    got, _ = await run(1, drop=0, duplicate=0, reorder=0)
    assert got == list(range(1, 1001))

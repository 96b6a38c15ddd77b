"""The ``ports.Idempotency`` contract (producers' Idempotency-Keys kept for the broker logs), over every store."""

from __future__ import annotations

import asyncio

from tidings.ports import Claim, Store

NOW = 1_790_000_000.0


async def test_a_new_key_is_recorded_by_this_claim(store: Store) -> None:
    """A key never seen before is recorded, and the claim says so with None."""
    assert await store.idempotency.claim([Claim("app1", "k1", "h1", "E1")], NOW) == [None]


async def test_a_repeated_key_gives_back_the_first_claim(store: Store) -> None:
    """Sending the same key again answers the first event's id and body hash, whatever this claim carries."""
    await store.idempotency.claim([Claim("app1", "k1", "h1", "E1")], NOW)
    assert await store.idempotency.claim([Claim("app1", "k1", "h1", "E2")], NOW + 1) == [
        Claim("app1", "k1", "h1", "E1")
    ]


async def test_a_repeated_key_with_another_body_shows_the_recorded_body(store: Store) -> None:
    """A key reused with a different body returns the recorded fingerprint, so the caller can refuse it."""
    await store.idempotency.claim([Claim("app1", "k1", "h1", "E1")], NOW)
    [earlier] = await store.idempotency.claim([Claim("app1", "k1", "other", "E2")], NOW + 1)
    assert earlier == Claim("app1", "k1", "h1", "E1")
    assert await store.idempotency.claim([Claim("app1", "k1", "h1", "E3")], NOW + 2) == [earlier]


async def test_a_key_repeated_within_one_batch_is_claimed_once(store: Store) -> None:
    """The second use of a key in one batch sees the first use of it; other keys are claimed as usual."""
    batch = [
        Claim("app1", "k1", "h1", "E1"),
        Claim("app1", "k2", "h2", "E2"),
        Claim("app1", "k1", "h1", "E3"),
        Claim("app1", "k1", "other", "E4"),
    ]
    first = Claim("app1", "k1", "h1", "E1")
    assert await store.idempotency.claim(batch, NOW) == [None, None, first, first]
    assert await store.idempotency.claim([Claim("app1", "k2", "h2", "E9")], NOW) == [batch[1]]


async def test_a_batch_mixes_recorded_and_new_keys_in_order(store: Store) -> None:
    """Results come one per claim, in the order of the claims."""
    await store.idempotency.claim([Claim("app1", "old", "h", "E1")], NOW)
    results = await store.idempotency.claim(
        [Claim("app1", "new", "h", "E2"), Claim("app1", "old", "h", "E3"), Claim("app1", "n2", "h", "E4")],
        NOW,
    )
    assert results == [None, Claim("app1", "old", "h", "E1"), None]


async def test_keys_are_scoped_by_app(store: Store) -> None:
    """The same key in two apps is two different keys: neither app sees the other's event."""
    assert await store.idempotency.claim(
        [Claim("app1", "k", "h", "E1"), Claim("app2", "k", "h", "E2")], NOW
    ) == [
        None,
        None,
    ]
    assert await store.idempotency.claim([Claim("app2", "k", "h", "E3")], NOW) == [
        Claim("app2", "k", "h", "E2")
    ]


async def test_prune_forgets_only_old_keys(store: Store) -> None:
    """Pruning drops keys recorded before the horizon (and says how many); newer ones still answer."""
    await store.idempotency.claim([Claim("app1", "old", "h", "E1")], NOW)
    await store.idempotency.claim([Claim("app1", "new", "h", "E2")], NOW + 100)
    assert await store.idempotency.prune(older_than=NOW + 50) == 1
    assert await store.idempotency.prune(older_than=NOW + 50) == 0
    assert await store.idempotency.claim([Claim("app1", "old", "h", "E3")], NOW + 200) == [None]
    assert await store.idempotency.claim([Claim("app1", "new", "h", "E4")], NOW + 200) == [
        Claim("app1", "new", "h", "E2")
    ]


async def test_concurrent_claims_of_one_key_record_it_once(store: Store) -> None:
    """Ten producers retrying the same request at once: exactly one records the key, all see its event."""
    claims = [[Claim("app1", "k", "h", f"E{i}")] for i in range(10)]
    results = await asyncio.gather(*(store.idempotency.claim(batch, NOW) for batch in claims))
    winners = [i for i, [result] in enumerate(results) if result is None]
    assert len(winners) == 1
    first = Claim("app1", "k", "h", f"E{winners[0]}")
    assert [result for [result] in results if result is not None] == [first] * 9


async def test_an_empty_claim_is_a_no_op(store: Store) -> None:
    """Claiming nothing returns nothing."""
    assert await store.idempotency.claim([], NOW) == []

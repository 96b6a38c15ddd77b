"""The ``ports.Apps`` contract (tenants, API key lookup, one-use stream tickets), over every store backend."""

from __future__ import annotations

import asyncio

import pytest

from tidings.core.models import App
from tidings.errors import AppExistsError
from tidings.ports import Store
from tidings.testing import FakeClock


def make_app(name: str = "acme", key_hash: str = "a" * 64, origins: tuple[str, ...] = ()) -> App:
    return App(name, key_hash, jwt_secret=f"secret-of-{name}", origins=origins, created_at=1_790_000_000.5)


async def test_created_app_reads_back_whole(store: Store) -> None:
    """An app reads back exactly as created, origins in order, by name and by its key hash."""
    app = make_app(origins=("https://acme.example", "http://localhost:3000"))
    await store.apps.create(app)
    assert await store.apps.get("acme") == app
    assert await store.apps.by_key_hash("a" * 64) == app


async def test_unknown_app_and_key_give_none(store: Store) -> None:
    """Looking up a name or key that does not exist finds nothing."""
    await store.apps.create(make_app())
    assert await store.apps.get("other") is None
    assert await store.apps.by_key_hash("b" * 64) is None


async def test_a_taken_name_is_refused(store: Store) -> None:
    """Creating an app under a taken name fails and leaves the first app as it was."""
    await store.apps.create(make_app())
    with pytest.raises(AppExistsError):
        await store.apps.create(make_app(key_hash="b" * 64))
    app = await store.apps.get("acme")
    assert app is not None
    assert app.api_key_hash == "a" * 64
    assert await store.apps.by_key_hash("b" * 64) is None


async def test_a_ticket_works_once(store: Store, clock: FakeClock) -> None:
    """A stream ticket names its app and user the first time it is redeemed, and never again."""
    await store.apps.issue_ticket("t" * 64, "acme", "alice", clock.time() + 60)
    assert await store.apps.redeem_ticket("t" * 64, clock.time()) == ("acme", "alice")
    assert await store.apps.redeem_ticket("t" * 64, clock.time()) is None


async def test_an_expired_ticket_is_refused(store: Store, clock: FakeClock) -> None:
    """A ticket redeemed after it expires gives nothing; one redeemed just before still works."""
    await store.apps.issue_ticket("old" + "t" * 61, "acme", "alice", clock.time() + 60)
    await store.apps.issue_ticket("new" + "t" * 61, "acme", "bob", clock.time() + 120)
    clock.advance(60)
    assert await store.apps.redeem_ticket("old" + "t" * 61, clock.time()) is None
    assert await store.apps.redeem_ticket("new" + "t" * 61, clock.time()) == ("acme", "bob")


async def test_an_unknown_ticket_is_refused(store: Store, clock: FakeClock) -> None:
    """A ticket that was never issued gives nothing."""
    assert await store.apps.redeem_ticket("x" * 64, clock.time()) is None


async def test_a_ticket_redeemed_concurrently_works_for_one_caller(store: Store, clock: FakeClock) -> None:
    """Ten simultaneous redeems of one ticket: exactly one succeeds."""
    await store.apps.issue_ticket("t" * 64, "acme", "alice", clock.time() + 60)
    results = await asyncio.gather(*(store.apps.redeem_ticket("t" * 64, clock.time()) for _ in range(10)))
    assert results.count(("acme", "alice")) == 1
    assert results.count(None) == 9

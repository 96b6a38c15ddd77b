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


# --- credentials: rotation and deletion ------------------------------------------------------------------------


async def test_a_rotated_key_is_current_and_the_old_one_is_previous_until_its_time(store: Store) -> None:
    """After ``rotate_key`` both hashes find the app: the new one as current, the old one as previous with
    the given expiry (the store does not judge the expiry; the caller does, with its clock)."""
    await store.apps.create(make_app())
    assert await store.apps.rotate_key("acme", "b" * 64, 1_790_086_400.0)
    by_new, by_old = await store.apps.by_key_hash("b" * 64), await store.apps.by_key_hash("a" * 64)
    assert by_new == by_old == await store.apps.get("acme")
    assert by_new is not None
    assert (by_new.api_key_hash, by_new.previous_key_hash) == ("b" * 64, "a" * 64)
    assert by_new.previous_key_until == 1_790_086_400.0
    assert by_new.jwt_secret == "secret-of-acme"  # the secret is untouched
    assert by_new.previous_jwt_secret is None


async def test_rotating_again_drops_the_oldest_key(store: Store) -> None:
    """Two rotations: only the last two keys find the app; the first is gone at once."""
    await store.apps.create(make_app())
    assert await store.apps.rotate_key("acme", "b" * 64, 100.0)
    assert await store.apps.rotate_key("acme", "c" * 64, 200.0)
    assert await store.apps.by_key_hash("a" * 64) is None
    app = await store.apps.by_key_hash("b" * 64)
    assert app is not None
    assert (app.api_key_hash, app.previous_key_hash, app.previous_key_until) == ("c" * 64, "b" * 64, 200.0)


async def test_a_rotated_secret_keeps_the_old_one_as_previous(store: Store) -> None:
    """``rotate_secret`` makes the new secret current and keeps the old one with its expiry; keys untouched."""
    await store.apps.create(make_app())
    assert await store.apps.rotate_secret("acme", "new-secret", 123.5)
    app = await store.apps.get("acme")
    assert app is not None
    assert (app.jwt_secret, app.previous_jwt_secret, app.previous_secret_until) == (
        "new-secret",
        "secret-of-acme",
        123.5,
    )
    assert (app.api_key_hash, app.previous_key_hash) == ("a" * 64, None)


async def test_rotating_an_unknown_app_changes_nothing(store: Store) -> None:
    """Rotations of a name no app has answer False and create nothing."""
    assert not await store.apps.rotate_key("nobody", "b" * 64, 1.0)
    assert not await store.apps.rotate_secret("nobody", "s", 1.0)
    assert await store.apps.by_key_hash("b" * 64) is None
    assert await store.apps.all() == []


async def test_a_deleted_app_and_its_tickets_are_gone(store: Store, clock: FakeClock) -> None:
    """``delete`` removes the app (by name, current key, previous key) and its tickets, not other apps'."""
    await store.apps.create(make_app())
    await store.apps.create(make_app("other", key_hash="o" * 64))
    await store.apps.rotate_key("acme", "b" * 64, clock.time() + 3600)
    await store.apps.issue_ticket("t" * 64, "acme", "alice", clock.time() + 60)
    await store.apps.issue_ticket("u" * 64, "other", "bob", clock.time() + 60)
    assert await store.apps.delete("acme")
    assert await store.apps.get("acme") is None
    assert await store.apps.by_key_hash("a" * 64) is None
    assert await store.apps.by_key_hash("b" * 64) is None
    assert await store.apps.redeem_ticket("t" * 64, clock.time()) is None
    assert await store.apps.redeem_ticket("u" * 64, clock.time()) == ("other", "bob")
    assert not await store.apps.delete("acme")
    assert [app.name for app in await store.apps.all()] == ["other"]


async def test_a_deleted_name_can_be_created_again(store: Store) -> None:
    """After a delete the name and its keys are free: a new app under that name has only its new key."""
    await store.apps.create(make_app())
    await store.apps.delete("acme")
    await store.apps.create(make_app(key_hash="n" * 64))
    assert await store.apps.by_key_hash("a" * 64) is None
    assert await store.apps.by_key_hash("n" * 64) == make_app(key_hash="n" * 64)


async def test_all_lists_every_app_by_name(store: Store) -> None:
    """``all`` returns every app whole, ordered by name."""
    for i, name in enumerate(("zeta", "acme", "mid")):
        await store.apps.create(make_app(name, key_hash=str(i) * 64))
    await store.apps.rotate_secret("mid", "s2", 5.0)
    apps = await store.apps.all()
    assert [app.name for app in apps] == ["acme", "mid", "zeta"]
    assert apps[1].previous_jwt_secret == "secret-of-mid"

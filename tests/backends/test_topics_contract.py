"""The ``ports.Topics`` contract (subscriber lists read in bounded keyset pages), over every store backend."""

from __future__ import annotations

import asyncio

from tidings.ports import Store


async def all_subscribers(store: Store, topic: str, app: str = "app1", chunk: int = 1000) -> list[list[str]]:
    """Reads a whole topic in pages of ``chunk``, as the fan-out worker does; returns the pages."""
    pages: list[list[str]] = []
    after: str | None = None
    for _ in range(10_000):  # bounded: a topic of 10M subscribers at most in this test helper
        page = await store.topics.page(app, topic, after, chunk)
        if not page:
            return pages
        pages.append(page)
        after = page[-1]
    raise AssertionError("topic pages never ended")


async def test_subscribe_and_unsubscribe_are_idempotent(store: Store) -> None:
    """Subscribing twice or unsubscribing twice changes things once, and says so."""
    assert await store.topics.subscribe("app1", "followers:bob", "alice") is True
    assert await store.topics.subscribe("app1", "followers:bob", "alice") is False
    assert await store.topics.page("app1", "followers:bob", None, 10) == ["alice"]
    assert await store.topics.unsubscribe("app1", "followers:bob", "alice") is True
    assert await store.topics.unsubscribe("app1", "followers:bob", "alice") is False
    assert await store.topics.page("app1", "followers:bob", None, 10) == []


async def test_pages_are_ascending_and_resume_after_a_user(store: Store) -> None:
    """A page lists subscriber ids in ascending order after the given id, at most ``limit``."""
    for user in ("carol", "alice", "dave", "bob"):
        await store.topics.subscribe("app1", "t", user)
    assert await store.topics.page("app1", "t", None, 3) == ["alice", "bob", "carol"]
    assert await store.topics.page("app1", "t", "bob", 3) == ["carol", "dave"]
    assert await store.topics.page("app1", "t", "b", 1) == ["bob"]
    assert await store.topics.page("app1", "t", "dave", 3) == []


async def test_a_topic_of_2500_subscribers_is_read_in_chunks(store: Store) -> None:
    """2,500 followers come back in three pages of at most 1,000, each id once, in order."""
    users = [f"user{i:05d}" for i in range(2500)]
    for start in range(0, len(users), 250):
        await asyncio.gather(*(store.topics.subscribe("app1", "big", u) for u in users[start : start + 250]))
    pages = await all_subscribers(store, "big")
    assert [len(p) for p in pages] == [1000, 1000, 500]
    assert [u for p in pages for u in p] == users


async def test_topics_and_apps_are_isolated(store: Store) -> None:
    """A topic's subscribers are its own: other topics and the same topic name in another app don't mix."""
    await store.topics.subscribe("app1", "t", "alice")
    await store.topics.subscribe("app1", "u", "bob")
    await store.topics.subscribe("app2", "t", "carol")
    assert await store.topics.page("app1", "t", None, 10) == ["alice"]
    assert await store.topics.page("app2", "t", None, 10) == ["carol"]
    assert await store.topics.unsubscribe("app2", "t", "alice") is False
    assert await store.topics.page("app1", "t", None, 10) == ["alice"]

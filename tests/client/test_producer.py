"""ProducerClient against a real ``tidings serve``: sending, idempotent retries, batches, topics."""

from __future__ import annotations

import pytest

from tidings.client import AuthFailedError, Backoff, ConnectionFailedError, ProducerClient

from .proxy import CutProxy
from .server import AppKeys, TidingsServer
from .support import Sleeps, inbox_seqs, like, user_client


def producer(base_url: str, tenant: AppKeys, **options: object) -> ProducerClient:
    return ProducerClient(base_url, tenant.api_key, trust_env=False, **options)  # type: ignore[arg-type]


async def test_a_sent_event_lands_in_the_recipient_inbox(server: TidingsServer, tenant: AppKeys) -> None:
    """send() answers with the event id, and the recipient's inbox then holds the notification."""
    async with (
        producer(server.base_url, tenant) as tidings,
        user_client(server.base_url, tenant, "alice") as alice,
    ):
        event_id = await tidings.send(like("alice"))
        assert await inbox_seqs(alice, expect=1) == [1]
        (item,) = (await alice.notifications())["items"]
    assert item["event_id"] == event_id
    assert item["data"] == {"text": "like 1"}


async def test_the_same_idempotency_key_sends_one_event(server: TidingsServer, tenant: AppKeys) -> None:
    """Sending twice with one key answers the same id, and the user gets one notification."""
    async with (
        producer(server.base_url, tenant) as tidings,
        user_client(server.base_url, tenant, "alice") as alice,
    ):
        first = await tidings.send(like("alice"), idempotency_key="like-42")
        again = await tidings.send(like("alice"), idempotency_key="like-42")
        await tidings.send(like("alice", 2))
        seqs = await inbox_seqs(alice, expect=2)
    assert first == again
    assert seqs == [1, 2]


async def test_an_answer_lost_in_transit_is_retried_without_a_duplicate(
    server: TidingsServer, tenant: AppKeys, proxy: CutProxy, sleeps: Sleeps
) -> None:
    """The first 202 never reaches the client; its retry (same generated key) creates nothing new."""
    proxy.lose_next_answer()
    async with (
        producer(proxy.base_url, tenant, sleep=sleeps, random=lambda: 0.0) as tidings,
        user_client(server.base_url, tenant, "alice") as alice,
    ):
        event_id = await tidings.send(like("alice"))
        await tidings.send(
            like("alice", 2)
        )  # delivered after the first: once it is in, so would a duplicate be
        await inbox_seqs(alice, expect=2)
        items = (await alice.notifications(after=0))["items"]
    assert proxy.answers_lost == 1
    assert len(sleeps.delays) == 1
    assert [item["event_id"] for item in items][:1] == [event_id]
    assert [item["data"]["text"] for item in items] == ["like 1", "like 2"]


async def test_connection_failures_are_retried_until_the_network_is_back(
    server: TidingsServer, tenant: AppKeys, proxy: CutProxy
) -> None:
    """With the network down for two attempts, send() waits with growing backoff and then succeeds."""
    proxy.block()
    sleeps = Sleeps(on_sleep=lambda n: proxy.unblock() if n == 2 else None)
    backoff = Backoff(max_attempts=5, base=0.2, cap=10.0)
    async with producer(proxy.base_url, tenant, sleep=sleeps, random=lambda: 0.5, backoff=backoff) as tidings:
        assert await tidings.send(like("alice"))
    assert sleeps.delays == [0.1, 0.2]  # full jitter: 0.5 * 0.2 * 2**attempt


async def test_retries_are_bounded(
    server: TidingsServer, tenant: AppKeys, proxy: CutProxy, sleeps: Sleeps
) -> None:
    """With the network down for good, send() gives up after max_attempts with ConnectionFailedError."""
    proxy.block()
    async with producer(proxy.base_url, tenant, sleep=sleeps, backoff=Backoff(max_attempts=3)) as tidings:
        with pytest.raises(ConnectionFailedError, match="after 3 attempt"):
            await tidings.send(like("alice"))
    assert len(sleeps.delays) == 2


async def test_a_wrong_api_key_fails_at_once(server: TidingsServer, tenant: AppKeys, sleeps: Sleeps) -> None:
    """401 is not retried: AuthFailedError right away."""
    async with ProducerClient(server.base_url, "tdk_wrong", trust_env=False, sleep=sleeps) as tidings:
        with pytest.raises(AuthFailedError) as raised:
            await tidings.send(like("alice"))
    assert raised.value.status == 401
    assert sleeps.delays == []


async def test_a_batch_answers_one_result_per_event_in_order(server: TidingsServer, tenant: AppKeys) -> None:
    """A bad item fails alone; the good ones around it are accepted and delivered."""
    bad = {"type": "post.liked", "recipients": ["alice"], "topic": "followers:bob"}
    async with (
        producer(server.base_url, tenant) as tidings,
        user_client(server.base_url, tenant, "alice") as alice,
    ):
        results = await tidings.send_batch([like("alice", 1), bad, like("alice", 2)])
        seqs = await inbox_seqs(alice, expect=2)
    assert [("id" in result, "error" in result) for result in results] == [
        (True, False),
        (False, True),
        (True, False),
    ]
    assert results[1]["error"]["code"] == "validation_failed"
    assert seqs == [1, 2]


async def test_a_resent_batch_creates_nothing_twice(server: TidingsServer, tenant: AppKeys) -> None:
    """Items with their own keys, sent again, answer the same ids."""
    events = [{**like("alice", n), "idempotency_key": f"batch-{n}"} for n in (1, 2)]
    async with (
        producer(server.base_url, tenant) as tidings,
        user_client(server.base_url, tenant, "alice") as alice,
    ):
        first = await tidings.send_batch(events)
        again = await tidings.send_batch(events)
        seqs = await inbox_seqs(alice, expect=2)
    assert first == again
    assert seqs == [1, 2]


async def test_topic_subscribers_receive_a_topic_event(server: TidingsServer, tenant: AppKeys) -> None:
    """subscribe / subscribers / unsubscribe, and an event to the topic reaching each subscriber."""
    async with producer(server.base_url, tenant) as tidings:
        assert await tidings.subscribe("followers:bob", "alice") is True
        assert await tidings.subscribe("followers:bob", "alice") is False
        assert await tidings.subscribe("followers:bob", "carol") is True
        assert [user async for user in tidings.subscribers("followers:bob", page_size=1)] == [
            "alice",
            "carol",
        ]
        await tidings.send({"type": "post.created", "actor": {"id": "bob"}, "topic": "followers:bob"})
        for user in ("alice", "carol"):
            async with user_client(server.base_url, tenant, user) as reader:
                assert await inbox_seqs(reader, expect=1) == [1]
        assert await tidings.unsubscribe("followers:bob", "carol") is True
        assert await tidings.unsubscribe("followers:bob", "carol") is False
        assert [user async for user in tidings.subscribers("followers:bob")] == ["alice"]

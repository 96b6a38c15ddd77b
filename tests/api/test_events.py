"""POST /v1/events and /v1/events/batch: durable acceptance, idempotency, per-item answers, rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tidings.ports import Append, Appended, EventLog

from .conftest import OpenApi
from .support import Api, Tenant, assert_error, event


async def test_an_accepted_event_is_in_the_log_with_its_fields(api: Api, acme: Tenant) -> None:
    """A 202 carries the event id, and the worker finds exactly that event in the log."""
    response = await api.client.post("/v1/events", json=event(priority="high"), headers=acme.producer)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    deliveries = await api.runtime.log.read(10, 0.0)
    assert [d.event.id for d in deliveries] == [body["id"]]
    stored = deliveries[0].event
    assert (stored.app, stored.type, stored.recipients, stored.priority) == (
        "acme",
        "post.liked",
        ("alice",),
        "high",
    )
    assert stored.actor == {"id": "bob", "name": "Bob"}
    assert stored.accepted_at == api.clock.time()


async def test_a_topic_event_is_accepted(api: Api, acme: Tenant) -> None:
    """An event for a topic's subscribers (with an explicit null recipients) is accepted."""
    body = event(recipients=None, topic="followers:bob")
    response = await api.client.post("/v1/events", json=body, headers=acme.producer)
    assert response.status_code == 202
    (delivery,) = await api.runtime.log.read(10, 0.0)
    assert (delivery.event.topic, delivery.event.recipients) == ("followers:bob", None)


async def test_duplicate_recipients_are_notified_once(api: Api, acme: Tenant) -> None:
    """Listing a user twice does not notify them twice."""
    body = event(recipients=["alice", "carol", "alice"])
    assert (await api.client.post("/v1/events", json=body, headers=acme.producer)).status_code == 202
    (delivery,) = await api.runtime.log.read(10, 0.0)
    assert delivery.event.recipients == ("alice", "carol")


async def test_same_key_same_body_answers_the_same_id_and_appends_nothing(api: Api, acme: Tenant) -> None:
    """A retried request (same Idempotency-Key, same body in another key order) gets the first id back."""
    headers = {**acme.producer, "Idempotency-Key": "k-1"}
    first = await api.client.post("/v1/events", json=event(), headers=headers)
    reordered = dict(reversed(list(event(priority="normal").items())))
    again = await api.client.post("/v1/events", json=reordered, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await api.lag() == 1


async def test_same_key_other_body_is_refused(api: Api, acme: Tenant) -> None:
    """Reusing an Idempotency-Key for a different event answers 422 and appends nothing."""
    headers = {**acme.producer, "Idempotency-Key": "k-1"}
    await api.client.post("/v1/events", json=event(), headers=headers)
    response = await api.client.post("/v1/events", json=event(recipients=["carol"]), headers=headers)
    assert_error(response, 422, "idempotency_key_reused")
    assert await api.lag() == 1


async def test_keys_are_scoped_to_the_app(api: Api, acme: Tenant) -> None:
    """Two apps using the same Idempotency-Key get two events."""
    other = await api.tenant("other")
    first = await api.client.post(
        "/v1/events", json=event(), headers={**acme.producer, "Idempotency-Key": "k"}
    )
    second = await api.client.post(
        "/v1/events", json=event(), headers={**other.producer, "Idempotency-Key": "k"}
    )
    assert first.json()["id"] != second.json()["id"]
    assert await api.lag() == 2


class GatedLog:
    """The real log, whose appends wait at a gate the test opens: makes "still in flight" deterministic."""

    def __init__(self, inner: EventLog) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]:
        self.entered.set()
        await self.gate.wait()
        return await self.inner.append(items)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_same_key_while_the_first_is_in_flight_answers_409(api: Api, acme: Tenant) -> None:
    """A concurrent retry of an unfinished request answers 409; the first still gets its 202."""
    gated = GatedLog(api.runtime.log)
    api.runtime.log = gated  # type: ignore[assignment]
    headers = {**acme.producer, "Idempotency-Key": "k-1"}
    first = asyncio.create_task(api.client.post("/v1/events", json=event(), headers=headers))
    await asyncio.wait_for(gated.entered.wait(), 5)
    concurrent = await api.client.post("/v1/events", json=event(), headers=headers)
    batch = await api.client.post(
        "/v1/events/batch", json={"events": [event(idempotency_key="k-1")]}, headers=acme.producer
    )
    gated.gate.set()
    assert (await first).status_code == 202
    assert_error(concurrent, 409, "idempotency_key_in_flight")
    assert batch.json()["results"][0]["error"]["code"] == "idempotency_key_in_flight"
    again = await api.client.post("/v1/events", json=event(), headers=headers)
    assert again.status_code == 202
    assert again.json()["id"] == (await first).json()["id"]
    assert await gated.inner.lag() == 1


async def test_a_batch_answers_each_item_in_order(api: Api, acme: Tenant) -> None:
    """Valid items are accepted, invalid ones get their own error, and the order is kept."""
    items = [
        event(),
        event(recipients=[]),
        event(extra_field=1),
        "not an object",
        event(recipients=None, topic="followers:bob", idempotency_key="b-1"),
        event(recipients=["x"] * 3, topic="t"),
    ]
    response = await api.client.post("/v1/events/batch", json={"events": items}, headers=acme.producer)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(items)
    assert [("id" in r) for r in results] == [True, False, False, False, True, False]
    assert {r["error"]["code"] for r in results if "error" in r} == {"validation_failed"}
    assert "recipients" in results[1]["error"]["message"]
    accepted = [r["id"] for r in results if "id" in r]
    assert [d.event.id for d in await api.runtime.log.read(10, 0.0)] == accepted


async def test_batch_idempotency_keys_work_per_item(api: Api, acme: Tenant) -> None:
    """Repeated keys inside and across batches answer the first id; a key reused with another body fails."""
    items = [event(idempotency_key="a"), event(idempotency_key="a"), event(idempotency_key="a", type="x")]
    first = (await api.client.post("/v1/events/batch", json={"events": items}, headers=acme.producer)).json()
    assert first["results"][0]["id"] == first["results"][1]["id"]
    assert first["results"][2]["error"]["code"] == "idempotency_key_reused"
    again = await api.client.post(
        "/v1/events/batch", json={"events": [event(idempotency_key="a")]}, headers=acme.producer
    )
    assert again.json()["results"][0]["id"] == first["results"][0]["id"]
    single = await api.client.post(
        "/v1/events", json=event(), headers={**acme.producer, "Idempotency-Key": "a"}
    )
    assert single.json()["id"] == first["results"][0]["id"]
    assert await api.lag() == 1


async def test_batch_size_and_recipient_limits(open_api: OpenApi) -> None:
    """Over max_batch_events the whole batch is refused; over max_recipients only that item is."""
    api = await open_api(max_batch_events=3, max_recipients=2)
    acme = await api.tenant()
    too_many = await api.client.post(
        "/v1/events/batch", json={"events": [event()] * 4}, headers=acme.producer
    )
    assert_error(too_many, 422, "limit_exceeded")
    items = [event(recipients=["a", "b", "c"]), event(recipients=["a", "b"])]
    results = (
        await api.client.post("/v1/events/batch", json={"events": items}, headers=acme.producer)
    ).json()
    assert results["results"][0]["error"]["code"] == "limit_exceeded"
    assert "id" in results["results"][1]
    assert await api.lag() == 1


async def test_rate_limit_answers_429_with_retry_after_and_refills(open_api: OpenApi) -> None:
    """Past the burst a producer gets 429 with Retry-After; after that many seconds it may send again."""
    api = await open_api(rate_per_key=1.0, rate_burst=2.0)
    acme = await api.tenant()
    statuses = [
        (await api.client.post("/v1/events", json=event(), headers=acme.producer)).status_code for _ in "abc"
    ]
    assert statuses == [202, 202, 429]
    refused = await api.client.post("/v1/events", json=event(), headers=acme.producer)
    assert_error(refused, 429, "rate_limited")
    assert refused.headers["Retry-After"] == "1"
    api.clock.advance(1.0)
    assert (await api.client.post("/v1/events", json=event(), headers=acme.producer)).status_code == 202
    assert await api.lag() == 3


async def test_a_batch_costs_one_token_per_event(open_api: OpenApi) -> None:
    """A batch bigger than the tokens left is refused whole, with the wait its deficit needs."""
    api = await open_api(rate_per_key=2.0, rate_burst=10.0)
    acme = await api.tenant()
    ok = await api.client.post("/v1/events/batch", json={"events": [event()] * 4}, headers=acme.producer)
    assert ok.status_code == 200
    refused = await api.client.post(
        "/v1/events/batch", json={"events": [event()] * 10}, headers=acme.producer
    )
    assert_error(refused, 429, "rate_limited")
    assert refused.headers["Retry-After"] == "2"  # 4 tokens short at 2 per second
    other = await api.tenant("other")
    assert (await api.client.post("/v1/events", json=event(), headers=other.producer)).status_code == 202

"""Topic subscribers: idempotent subscribe/unsubscribe and a cursor-paged listing."""

from __future__ import annotations

from .support import Api, Tenant, assert_error


async def test_subscribe_and_unsubscribe_are_idempotent(api: Api, acme: Tenant) -> None:
    """Subscribing twice or removing twice is fine; `changed` says whether the first one did it."""
    path = "/v1/topics/followers:bob/subscribers/alice"
    put1 = await api.client.put(path, headers=acme.producer)
    put2 = await api.client.put(path, headers=acme.producer)
    assert put1.status_code == put2.status_code == 200
    assert put1.json() == {"topic": "followers:bob", "user_id": "alice", "subscribed": True, "changed": True}
    assert put2.json()["changed"] is False
    del1 = await api.client.delete(path, headers=acme.producer)
    del2 = await api.client.delete(path, headers=acme.producer)
    assert (del1.json()["subscribed"], del1.json()["changed"], del2.json()["changed"]) == (False, True, False)
    assert await api.runtime.store.topics.page("acme", "followers:bob", None, 10) == []


async def test_subscribers_are_listed_in_pages(api: Api, acme: Tenant) -> None:
    """Following `next` lists every subscriber once, in order, and ends with null."""
    users = [f"user{i:02d}" for i in range(7)]
    for user in reversed(users):
        await api.client.put(f"/v1/topics/t/subscribers/{user}", headers=acme.producer)
    listed, url = [], "/v1/topics/t/subscribers?limit=3"
    for _ in range(10):
        body = (await api.client.get(url, headers=acme.producer)).json()
        listed.append(body["items"])
        if body["next"] is None:
            break
        url = f"/v1/topics/t/subscribers?limit=3&cursor={body['next']}"
    assert listed == [users[:3], users[3:6], users[6:]]


async def test_an_empty_topic_lists_nothing(api: Api, acme: Tenant) -> None:
    """A topic nobody follows is an empty page, not a 404."""
    response = await api.client.get("/v1/topics/nobody/subscribers", headers=acme.producer)
    assert response.json() == {"items": [], "next": None}


async def test_a_bad_cursor_answers_400(api: Api, acme: Tenant) -> None:
    """A cursor that was not made by the API is refused."""
    response = await api.client.get("/v1/topics/t/subscribers?cursor=%%%", headers=acme.producer)
    assert_error(response, 400, "invalid_input")

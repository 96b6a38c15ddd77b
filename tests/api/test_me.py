"""The user API: listing the inbox both ways with cursors, counts, read/seen marks, stream tickets."""

from __future__ import annotations

from typing import Any

from tidings.auth import hash_key

from .support import Api, Tenant, assert_error, write_inbox


async def pages(api: Api, headers: dict[str, str], query: str) -> list[list[int]]:
    """Every page of a listing, following ``next`` (at most 20 pages)."""
    seen: list[list[int]] = []
    url = f"/v1/me/notifications?{query}"
    for _ in range(20):
        response = await api.client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        seen.append([item["seq"] for item in body["items"]])
        if body["next"] is None:
            return seen
        url = f"/v1/me/notifications?limit={len(body['items'])}&cursor={body['next']}"
        if "unread=true" in query:
            url += "&unread=true"
    raise AssertionError("listing did not end")


async def test_newest_first_in_pages(api: Api, acme: Tenant) -> None:
    """Without `after`, notifications come newest first, a page at a time, with nothing skipped."""
    await write_inbox(api, "acme", "alice", 5)
    alice = api.user(acme, "alice")
    assert await pages(api, alice, "limit=2") == [[5, 4], [3, 2], [1]]


async def test_oldest_first_after_a_seq(api: Api, acme: Tenant) -> None:
    """With `after`, notifications after that seq come oldest first; `before` bounds them."""
    await write_inbox(api, "acme", "alice", 6)
    alice = api.user(acme, "alice")
    assert await pages(api, alice, "after=1&limit=2") == [[2, 3], [4, 5], [6]]
    assert await pages(api, alice, "after=1&before=5&limit=2") == [[2, 3], [4]]
    assert await pages(api, alice, "before=3") == [[2, 1]]


async def test_a_notification_has_the_contract_fields(api: Api, acme: Tenant) -> None:
    """Each listed notification carries seq, ids, type, actors, read/seen state."""
    await write_inbox(api, "acme", "alice", 1)
    response = await api.client.get("/v1/me/notifications", headers=api.user(acme, "alice"))
    (item,) = response.json()["items"]
    assert {"seq", "id", "event_id", "type", "actors", "count", "object", "data", "priority"} <= set(item)
    assert (item["seq"], item["type"], item["read_at"], item["seen_at"]) == (1, "post.liked", None, None)


async def test_read_and_seen_marks_change_counts_and_listing(api: Api, acme: Tenant) -> None:
    """Marking by seqs or up_to updates unread/unseen counts, the read_at stamp, and the unread filter."""
    await write_inbox(api, "acme", "alice", 5)
    alice = api.user(acme, "alice")

    async def counts() -> dict[str, int]:
        response = await api.client.get("/v1/me/unread-count", headers=alice)
        result: dict[str, int] = response.json()
        return result

    assert await counts() == {"unread": 5, "unseen": 5}
    seen = await api.client.post("/v1/me/notifications/seen", json={"up_to": 3}, headers=alice)
    assert seen.json() == {"updated": 3}
    read = await api.client.post("/v1/me/notifications/read", json={"seqs": [2, 5, 99]}, headers=alice)
    assert read.json() == {"updated": 2}
    again = await api.client.post("/v1/me/notifications/read", json={"seqs": [2]}, headers=alice)
    assert again.json() == {"updated": 0}
    assert await counts() == {"unread": 3, "unseen": 2}
    assert await pages(api, alice, "unread=true&limit=2") == [[4, 3], [1]]
    listing = (await api.client.get("/v1/me/notifications?after=1&limit=1", headers=alice)).json()
    assert listing["items"][0]["read_at"] is not None
    assert listing["items"][0]["read_at"].endswith("Z")


async def test_a_stream_ticket_is_stored_hashed_and_works_once(api: Api, acme: Tenant) -> None:
    """A ticket names its user, expires after ticket_ttl, and is redeemable once (by its hash)."""
    response = await api.client.post("/v1/me/stream-tickets", headers=api.user(acme, "alice"))
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == api.runtime.settings.ticket_ttl
    ticket_hash, now = hash_key(body["ticket"]), api.clock.time()
    assert await api.runtime.store.apps.redeem_ticket(ticket_hash, now) == ("acme", "alice")
    assert await api.runtime.store.apps.redeem_ticket(ticket_hash, now) is None


async def test_a_stream_ticket_expires(api: Api, acme: Tenant) -> None:
    """An unused ticket is worthless after its time to live."""
    response = await api.client.post("/v1/me/stream-tickets", headers=api.user(acme, "alice"))
    later = api.clock.time() + api.runtime.settings.ticket_ttl + 1
    assert await api.runtime.store.apps.redeem_ticket(hash_key(response.json()["ticket"]), later) is None


async def test_user_routes_need_a_token(api: Api) -> None:
    """Every user route answers 401 without credentials."""
    for method, path in [
        ("GET", "/v1/me/notifications"),
        ("GET", "/v1/me/unread-count"),
        ("POST", "/v1/me/notifications/read"),
        ("POST", "/v1/me/notifications/seen"),
        ("POST", "/v1/me/stream-tickets"),
    ]:
        response = await api.client.request(method, path, json={"up_to": 1} if method == "POST" else None)
        assert_error(response, 401, "unauthorized")


async def test_a_page_on_another_origin_may_call_the_user_api(api: Api, acme: Tenant) -> None:
    """CORS: a preflight from any origin is allowed for the bearer header; no cookies are involved."""
    preflight = await api.client.options(
        "/v1/me/unread-count",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers
    answer = await api.client.get(
        "/v1/me/unread-count", headers={**api.user(acme, "alice"), "Origin": "https://app.example"}
    )
    assert answer.headers["access-control-allow-origin"] == "*"

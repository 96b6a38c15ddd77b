"""The life of a notification through the API, the fan-out and live connections over real sockets: the producer
retracts (by cancel key or id), the user archives, marks unread, deletes, filters; every change reaches the
user's live connections as a frame, and bad input changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from api.support import Api, Tenant, assert_error, event, write_inbox
from api.test_read_sync_wire import serving, sse_event, ws_frame
from worker.stack import Stack


def like(actor: str, key: str, **fields: Any) -> dict[str, Any]:
    return event(actor={"id": actor, "name": actor.title()}, cancel_key=key, **fields)


async def send(stack: Stack, *bodies: dict[str, Any]) -> list[str]:
    assert stack.client is not None
    ids = []
    for body in bodies:
        answer = await stack.client.post("/v1/events", json=body, headers=stack.producer)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    await stack.drain()
    return ids


async def listing(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    answer = await client.get("/v1/me/notifications", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_an_unlike_removes_the_notification_from_every_live_connection_and_resumed_stream(
    stack: Stack,
) -> None:
    """Bob unlikes: Alice's WebSocket and SSE connections get ``retract`` with the counts after it, her list
    and counts drop it, and a stream resumed from before it shows the retraction, never the like."""
    client = await stack.open_api()
    await send(stack, like("bob", "like:bob:42", group_key=None))
    token = stack.user("alice")["Authorization"].removeprefix("Bearer ")
    async with serving(stack) as port, connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token, "after": 1}).decode())
        assert (await ws_frame(ws, "ready"))["last_seq"] == 1
        base = f"http://127.0.0.1:{port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as http,
            http.stream("GET", "/v1/stream?after=1", headers=stack.user("alice")) as sse,
        ):
            lines = sse.aiter_lines()
            assert (await sse_event(lines, "ready"))["last_seq"] == 1
            answer = await client.post(
                "/v1/events/cancel", json={"cancel_keys": ["like:bob:42"]}, headers=stack.producer
            )
            assert (answer.status_code, answer.json()) == (202, {"retracted": 1})
            expected = {"type": "retract", "seqs": [1], "unread": 0, "unseen": 0}
            assert await ws_frame(ws, "retract") == expected
            assert await sse_event(lines, "retract") == expected
        async with connect(f"ws://127.0.0.1:{port}/v1/ws") as again:  # a phone that was offline, from 0
            await again.send(orjson.dumps({"type": "auth", "token": token, "after": 0}).decode())
            assert (await ws_frame(again, "ready"))["last_seq"] == 2
            first = orjson.loads(await again.recv())
            assert first == expected  # seq 1 is never shown; the marker at seq 2 says it is gone
    body = await listing(client, stack.user("alice"))
    assert (body["items"], body["counts"]) == ([], {"unread": 0, "unseen": 0, "archived": 0})


async def test_an_unlike_re_renders_the_aggregate_without_the_actor(stack: Stack) -> None:
    """ "Bob and Ann liked your post" becomes "Ann liked your post", as a new seq that replaces it."""
    client = await stack.open_api()
    await send(stack, like("ann", "like:ann:42"), like("bob", "like:bob:42"))
    [before] = (await listing(client, stack.user("alice")))["items"]
    assert ([a["id"] for a in before["actors"]], before["count"]) == (["bob", "ann"], 2)
    stack.live.clear()
    answer = await client.post(
        "/v1/events/cancel", json={"cancel_keys": ["like:bob:42"]}, headers=stack.producer
    )
    assert answer.status_code == 202
    [after] = (await listing(client, stack.user("alice")))["items"]
    assert ([a["id"] for a in after["actors"]], after["count"], after["replaces"]) == (
        ["ann"],
        1,
        before["seq"],
    )
    assert [(m.kind, m.seq) for m in stack.live] == [("notification", after["seq"])]
    assert (await client.get("/v1/me/counts", headers=stack.user("alice"))).json() == {
        "unread": 1,
        "unseen": 1,
        "archived": 0,
    }


async def test_a_cancel_before_the_fan_out_wins_and_is_in_the_decision_log(stack: Stack) -> None:
    client = await stack.open_api()
    answer = await client.post("/v1/events", json=like("bob", "like:bob:42"), headers=stack.producer)
    event_id = answer.json()["id"]
    cancelled = await client.delete(f"/v1/events/{event_id}", headers=stack.producer)
    assert (cancelled.status_code, cancelled.json()) == (202, {"retracted": 0})
    await stack.drain()
    assert (await listing(client, stack.user("alice")))["items"] == []
    assert stack.live == []
    decisions = (await client.get(f"/v1/events/{event_id}/decisions", headers=stack.producer)).json()
    assert [(d["kind"], d["user"]) for d in decisions["items"]] == [("retract", None)]


async def test_state_changes_reach_the_users_other_connections(stack: Stack) -> None:
    client = await stack.open_api()
    await send(stack, event(group_key=None), event(group_key=None, type="comment.added"))
    token = stack.user("alice")["Authorization"].removeprefix("Bearer ")
    async with serving(stack) as port, connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token, "after": 2}).decode())
        await ws_frame(ws, "ready")
        base = f"http://127.0.0.1:{port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as http,
            http.stream("GET", "/v1/stream?after=2", headers=stack.user("alice")) as sse,
        ):
            lines = sse.aiter_lines()
            await sse_event(lines, "ready")
            for action, seqs, unread in [("archive", [1], 1), ("unarchive", [1], 2), ("delete", [2], 1)]:
                answer = await client.post(
                    f"/v1/me/notifications/{action}", json={"seqs": seqs}, headers=stack.user("alice")
                )
                assert answer.json()["updated"] == 1
                expected = {
                    "type": "state",
                    "action": action,
                    "seqs": seqs,
                    "unread": unread,
                    "unseen": unread,
                }
                assert await ws_frame(ws, "state") == expected
                assert await sse_event(lines, "state") == expected


async def test_filters_by_status_category_and_type_with_cursor_paging(stack: Stack) -> None:
    client = await stack.open_api()
    rules = {"types": {"comment.added": {"category": "social"}, "post.liked": {"category": "social"}}}
    assert (await client.put("/v1/rules", json=rules, headers=stack.producer)).status_code == 200
    await send(
        stack,
        *(event(group_key=None) for _ in range(3)),
        event(group_key=None, type="comment.added"),
        event(group_key=None, type="security.alert"),
    )
    alice = stack.user("alice")
    await client.post("/v1/me/notifications/read", json={"seqs": [1]}, headers=alice)
    await client.post("/v1/me/notifications/archive", json={"seqs": [2]}, headers=alice)
    seqs = lambda body: [n["seq"] for n in body["items"]]  # noqa: E731
    body = await listing(client, alice)
    assert (seqs(body), body["counts"]) == ([5, 4, 3, 1], {"unread": 3, "unseen": 4, "archived": 1})
    assert seqs(await listing(client, alice, status="unread")) == [5, 4, 3]
    assert seqs(await listing(client, alice, status="archived")) == [2]
    assert seqs(await listing(client, alice, status="all")) == [5, 4, 3, 2, 1]
    assert seqs(await listing(client, alice, category="social")) == [4, 3, 1]
    assert seqs(await listing(client, alice, category="security.alert")) == [5]  # a type is its own category
    assert seqs(await listing(client, alice, category="social", type="security.alert")) == []
    assert seqs(await listing(client, alice, type="comment.added")) == [4]
    first = await listing(client, alice, category="social", limit=2)
    assert seqs(first) == [4, 3]
    rest = await listing(client, alice, category="social", limit=2, cursor=first["next"])
    assert (seqs(rest), rest["next"]) == ([1], None)
    await client.post("/v1/me/notifications/unread", json={"seqs": [1]}, headers=alice)
    assert seqs(await listing(client, alice, unread="true")) == [5, 4, 3, 1]


async def test_bad_input_is_refused_and_changes_nothing(api: Api, acme: Tenant) -> None:
    await write_inbox(api, acme.name, "alice", 3)
    alice = api.user(acme, "alice")
    before = (await api.client.get("/v1/me/counts", headers=alice)).json()
    cancel = "/v1/events/cancel"
    for body in (
        {},
        {"cancel_keys": []},
        {"cancel_keys": [""]},
        {"cancel_keys": ["k"] * 101},
        {"keys": ["k"]},
    ):
        assert_error(await api.client.post(cancel, json=body, headers=acme.producer), 422)
    assert_error(await api.client.post(cancel, json={"cancel_keys": ["k"]}, headers=alice), 401)
    assert_error(await api.client.delete("/v1/events/" + "x" * 33, headers=acme.producer), 422)
    for action in ("archive", "unarchive", "unread", "delete"):
        path = f"/v1/me/notifications/{action}"
        for body in ({}, {"seqs": []}, {"seqs": [0]}, {"seqs": ["1"]}, {"seqs": [1], "up_to": 3}):
            assert_error(await api.client.post(path, json=body, headers=alice), 422)
        assert_error(await api.client.post(path, json={"seqs": [1]}), 401)
    for params in ({"status": "gone"}, {"category": ""}, {"type": "x" * 101}):
        assert_error(await api.client.get("/v1/me/notifications", params=params, headers=alice), 422)
    assert (await api.client.get("/v1/me/counts", headers=alice)).json() == before
    assert len((await api.client.get("/v1/me/notifications", headers=alice)).json()["items"]) == 3


async def test_a_user_cannot_change_another_users_notifications(api: Api, acme: Tenant) -> None:
    await write_inbox(api, acme.name, "bob", 2)
    answer = await api.client.post(
        "/v1/me/notifications/delete", json={"seqs": [1, 2]}, headers=api.user(acme, "alice")
    )
    assert answer.json() == {"updated": 0, "unread": 0, "unseen": 0, "archived": 0}
    assert (
        len((await api.client.get("/v1/me/notifications", headers=api.user(acme, "bob"))).json()["items"])
        == 2
    )

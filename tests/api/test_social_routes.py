"""The social routes over real embedded backends: preferences, app rules, bulk subscribers, the decision log,
load shedding by priority, and read-sync to every live connection of a user."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from tidings.auth import create_app_record
from tidings.core import frames
from tidings.core.rules import UserPreferences
from tidings.gateway.stream import LiveStream
from worker.stack import OpenStack, Stack, event


def like(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "post.liked",
        "actor": {"id": "bob", "name": "Bob"},
        "recipients": ["alice"],
        "object": {"id": "post:42"},
        "group_key": "post:42:like",
    }
    body.update(fields)
    return body


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


@pytest.fixture
async def api(stack: Stack) -> Stack:
    await stack.open_api()
    return stack


# --- preferences ----------------------------------------------------------------------------------------------


async def test_preferences_round_trip_with_the_apps_defaults(api: Stack) -> None:
    """A user sets switches, mutes and quiet hours, and reads them back beside the app's defaults."""
    assert api.client is not None
    body = {
        "categories": {"post.liked": {"web_push": False}, "comment.created": {"email": True}},
        "mutes": {"actors": ["carol"], "objects": ["post:7"]},
        "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/Paris"},
    }
    put = await api.client.put("/v1/me/preferences", json=body, headers=api.user("alice"))
    assert put.status_code == 200, put.text
    got = (await api.client.get("/v1/me/preferences", headers=api.user("alice"))).json()
    assert {k: got[k] for k in body} == body
    assert got["defaults"]["channels"] == {
        "in_app": True,
        "web_push": True,
        "email": False,
        "webhook": False,
        "mobile_push": False,  # FCM devices (issue 11): off until the app turns it on
    }
    other = (await api.client.get("/v1/me/preferences", headers=api.user("bob"))).json()
    assert other["categories"] == {}
    assert other["quiet_hours"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Olympus"}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "../../../etc/passwd"}},
        {"quiet_hours": {"start": "24:00", "end": "07:00", "time_zone": "UTC"}},
        {"categories": {"post.liked": {"sms": True}}},
        {"categories": {"post.liked": {"email": "yes"}}},
        {"categories": {"Bad Category": {"email": True}}},
        {"mutes": {"actors": ["x"] * 1001}},
        {"unknown": 1},
    ],
)
async def test_bad_preferences_are_refused(api: Stack, body: dict[str, Any]) -> None:
    """Unknown zones (or paths), bad times, unknown channels and oversized lists answer 422."""
    assert api.client is not None
    response = await api.client.put("/v1/me/preferences", json=body, headers=api.user("alice"))
    assert_error(response, 422, "validation_failed")


async def test_preferences_steer_the_fan_out(api: Stack) -> None:
    """After Alice mutes Bob through the API, Bob's like does not reach her; Dan's does."""
    assert api.client is not None
    mutes = {"mutes": {"actors": ["bob"]}}
    assert (
        await api.client.put("/v1/me/preferences", json=mutes, headers=api.user("alice"))
    ).status_code == 200
    for actor in ("bob", "dan"):
        sent = await api.client.post("/v1/events", json=like(actor={"id": actor}), headers=api.producer)
        assert sent.status_code == 202
    await api.drain()
    [shown] = await api.inbox("alice")
    assert [a["id"] for a in shown["actors"]] == ["dan"]


# --- app rules --------------------------------------------------------------------------------------------------


async def test_the_producer_sets_the_apps_rules(api: Stack) -> None:
    """Rules are replaced whole, read back as stored, and apply to the fan-out within the cache time."""
    assert api.client is not None
    rules = {
        "types": {"post.liked": {"category": "likes", "aggregate_window": 0}},
        "categories": {"security": {"critical": True, "channels": {"email": True}}},
        "caps": {"web_push": {"limit": 3, "per": 600}},
    }
    put = await api.client.put("/v1/rules", json=rules, headers=api.producer)
    assert put.status_code == 200, put.text
    got = (await api.client.get("/v1/rules", headers=api.producer)).json()
    assert got["types"]["post.liked"] == {"category": "likes", "aggregate_window": 0.0, "ttl": None}
    assert got["caps"] == {"web_push": {"limit": 3, "per": 600.0}}
    assert got["categories"]["security"]["critical"] is True
    api.clock.advance(5)  # the worker's rules cache
    for _ in range(2):
        await api.client.post("/v1/events", json=like(), headers=api.producer)
    await api.drain()
    assert len(await api.inbox("alice")) == 2  # aggregation off for likes
    assert (await api.client.get("/v1/rules", headers=api.user("alice"))).status_code == 401


async def test_bad_rules_are_refused(api: Stack) -> None:
    """Negative windows, unknown channels and caps of the inbox answer 422."""
    assert api.client is not None
    for rules in (
        {"aggregate_window": -1},
        {"caps": {"in_app": {"limit": 1}}},
        {"types": {"post.liked": {"ttl": 0}}},
        {"channels": {"pigeon": True}},
    ):
        assert_error(
            await api.client.put("/v1/rules", json=rules, headers=api.producer), 422, "validation_failed"
        )


# --- bulk subscribers -------------------------------------------------------------------------------------------


async def test_bulk_import_of_followers_is_idempotent_and_bounded(open_stack: OpenStack) -> None:
    """A list of ids subscribes them all at once; again, nothing changes; over the limit, 422."""
    stack = await open_stack(max_bulk_subscribers=5)
    client = await stack.open_api()
    path = "/v1/topics/followers:bob/subscribers"
    first = await client.put(path, json=["a", "b", "c", "c"], headers=stack.producer)
    assert first.json() == {"topic": "followers:bob", "added": 3, "received": 3}
    again = await client.put(path, json=["a", "b", "c", "d"], headers=stack.producer)
    assert again.json()["added"] == 1
    listed = await client.get(path, headers=stack.producer)
    assert listed.json()["items"] == ["a", "b", "c", "d"]
    assert_error(await client.put(path, json=list("abcdef"), headers=stack.producer), 422, "limit_exceeded")
    for bad in ([], ["ok", ""], ["a\x00b"], {"users": ["a"]}, [1]):
        assert_error(await client.put(path, json=bad, headers=stack.producer), 422, "validation_failed")
    assert (await client.put(path, json=["a"])).status_code == 401


# --- decisions --------------------------------------------------------------------------------------------------


async def test_the_producer_reads_why_each_recipient_got_an_event_or_not(api: Stack) -> None:
    """The decision log of an event, page by page and per user; another app sees nothing of it."""
    assert api.client is not None
    await api.store.preferences.set_user("app1", "carol", _muted("bob"))
    sent = await api.client.post(
        "/v1/events", json=like(recipients=["alice", "carol", "dan"]), headers=api.producer
    )
    event_id = sent.json()["id"]
    await api.drain()
    path = f"/v1/events/{event_id}/decisions"
    first = (await api.client.get(path, params={"limit": 2}, headers=api.producer)).json()
    assert [(d["user"], d["kind"], d["channel"]) for d in first["items"]] == [
        ("alice", "deliver", "in_app"),
        ("alice", "deliver", "web_push"),
    ]
    rest = (await api.client.get(path, params={"cursor": first["next"]}, headers=api.producer)).json()
    assert [(d["user"], d["kind"]) for d in rest["items"]] == [
        ("carol", "suppress"),
        ("dan", "deliver"),
        ("dan", "deliver"),
    ]
    assert rest["items"][0]["reason"] == "muted actor"
    assert rest["next"] is None
    only = (await api.client.get(path, params={"user": "carol"}, headers=api.producer)).json()
    assert [d["user"] for d in only["items"]] == ["carol"]
    record = await _other_app(api)
    foreign = await api.client.get(path, headers={"Authorization": f"Bearer {record}"})
    assert foreign.json() == {"items": [], "next": None}
    assert_error(
        await api.client.get(path, params={"cursor": "!!"}, headers=api.producer), 400, "invalid_input"
    )


def _muted(actor: str) -> UserPreferences:
    return UserPreferences(muted_actors=frozenset({actor}))


async def _other_app(api: Stack) -> str:
    return (await create_app_record(api.store, "other", [], api.clock.time()))["api_key"]


# --- load shedding ------------------------------------------------------------------------------------------------


async def test_low_priority_is_shed_first_when_the_log_falls_behind(open_stack: OpenStack) -> None:
    """Past the first high-water mark low priority gets 503 + Retry-After; past the second, normal too."""
    stack = await open_stack(shed_low_lag=2, shed_normal_lag=4)
    client = await stack.open_api()

    async def post(priority: str) -> httpx.Response:
        return await client.post("/v1/events", json=like(priority=priority), headers=stack.producer)

    for _ in range(3):
        assert (await post("low")).status_code == 202
    stack.clock.advance(1)  # the lag is read again at most once a second
    refused = await post("low")
    assert_error(refused, 503, "overloaded")
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await post("normal")).status_code == 202
    assert (await post("normal")).status_code == 202
    stack.clock.advance(1)
    assert_error(await post("normal"), 503, "overloaded")
    assert (await post("high")).status_code == 202
    batch = await client.post(
        "/v1/events/batch",
        json={"events": [like(priority="high"), like(priority="low")]},
        headers=stack.producer,
    )
    assert batch.status_code == 200
    assert [r.get("error", {}).get("code") for r in batch.json()["results"]] == [None, "overloaded"]
    assert "Retry-After" in batch.headers
    await stack.drain()
    stack.clock.advance(1)
    assert (await post("low")).status_code == 202  # caught up: accepted again


# --- read-sync ---------------------------------------------------------------------------------------------------


def _stream(stack: Stack, transport: str) -> LiveStream:
    encode = (
        (lambda seq, payload: frames.sse_event("notification", payload, id=seq))
        if transport == "sse"
        else (lambda _seq, payload: frames.encode_notification(payload))
    )
    heartbeat = (lambda: frames.sse_comment("ping")) if transport == "sse" else frames.encode_ping
    return LiveStream(stack.runtime, "app1", "alice", transport=transport, encode=encode, heartbeat=heartbeat)


async def _next_frames(stream: LiveStream) -> list[bytes]:
    batches = stream.batches()
    try:
        return await asyncio.wait_for(anext(batches), timeout=5)
    finally:
        await batches.aclose()


async def test_a_read_on_one_device_reaches_every_live_connection_and_cancels_the_push(api: Stack) -> None:
    """Alice reads on her phone: her browser (WS) and her laptop (SSE) get the read frame with the new counts,
    and the pending push of that notification is cancelled."""
    assert api.client is not None
    await api.client.post("/v1/events", json=like(group_key=None), headers=api.producer)
    await api.client.post("/v1/events", json=like(group_key=None), headers=api.producer)
    await api.drain()
    assert len(await api.store.decisions.pending("app1", "alice")) == 2
    ws, sse = _stream(api, "ws"), _stream(api, "sse")
    for stream in (ws, sse):
        await stream.open(after=None)
    read = await api.client.post("/v1/me/notifications/read", json={"seqs": [1]}, headers=api.user("alice"))
    assert read.json() == {"updated": 1}
    [ws_frame] = await _next_frames(ws)
    assert orjson.loads(ws_frame) == {"type": "read", "field": "read", "seqs": [1], "unread": 1, "unseen": 2}
    [sse_frame] = await _next_frames(sse)
    assert sse_frame.startswith(b"event: read\ndata: ")
    assert orjson.loads(sse_frame.split(b"data: ", 1)[1]) == orjson.loads(ws_frame)
    seen = await api.client.post("/v1/me/notifications/seen", json={"up_to": 2}, headers=api.user("alice"))
    assert seen.status_code == 200
    [ws_frame] = await _next_frames(ws)
    assert orjson.loads(ws_frame) == {"type": "read", "field": "seen", "up_to": 2, "unread": 1, "unseen": 0}
    assert await api.store.decisions.pending("app1", "alice") == []
    for stream in (ws, sse):
        await stream.close()


async def test_the_openapi_document_describes_the_social_routes(api: Stack) -> None:
    """/openapi.json documents preferences, rules, bulk subscribers and decisions."""
    assert api.client is not None
    spec = (await api.client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert {"get", "put"} <= set(paths["/v1/me/preferences"])
    assert {"get", "put"} <= set(paths["/v1/rules"])
    assert "put" in paths["/v1/topics/{topic}/subscribers"]
    assert "critical" in paths["/v1/me/preferences"]["put"]["description"]
    assert "aggregate" in paths["/v1/events/{event_id}/decisions"]["get"]["description"]


async def test_an_event_for_many_is_decided_per_recipient(api: Stack) -> None:
    """Ten recipients, one of them muted the actor: nine rows, one suppression (the plan is per user)."""
    await api.store.preferences.set_user("app1", "u3", _muted("bob"))
    users = tuple(f"u{i}" for i in range(10))
    await api.send(event("E1", recipients=users))
    await api.drain()
    assert [len(await api.inbox(u)) for u in users] == [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]

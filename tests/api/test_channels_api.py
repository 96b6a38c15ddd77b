"""The offline channels' routes: push subscriptions, devices, webhooks, profiles, deliveries, unsubscribe."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings.channels.unsubscribe import make_token
from tidings.core.models import ChannelPlan, Event, InboxWrite

from .conftest import OpenApi
from .support import Api, Tenant, assert_error


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def browser_subscription(endpoint: str = "https://push.example.net/s/abc") -> dict[str, object]:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": b64(point), "auth": b64(os.urandom(16))},
    }


async def test_vapid_key_is_made_with_the_app_and_push_subscriptions_round_trip(
    api: Api, acme: Tenant
) -> None:
    stored = await api.runtime.store.outbound.vapid(acme.name, lambda: ("x", "y"), 0.0)
    got = await api.client.get("/v1/push/vapid-public-key", headers=api.user(acme, "alice"))
    assert got.status_code == 200
    assert got.json() == {"public_key": stored[1]}
    assert len(base64.urlsafe_b64decode(stored[1] + "=")) == 65
    alice = api.user(acme, "alice")
    made = await api.client.post("/v1/me/push-subscriptions", json=browser_subscription(), headers=alice)
    assert made.status_code == 201, made.text
    sub_id = made.json()["id"]
    listed = (await api.client.get("/v1/me/push-subscriptions", headers=alice)).json()
    assert [s["id"] for s in listed["items"]] == [sub_id]
    bob = api.user(acme, "bob")
    assert (await api.client.get("/v1/me/push-subscriptions", headers=bob)).json() == {"items": []}
    assert_error(await api.client.delete(f"/v1/me/push-subscriptions/{sub_id}", headers=bob), 404)
    assert (await api.client.delete(f"/v1/me/push-subscriptions/{sub_id}", headers=alice)).status_code == 204


async def test_bad_push_subscriptions_are_refused_and_nothing_is_written(open_api: OpenApi) -> None:
    api = await open_api(production=True)
    acme = await api.tenant("acme")
    alice = api.user(acme, "alice")
    good = browser_subscription()
    bad_point = {**good, "keys": {**good["keys"], "p256dh": b64(b"\x04" + b"\x01" * 64)}}  # type: ignore[dict-item]
    short_auth = {**good, "keys": {**good["keys"], "auth": b64(b"x" * 8)}}  # type: ignore[dict-item]
    for body in (
        bad_point,
        short_auth,
        {**good, "endpoint": "ftp://push.example.net/x"},
        {**good, "extra": 1},
        {"endpoint": good["endpoint"]},
    ):
        assert_error(await api.client.post("/v1/me/push-subscriptions", json=body, headers=alice), 422)
    plain = {**good, "endpoint": "http://push.example.net/s/1"}
    assert_error(await api.client.post("/v1/me/push-subscriptions", json=plain, headers=alice), 400)
    assert await api.runtime.store.outbound.subscriptions("acme", "alice") == []


async def test_devices(api: Api, acme: Tenant) -> None:
    alice = api.user(acme, "alice")
    made = await api.client.post(
        "/v1/me/devices", json={"platform": "android", "token": "tok-1"}, headers=alice
    )
    assert made.status_code == 201
    assert_error(
        await api.client.post("/v1/me/devices", json={"platform": "symbian", "token": "t"}, headers=alice),
        422,
    )
    listed = (await api.client.get("/v1/me/devices", headers=alice)).json()["items"]
    assert [(d["id"], d["platform"]) for d in listed] == [(made.json()["id"], "android")]
    assert (await api.client.delete(f"/v1/me/devices/{made.json()['id']}", headers=alice)).status_code == 204


async def test_webhooks_and_rotation(open_api: OpenApi) -> None:
    api = await open_api(production=True)
    acme = await api.tenant("acme")
    assert_error(
        await api.client.post("/v1/webhooks", json={"url": "http://h.example/x"}, headers=acme.producer), 400
    )
    made = await api.client.post(
        "/v1/webhooks", json={"url": "https://h.example/x", "events": ["post.liked"]}, headers=acme.producer
    )
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["secret"].startswith("whsec_")
    listed = (await api.client.get("/v1/webhooks", headers=acme.producer)).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]
    rotated = await api.client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=acme.producer)
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != hook["secret"]
    [stored] = await api.runtime.store.outbound.webhooks("acme")
    assert stored.secrets == (rotated.json()["secret"], hook["secret"])
    other = await api.tenant("other")
    assert_error(await api.client.delete(f"/v1/webhooks/{hook['id']}", headers=other.producer), 404)
    assert (await api.client.delete(f"/v1/webhooks/{hook['id']}", headers=acme.producer)).status_code == 204


async def test_profiles_and_an_events_deliveries(api: Api, acme: Tenant) -> None:
    body = {"email": "alice@example.org", "locale": "pt-BR", "time_zone": "Europe/Paris", "name": "Alice"}
    put = await api.client.put("/v1/users/alice", json=body, headers=acme.producer)
    assert put.status_code == 200, put.text
    assert put.json() == {"user": "alice", **body}
    for bad in ({"email": "nope"}, {"time_zone": "Mars/Olympus"}, {"locale": "??"}):
        assert_error(await api.client.put("/v1/users/alice", json=bad, headers=acme.producer), 422)
    profile = await api.runtime.store.outbound.profile("acme", "alice")
    assert profile is not None
    assert profile.email == "alice@example.org"
    event = Event(id="E1", app="acme", type="post.liked", accepted_at=0.0, recipients=("alice",))
    await api.runtime.store.inbox.write(
        [InboxWrite("acme", "alice", event, channels=(ChannelPlan("email", "t"),))]
    )
    await api.runtime.store.outbound.claim("s", api.clock.time(), 30.0, 10)
    got = (await api.client.get("/v1/events/E1/deliveries", headers=acme.producer)).json()["items"]
    assert [(d["user"], d["channel"], d["target"], d["status"], d["attempts"]) for d in got] == [
        ("alice", "email", "email", "pending", 1)
    ]


async def test_one_click_unsubscribe(api: Api, acme: Tenant) -> None:
    token = make_token(acme.jwt_secret, "acme", "alice", "post.liked")
    page = await api.client.get(f"/v1/unsubscribe/{token}")
    assert page.status_code == 200
    assert '<form method="post">' in page.text
    assert await api.runtime.store.preferences.user("acme", "alice") is None  # a GET changes nothing
    done = await api.client.post(f"/v1/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click")
    assert done.json() == {"unsubscribed": True, "category": "post.liked"}
    prefs = await api.runtime.store.preferences.user("acme", "alice")
    assert prefs is not None
    assert prefs.categories == {"post.liked": {"email": False}}
    forged = make_token("not-the-secret", "acme", "alice", "post.liked")
    assert_error(await api.client.post(f"/v1/unsubscribe/{forged}"), 404)

"""`tidings serve` runs a sender: an event POSTed to the API reaches a webhook receiver and a Web Push
subscription registered through the API, and the producer sees the deliveries."""

from __future__ import annotations

import asyncio

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from channels.push_service import PushService
from channels.servers import serve

from .conftest import StartServer
from .harness import http_client, wait_until


async def test_serve_sends_webhooks_and_pushes(start_server: StartServer) -> None:
    server = await start_server(env={"egress_allow": "127.0.0.1/32", "sender_poll": "0.1"})
    creds = await server.create_app("acme")
    got: list[dict[str, object]] = []
    secret_box: list[str] = []

    async def receiver(request: web.Request) -> web.Response:
        got.append(Webhook(secret_box[0]).verify(await request.read(), dict(request.headers)))
        return web.Response(status=204)

    async with (
        http_client(server.base_url, token=creds.api_key) as producer,
        http_client(server.base_url, token=creds.token("alice")) as alice,
    ):
        key = (await alice.get("/v1/push/vapid-public-key")).json()["public_key"]
        push = PushService(key)
        async with serve(receiver) as (hook_base, _), serve(push) as (push_base, _):
            rules = {"channels": {"webhook": True, "web_push": True}}
            assert (await producer.put("/v1/rules", json=rules)).status_code == 200
            made = await producer.post("/v1/webhooks", json={"url": hook_base + "/hook"})
            secret_box.append(made.json()["secret"])
            target = push.subscribe(push_base, "s1")
            body = {"endpoint": target.endpoint, "keys": {"p256dh": target.p256dh, "auth": target.auth}}
            assert (await alice.post("/v1/me/push-subscriptions", json=body)).status_code == 201
            await asyncio.sleep(5.5)  # the workers cache an app's rules for 5 seconds
            sent = await producer.post("/v1/events", json={"type": "post.liked", "recipients": ["alice"]})
            event_id = sent.json()["id"]
            assert await wait_until(lambda: bool(got) and bool(push.received), within=20)
        statuses = {}
        for _ in range(50):
            items = (await producer.get(f"/v1/events/{event_id}/deliveries")).json()["items"]
            statuses = {(d["channel"], d["status"]) for d in items}
            if statuses == {("webhook", "sent"), ("web_push", "sent")}:
                break
            await asyncio.sleep(0.1)
        assert statuses == {("webhook", "sent"), ("web_push", "sent")}
    assert got[0]["data"]["user"] == "alice"  # type: ignore[index]
    assert push.refusals == []

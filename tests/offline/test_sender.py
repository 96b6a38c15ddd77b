"""The sender loop against local provider stand-ins: a push service that decrypts, an SMTP server, a webhook
receiver verifying with ``standardwebhooks``, FCM and its token endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from channels.fcm_service import Google, self_signed, service_account
from channels.push_service import PushService
from channels.servers import serve
from channels.smtp_server import smtp_server
from tidings.admin.journey import journey
from tidings.channels.unsubscribe import verify
from tidings.channels.webhook import new_secret
from tidings.core.delivery import Device, Profile, PushSubscription, WebhookEndpoint
from tidings.core.models import App
from tidings.core.rules import CANCEL, AppRules, QuietHours, TypeRule, UserPreferences
from tidings.sender import new_vapid_pair
from tidings.testing import FakeClock

from .support import APP, notify, opened, sender, settings_for, statuses


async def test_web_push_is_encrypted_for_the_subscription_and_read_cancels_the_next(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path)
    async with opened(settings, clock) as store:
        _, public = await store.outbound.vapid(APP, new_vapid_pair, clock.time())
        service = PushService(public)
        async with serve(service) as (base, _):
            target = service.subscribe(base, "s1")
            await store.outbound.add_subscription(
                PushSubscription("s1", APP, "alice", target.endpoint, target.p256dh, target.auth, 1.0)
            )
            first = await notify(store, clock)
            second = await notify(store, clock)
            await store.inbox.mark(APP, "alice", "read", seqs=[2], up_to=None, at=clock.time())
            s = sender(store, settings, clock)
            assert await s.tick() == 1
            await s.close()
        assert service.refusals == []
        [got] = service.received
        assert orjson.loads(got.payload)["seq"] == 1
        assert got.headers["urgency"] == "normal"
        assert await statuses(store, first) == [("push:s1", "sent")]
        # the second was read before any send: its deferred row went away with the read (read-sync)
        assert await statuses(store, second) == []
        kinds = {d.kind for d in await store.decisions.for_event(APP, second, user=None, after=None, limit=9)}
        assert CANCEL in kinds


async def test_a_read_after_the_delivery_was_made_cancels_it_at_the_claim(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path)
    async with opened(settings, clock) as store:
        await store.outbound.add_webhook(
            WebhookEndpoint("h1", APP, "http://127.0.0.1:9/never", (), (new_secret(),), 1.0)
        )
        await store.preferences.set_rules(APP, AppRules(channels={"webhook": True, "web_push": False}))
        event_id = await notify(store, clock)
        # a first claim that gets nowhere (its holder "dies"), then the user reads it
        [held] = await store.outbound.claim("ghost", clock.time(), 5.0, 10)
        await store.inbox.mark(APP, "alice", "read", seqs=[held.seq], up_to=None, at=clock.time())
        clock.advance(10)
        s = sender(store, settings, clock)
        assert await s.tick() == 0
        await s.close()
        assert await statuses(store, event_id) == [("webhook:h1", "cancelled")]


async def test_webhooks_retry_with_the_same_webhook_id_and_verify(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path)
    secret = new_secret()
    seen: list[tuple[str, int]] = []

    async def receiver(request: web.Request) -> web.Response:
        body = await request.read()
        payload = Webhook(secret).verify(body, dict(request.headers))
        seen.append((request.headers["webhook-id"], payload["data"]["notification"]["seq"]))
        return web.Response(status=503 if len(seen) == 1 else 204, headers={"Retry-After": "7"})

    async with opened(settings, clock) as store, serve(receiver) as (base, _):
        await store.preferences.set_rules(APP, AppRules(channels={"webhook": True, "web_push": False}))
        await store.outbound.add_webhook(WebhookEndpoint("h1", APP, base + "/hook", (), (secret,), 1.0))
        event_id = await notify(store, clock)
        s = sender(store, settings, clock)
        assert await s.tick() == 1
        assert await statuses(store, event_id) == [("webhook:h1", "pending")]
        clock.advance(6)
        assert await s.tick() == 0  # Retry-After: 7 is honoured
        clock.advance(2)
        assert await s.tick() == 1
        await s.close()
        assert await statuses(store, event_id) == [("webhook:h1", "sent")]
        found = await journey(store, event_id)  # the admin page's "where is my notification"
        assert found is not None
        [row] = found["inbox"]
        assert [(d["channel"], d["status"], d["attempts"]) for d in row["offline"]] == [
            ("webhook", "sent", 2)
        ]
    assert len(seen) == 2
    assert seen[0] == seen[1]  # the same webhook-id: the receiver can drop a duplicate


async def test_an_email_digest_holds_exactly_the_deferred_notifications(tmp_path: Path) -> None:
    clock = FakeClock()
    with smtp_server() as (port, mailbox):
        settings = settings_for(
            tmp_path,
            smtp_url=f"smtp://127.0.0.1:{port}",
            email_from="Tidings <notify@example.org>",
            public_url="https://notify.example.org",
        )
        async with opened(settings, clock) as store:
            await store.apps.create(App(APP, "h" * 64, "jwt-secret-of-app1", (), 0.0))
            rules = AppRules(channels={"email": True, "web_push": False}, digest_delay=600.0)
            await store.preferences.set_rules(APP, rules)
            await store.outbound.set_profile(Profile(APP, "alice", "alice@example.org", "en", None, "Alice"))
            low = [await notify(store, clock, priority="low") for _ in range(3)]
            s = sender(store, settings, clock)
            assert await s.tick() == 0  # the digest is due later
            clock.advance(601)
            assert await s.tick() == 3
            await s.close()
            for event_id in low:
                assert await statuses(store, event_id) == [("email", "sent")]
    [mail] = mailbox.mails
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.count("Bob commented") == 3
    url = mail["List-Unsubscribe"].strip("<>")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = url.rsplit("/", 1)[1]
    assert verify(token, lambda app: "jwt-secret-of-app1" if app == APP else None).user == "alice"


async def test_quiet_hours_defer_pushes_to_their_end(tmp_path: Path) -> None:
    clock = FakeClock(1_790_000_000.0 - 1_790_000_000.0 % 86400 + 23 * 3600)  # 23:00 UTC
    with smtp_server() as (port, mailbox):
        settings = settings_for(tmp_path, smtp_url=f"smtp://127.0.0.1:{port}", email_from="n@example.org")
        async with opened(settings, clock) as store:
            await store.preferences.set_rules(APP, AppRules(channels={"email": True, "web_push": False}))
            await store.outbound.set_profile(Profile(APP, "alice", "alice@example.org"))
            quiet = UserPreferences(quiet_hours=QuietHours(22 * 60, 7 * 60, "UTC"))
            event_id = await notify(store, clock, prefs=quiet)
            s = sender(store, settings, clock)
            assert await s.tick() == 0
            clock.advance(8 * 3600 - 1)  # 06:59:59
            assert await s.tick() == 0
            clock.advance(1)
            assert await s.tick() == 1
            await s.close()
            assert await statuses(store, event_id) == [("email", "sent")]
    assert len(mailbox.mails) == 1


async def test_gone_removes_the_target_and_an_unconfigured_channel_fails_clearly(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path)
    async with opened(settings, clock) as store:
        _, public = await store.outbound.vapid(APP, new_vapid_pair, clock.time())
        service = PushService(public)
        async with serve(service) as (base, _):
            target = service.subscribe(base, "s1")
            service.answers["s1"] = (410, {})
            await store.outbound.add_subscription(
                PushSubscription("s1", APP, "alice", target.endpoint, target.p256dh, target.auth, 1.0)
            )
            await store.preferences.set_rules(APP, AppRules(channels={"email": True}))
            await store.outbound.set_profile(Profile(APP, "alice", "alice@example.org"))
            event_id = await notify(store, clock)
            s = sender(store, settings, clock)
            assert await s.tick() == 2
            await s.close()
        records = {r.target: r for r in await store.outbound.for_event(APP, event_id, 10)}
        assert records["push:s1"].status == "failed"
        assert "410" in (records["push:s1"].last_error or "")
        assert await store.outbound.subscriptions(APP, "alice") == []
        assert records["email"].status == "failed"
        assert "TIDINGS_SMTP_URL" in (records["email"].last_error or "")


async def test_a_notification_past_its_ttl_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path)
    async with opened(settings, clock) as store:
        rules = AppRules(
            channels={"webhook": True, "web_push": False}, types={"comment": TypeRule(None, None, 60.0)}
        )
        await store.preferences.set_rules(APP, rules)
        await store.outbound.add_webhook(
            WebhookEndpoint("h1", APP, "http://127.0.0.1:9/", (), (new_secret(),), 1.0)
        )
        event_id = await notify(store, clock, priority="low")  # a digest, due after digest_delay
        clock.advance(3601)
        s = sender(store, settings, clock)
        assert await s.tick() == 1
        await s.close()
        assert await statuses(store, event_id) == [("webhook:h1", "expired")]


async def test_mobile_push_through_fcm(tmp_path: Path) -> None:
    clock = FakeClock()
    server_ctx, _ = self_signed(tmp_path)
    fake = Google()
    async with serve(fake, ssl_context=server_ctx) as (base, _):
        info, public = service_account(base + "/token")
        fake.public_key, fake.client_email, fake.token_uri = public, info["client_email"], info["token_uri"]
        key_file = tmp_path / "sa.json"
        key_file.write_text(json.dumps(info))
        settings = settings_for(
            tmp_path, fcm_credentials=str(key_file), fcm_api_base=base, fcm_ca_file=str(tmp_path / "cert.pem")
        )
        async with opened(settings, clock) as store:
            await store.preferences.set_rules(
                APP, AppRules(channels={"mobile_push": True, "web_push": False})
            )
            await store.outbound.add_device(Device("d1", APP, "alice", "android", "tok-1", 1.0))
            await store.outbound.add_device(Device("d2", APP, "alice", "ios", "gone", 1.0))
            event_id = await notify(store, clock)
            s = sender(store, settings, clock)
            assert await s.tick() == 2
            await s.close()
            assert sorted(await statuses(store, event_id)) == [("device:d1", "sent"), ("device:d2", "failed")]
            assert [d.id for d in await store.outbound.devices(APP, "alice")] == ["d1"]
    assert fake.problems == []
    assert [m["token"] for m in fake.messages] == ["tok-1", "gone"]


async def test_the_admin_snapshot_shows_outcomes_and_disabled_webhooks(tmp_path: Path) -> None:
    from tidings.observability import metrics
    from tidings.observability.snapshot import snapshot

    clock = FakeClock()
    settings = settings_for(tmp_path, webhook_retry_schedule="1")
    async with opened(settings, clock) as store:
        await store.preferences.set_rules(APP, AppRules(channels={"webhook": True, "web_push": False}))
        hook = WebhookEndpoint("h1", APP, "http://127.0.0.1:9/refused", (), (new_secret(),), 1.0)
        await store.outbound.add_webhook(hook)
        before = metrics.offline_sends_total.labels("webhook", "dead")._value.get()
        await notify(store, clock)
        s = sender(store, settings, clock)
        await s.tick()  # refused connection: retry
        clock.advance(90_000)
        await s.tick()  # out of attempts: dead, and the endpoint has failed for over a day: disabled
        assert metrics.offline_sends_total.labels("webhook", "dead")._value.get() - before == 1
        [stored] = await store.outbound.webhooks(APP)
        assert stored.disabled
        later = await notify(store, clock)
        clock.advance(10)
        assert await s.tick() == 0  # a disabled endpoint gets nothing
        await s.close()
        kinds = {
            (d.kind, d.channel)
            for d in await store.decisions.for_event(APP, later, user=None, after=None, limit=9)
        }
        assert ("cancel", "webhook") in kinds
    offline = snapshot()["offline"]
    assert offline["webhooks_disabled"] == 1
    assert offline["dead_letters"] == 1
    assert offline["sends"]["dead"] >= 1

"""Rotated and deleted credentials through the API, on the injected clock (no sleeps): the old API key and
the old JWT secret work until their grace ends and never after; a deleted app's key and tokens are refused
once the app cache's entry (``auth.APP_CACHE_TTL``) has lapsed."""

from __future__ import annotations

from tidings import auth
from tidings.auth import APP_CACHE_TTL, mint_user_token, rotate_key, rotate_secret
from tidings.core.models import App

from .support import Api, Tenant

HOUR = 3600.0


def producer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def user_with(app: Tenant, secret: str, api: Api) -> dict[str, str]:
    token = mint_user_token(App(app.name, "", secret), "alice", HOUR * 48, api.clock.time())
    return {"Authorization": f"Bearer {token}"}


async def status(api: Api, path: str, headers: dict[str, str]) -> int:
    return (await api.client.get(path, headers=headers)).status_code


async def test_the_old_key_works_during_the_grace_and_not_after(api: Api, acme: Tenant) -> None:
    assert await status(api, "/v1/webhooks", acme.producer) == 200  # cached before the rotation
    new = await rotate_key(api.runtime.store, "acme", HOUR, api.clock.time())
    new_key = str(new["api_key"])
    assert new["previous_key_until"] == api.clock.time() + HOUR
    assert await status(api, "/v1/webhooks", producer(new_key)) == 200
    api.clock.advance(HOUR - 1)
    assert await status(api, "/v1/webhooks", acme.producer) == 200
    api.clock.advance(1)
    response = await api.client.get("/v1/webhooks", headers=acme.producer)
    assert response.status_code == 401
    assert "grace period is over" in response.json()["error"]["message"]
    assert await status(api, "/v1/webhooks", producer(new_key)) == 200


async def test_a_zero_grace_ends_the_old_key_at_once_even_when_cached(api: Api, acme: Tenant) -> None:
    assert await status(api, "/v1/webhooks", acme.producer) == 200
    await rotate_key(api.runtime.store, "acme", 0.0, api.clock.time())
    api.clock.advance(APP_CACHE_TTL)  # the cached record (from before the rotation) lapses
    assert await status(api, "/v1/webhooks", acme.producer) == 401


async def test_tokens_of_either_secret_work_during_the_overlap_then_only_the_new(
    api: Api, acme: Tenant
) -> None:
    old = user_with(acme, acme.jwt_secret, api)
    assert await status(api, "/v1/me/unread-count", old) == 200  # the app record is now cached
    rotated = await rotate_secret(api.runtime.store, "acme", HOUR, api.clock.time())
    new = user_with(acme, str(rotated["jwt_secret"]), api)
    # Signed with a secret newer than the cached record: the record is read again at once.
    assert await status(api, "/v1/me/unread-count", new) == 200
    assert await status(api, "/v1/me/unread-count", old) == 200
    api.clock.advance(HOUR)
    assert await status(api, "/v1/me/unread-count", old) == 401
    assert await status(api, "/v1/me/unread-count", new) == 200


async def test_a_token_of_a_secret_replaced_twice_is_refused(api: Api, acme: Tenant) -> None:
    old = user_with(acme, acme.jwt_secret, api)
    await rotate_secret(api.runtime.store, "acme", HOUR, api.clock.time())
    latest = await rotate_secret(api.runtime.store, "acme", HOUR, api.clock.time())
    assert await status(api, "/v1/me/unread-count", old) == 401
    assert await status(api, "/v1/me/unread-count", user_with(acme, str(latest["jwt_secret"]), api)) == 200


async def test_a_deleted_apps_key_and_tokens_are_refused(api: Api, acme: Tenant) -> None:
    token = api.user(acme, "alice")
    assert await status(api, "/v1/webhooks", acme.producer) == 200
    assert await status(api, "/v1/me/unread-count", token) == 200
    assert await api.runtime.store.apps.delete("acme")
    api.clock.advance(APP_CACHE_TTL)  # how stale a running server may be, at most
    assert await status(api, "/v1/webhooks", acme.producer) == 401
    assert await status(api, "/v1/me/unread-count", token) == 401


def test_the_summary_shows_no_secret() -> None:
    app = App("acme", "h" * 64, "secret", ("https://a.example",), 1.0, "p" * 64, 10.0, "old-secret", 5.0)
    summary = auth.app_summary(app, now=7.0)
    assert summary == {
        "app": "acme",
        "origins": ["https://a.example"],
        "created_at": 1.0,
        "previous_key_until": 10.0,
        "previous_secret_until": None,  # its overlap ended at 5.0
    }
    assert "secret" not in str(summary.values())
    assert "h" * 64 not in str(summary)


async def test_unsubscribe_links_of_the_old_secret_work_during_the_overlap(api: Api, acme: Tenant) -> None:
    """One-click unsubscribe links are signed with the app's secret: those already mailed keep working
    while the rotation's overlap lasts, then answer 404 like any invalid link."""
    from tidings.channels.unsubscribe import make_token

    old_link = "/v1/unsubscribe/" + make_token(acme.jwt_secret, "acme", "alice", "comment")
    rotated = await rotate_secret(api.runtime.store, "acme", HOUR, api.clock.time())
    new_link = "/v1/unsubscribe/" + make_token(str(rotated["jwt_secret"]), "acme", "alice", "comment")
    assert (await api.client.post(old_link)).status_code == 200
    assert (await api.client.post(new_link)).status_code == 200
    api.clock.advance(HOUR)
    assert (await api.client.post(old_link)).status_code == 404
    assert (await api.client.post(new_link)).status_code == 200


async def test_admin_routes_list_rotate_and_delete(api: Api, acme: Tenant) -> None:
    """The admin API does what `tidings apps` does: list without secrets, rotate with a grace, delete."""
    from .support import ADMIN_TOKEN

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    rotated = await api.client.post("/v1/apps/acme/rotate-key?grace_seconds=60", headers=admin)
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["api_key"]
    secret = await api.client.post("/v1/apps/acme/rotate-secret", headers=admin)
    assert secret.json()["previous_secret_until"] == api.clock.time() + 86400
    listing = await api.client.get("/v1/apps", headers=admin)
    assert listing.json() == {
        "apps": [
            {
                "app": "acme",
                "origins": [],
                "created_at": acme.app.created_at,
                "previous_key_until": api.clock.time() + 60,
                "previous_secret_until": api.clock.time() + 86400,
            }
        ]
    }
    assert await status(api, "/v1/webhooks", acme.producer) == 200
    api.clock.advance(60)
    assert await status(api, "/v1/webhooks", acme.producer) == 401
    assert await status(api, "/v1/webhooks", producer(new_key)) == 200
    assert (await api.client.delete("/v1/apps/acme", headers=admin)).json() == {
        "app": "acme",
        "deleted": True,
    }
    assert (await api.client.delete("/v1/apps/acme", headers=admin)).status_code == 404
    assert (await api.client.post("/v1/apps/nobody/rotate-key", headers=admin)).status_code == 404
    assert (await api.client.get("/v1/apps")).status_code == 401
    api.clock.advance(APP_CACHE_TTL)
    assert await status(api, "/v1/webhooks", producer(new_key)) == 401

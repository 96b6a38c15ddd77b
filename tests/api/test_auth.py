"""Credentials: API keys, user JWTs (only HS256, signed by the app that ``iss`` names), the admin token,
and the isolation they give between apps and between users."""

from __future__ import annotations

import base64
import json
import warnings
from typing import Any

import jwt
import pytest

from tidings.auth import AppCache, authenticate_user, hash_key
from tidings.core.models import App
from tidings.errors import AUTH_REASONS, AuthError
from tidings.testing import FakeClock

from .conftest import OpenApi
from .support import ADMIN_TOKEN, Api, Tenant, assert_error, event, write_inbox


def b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def claims(api: Api, tenant: Tenant, **changes: Any) -> dict[str, Any]:
    now = api.clock.time()
    base: dict[str, Any] = {"iss": tenant.name, "sub": "alice", "aud": "tidings", "exp": int(now) + 600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], key: str, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short test keys for HS512 make PyJWT warn
        return jwt.encode(payload, key, algorithm=algorithm)


def bad_tokens(api: Api, acme: Tenant, other: Tenant) -> dict[str, str]:
    good = claims(api, acme)
    return {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(good)}.",
        "HS512": signed(good, acme.jwt_secret, "HS512"),
        "RS256-shaped": f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(good)}.{b64({'sig': 1})}",
        "expired": signed(claims(api, acme, exp=int(api.clock.time()) - 1), acme.jwt_secret),
        "no exp": signed(claims(api, acme, exp=None), acme.jwt_secret),
        "exp not a number": signed(claims(api, acme, exp="tomorrow"), acme.jwt_secret),
        "not yet valid": signed(claims(api, acme, nbf=int(api.clock.time()) + 60), acme.jwt_secret),
        "wrong aud": signed(claims(api, acme, aud="someone-else"), acme.jwt_secret),
        "no aud": signed(claims(api, acme, aud=None), acme.jwt_secret),
        "no sub": signed(claims(api, acme, sub=None), acme.jwt_secret),
        "empty sub": signed(claims(api, acme, sub=""), acme.jwt_secret),
        "sub too long": signed(claims(api, acme, sub="u" * 256), acme.jwt_secret),
        "other app's secret": signed(good, other.jwt_secret),
        "unknown iss": signed(claims(api, acme, iss="nobody"), acme.jwt_secret),
        "no iss": signed(claims(api, acme, iss=None), acme.jwt_secret),
        "garbage": "not.a.jwt",
        "empty segments": "..",
    }


# Each bad token and the check its 401 names (the body's code): what the developer has to fix.
TOKEN_CASES = {
    "alg none": "algorithm_not_allowed",
    "HS512": "algorithm_not_allowed",
    "RS256-shaped": "algorithm_not_allowed",
    "expired": "token_expired",
    "no exp": "missing_claim",
    "exp not a number": "invalid_claim",
    "not yet valid": "token_not_yet_valid",
    "wrong aud": "wrong_audience",
    "no aud": "missing_claim",
    "no sub": "missing_claim",
    "empty sub": "invalid_claim",
    "sub too long": "invalid_claim",
    "other app's secret": "bad_signature",
    "unknown iss": "bad_signature",  # the same answer as a wrong secret: app names cannot be probed
    "no iss": "missing_claim",
    "garbage": "malformed_token",
    "empty segments": "malformed_token",
}


@pytest.mark.parametrize("case", TOKEN_CASES)
async def test_bad_user_tokens_are_refused(api: Api, acme: Tenant, case: str) -> None:
    """Every kind of forged, stale or foreign token answers 401 with WWW-Authenticate, and so does the
    function the live gateway uses."""
    token = bad_tokens(api, acme, await api.tenant("other"))[case]
    response = await api.client.get("/v1/me/unread-count", headers={"Authorization": f"Bearer {token}"})
    error = assert_error(response, 401, TOKEN_CASES[case])
    assert token not in error["message"]
    assert acme.jwt_secret not in response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(AuthError) as refused:
        await authenticate_user(api.runtime, token)
    assert refused.value.code == "unauthorized"  # what the WebSocket error frame says, unchanged
    assert refused.value.reason == TOKEN_CASES[case]
    assert refused.value.reason in AUTH_REASONS


async def test_an_expired_token_is_told_apart_from_a_forged_one(api: Api, acme: Tenant) -> None:
    """``token_expired`` means "mint a new one"; nothing else answers with it."""
    headers = api.user(acme, "alice", ttl=60)
    api.clock.advance(61)
    expired = assert_error(await api.client.get("/v1/me/unread-count", headers=headers), 401)
    assert expired["code"] == "token_expired"
    assert "expired" in expired["message"]


async def test_a_good_token_expires_on_the_runtime_clock(api: Api, acme: Tenant) -> None:
    """A token works until its exp, by the server's clock, and not after."""
    headers = api.user(acme, "alice", ttl=60)
    assert (await api.client.get("/v1/me/unread-count", headers=headers)).status_code == 200
    api.clock.advance(61)
    assert_error(await api.client.get("/v1/me/unread-count", headers=headers), 401)
    app, user = await authenticate_user(api.runtime, api.user(acme, "bob")["Authorization"][7:])
    assert (app.name, user) == ("acme", "bob")


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-key", "Bearer tdk_wrong"],
)
async def test_producer_routes_need_a_valid_api_key(
    api: Api, acme: Tenant, authorization: str | None
) -> None:
    """Without a valid API key nothing is accepted: 401 with WWW-Authenticate."""
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await api.client.post("/v1/events", json=event(), headers=headers)
    assert_error(response, 401, "unauthorized")
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert await api.lag() == 0


async def test_a_user_token_is_not_an_api_key_and_vice_versa(api: Api, acme: Tenant) -> None:
    """A user cannot send events, and a producer key cannot read an inbox."""
    user = await api.client.post("/v1/events", json=event(), headers=api.user(acme, "alice"))
    error = assert_error(user, 401, "wrong_credential_kind")
    assert "this route takes an API key" in error["message"]
    producer = await api.client.get("/v1/me/notifications", headers=acme.producer)
    error = assert_error(producer, 401, "wrong_credential_kind")
    assert "this route takes a user token" in error["message"]
    assert acme.api_key not in producer.text


async def test_api_keys_are_stored_hashed(api: Api, acme: Tenant) -> None:
    """The store holds only the SHA-256 of an API key, never the key."""
    assert acme.app.api_key_hash == hash_key(acme.api_key)
    assert acme.api_key not in repr(await api.runtime.store.apps.get("acme"))


async def test_admin_creates_apps(api: Api) -> None:
    """With the admin token, POST /v1/apps creates a usable app once; the name then conflicts."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"name": "newco", "origins": ["https://App.Example.com", "http://localhost:3000"]}
    created = await api.client.post("/v1/apps", json=body, headers=admin)
    assert created.status_code == 201
    record = created.json()
    assert set(record) == {"app", "api_key", "jwt_secret"}
    app = await api.runtime.store.apps.get("newco")
    assert app is not None
    assert app.origins == ("https://app.example.com", "http://localhost:3000")
    headers = {"Authorization": f"Bearer {record['api_key']}"}
    assert (await api.client.post("/v1/events", json=event(), headers=headers)).status_code == 202
    assert_error(await api.client.post("/v1/apps", json=body, headers=admin), 409, "app_exists")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Bad Name"},
        {"name": "-leading"},
        {"name": "x" * 65},
        {"name": "ok", "origins": ["https://example.com/path"]},
        {"name": "ok", "origins": ["ftp://example.com"]},
        {"name": "ok", "origins": ["https://example.com:99999"]},
        {"name": "ok", "origins": ["*"]},
        {"name": "ok", "extra": 1},
    ],
)
async def test_admin_refuses_bad_app_definitions(api: Api, body: dict[str, Any]) -> None:
    """Bad names and origins (scheme://host[:port] only) answer 422 and create nothing."""
    response = await api.client.post(
        "/v1/apps", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert_error(response, 422, "validation_failed")
    assert await api.runtime.store.apps.get("ok") is None


async def test_admin_routes_need_the_admin_token(api: Api, acme: Tenant) -> None:
    """A wrong token, an API key or none at all answer 401."""
    for headers in ({}, {"Authorization": "Bearer wrong"}, acme.producer):
        response = await api.client.post("/v1/apps", json={"name": "x"}, headers=headers)
        assert_error(response, 401)


async def test_admin_routes_are_off_without_a_token(open_api: OpenApi) -> None:
    """With no admin token configured, /v1/apps answers 404 whatever is sent."""
    api = await open_api(admin_token="")
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
        response = await api.client.post("/v1/apps", json={"name": "x"}, headers=headers)
        assert_error(response, 404)


async def test_apps_never_see_each_others_topics(api: Api, acme: Tenant) -> None:
    """App A's key lists and changes only app A's topics, even for the same topic name."""
    other = await api.tenant("other")
    await api.client.put("/v1/topics/followers:bob/subscribers/alice", headers=acme.producer)
    await api.client.put("/v1/topics/followers:bob/subscribers/zed", headers=other.producer)
    mine = await api.client.get("/v1/topics/followers:bob/subscribers", headers=acme.producer)
    theirs = await api.client.get("/v1/topics/followers:bob/subscribers", headers=other.producer)
    assert (mine.json()["items"], theirs.json()["items"]) == (["alice"], ["zed"])
    removed = await api.client.delete("/v1/topics/followers:bob/subscribers/zed", headers=acme.producer)
    assert removed.json()["changed"] is False
    assert await api.runtime.store.topics.page("other", "followers:bob", None, 10) == ["zed"]


async def test_users_only_ever_read_their_own_inbox(api: Api, acme: Tenant) -> None:
    """Alice's token lists, counts and marks Alice's notifications only; Bob's inbox is untouched."""
    await write_inbox(api, "acme", "bob", 2)
    await write_inbox(api, "other", "alice", 1)
    alice = api.user(acme, "alice")
    assert (await api.client.get("/v1/me/notifications", headers=alice)).json()["items"] == []
    assert (await api.client.get("/v1/me/unread-count", headers=alice)).json() == {"unread": 0, "unseen": 0}
    marked = await api.client.post("/v1/me/notifications/read", json={"up_to": 100}, headers=alice)
    assert marked.json() == {"updated": 0}
    assert await api.runtime.store.inbox.counts("acme", "bob") == (2, 2)
    assert await api.runtime.store.inbox.counts("other", "alice") == (1, 1)


def test_the_app_cache_forgets_after_its_ttl() -> None:
    """A cached app is served for ttl seconds only, and the cache never grows past its bound."""
    clock = FakeClock()
    cache = AppCache(clock, ttl=5.0, max_entries=2)
    app = App("acme", "hash", "secret")
    cache.put("a", app)
    clock.advance(4.9)
    assert cache.get("a") is app
    clock.advance(0.2)
    assert cache.get("a") is None
    for key in "bcd":
        cache.put(key, app)
    assert cache.get("b") is None
    assert cache.get("d") is app

"""A user's data on request over the real API (embedded backends): ``DELETE /v1/users/{id}`` erases and answers
202 (twice), ``GET /v1/users/{id}/export`` returns each kind of data, both are in the decision log with the app
that asked, another app's key reaches nothing, bad input is a 4xx; retention limits in ``/v1/rules``."""

from __future__ import annotations

from typing import Any

from tidings.core.models import Event, InboxWrite

from .support import Api, Tenant, assert_error
from .test_channels_api import browser_subscription


async def _alice_everywhere(api: Api, acme: Tenant) -> list[str]:
    """Alice's profile, preferences, a push subscription and two notifications, through the API where it can;
    returns the subscription's secrets (its keys)."""
    client = api.client
    put = await client.put("/v1/users/alice", headers=acme.producer, json={"email": "alice@example.org"})
    assert put.status_code == 200, put.text
    prefs = {"categories": {}, "mutes": {"actors": ["mallory"], "objects": []}, "quiet_hours": None}
    assert (
        await client.put("/v1/me/preferences", headers=api.user(acme, "alice"), json=prefs)
    ).status_code == 200
    sub = browser_subscription("https://push.example/secret-path")
    keys = sub["keys"]
    assert isinstance(keys, dict)
    answer = await client.post("/v1/me/push-subscriptions", headers=api.user(acme, "alice"), json=sub)
    assert answer.status_code in (200, 201), answer.text
    for i in range(2):
        event = Event(id=f"e{i}", app=acme.name, type="post.liked", accepted_at=0.0, recipients=("alice",))
        await api.runtime.store.inbox.write([InboxWrite(acme.name, "alice", event)])
    return [keys["p256dh"], keys["auth"]]


async def _audit(api: Api, acme: Tenant, request: str) -> dict[str, Any]:
    answer = await api.client.get(f"/v1/events/{request}/decisions", headers=acme.producer)
    assert answer.status_code == 200, answer.text
    [entry] = answer.json()["items"]
    return dict(entry)


async def test_delete_erases_the_user_answers_202_and_again_202(api: Api, acme: Tenant) -> None:
    await _alice_everywhere(api, acme)
    first = await api.client.delete("/v1/users/alice", headers=acme.producer)
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["user"] == "alice"
    assert body["erased"]["inbox"] == 2
    assert (
        body["erased"]["profile"]
        == body["erased"]["preferences"]
        == body["erased"]["push_subscriptions"]
        == 1
    )
    mine = await api.client.get("/v1/me/notifications", headers=api.user(acme, "alice"))
    assert mine.json()["items"] == []
    export = (await api.client.get("/v1/users/alice/export", headers=acme.producer)).json()
    assert export["profile"] is None
    assert export["preferences"] is None
    assert export["inbox"]["notifications"] == []
    assert export["push_subscriptions"] == []
    second = await api.client.delete("/v1/users/alice", headers=acme.producer)
    assert second.status_code == 202, second.text
    assert set(second.json()["erased"].values()) == {0}
    assert second.json()["request"] != body["request"]


async def test_erasure_and_export_are_in_the_decision_log_with_the_app_that_asked(
    api: Api, acme: Tenant
) -> None:
    await _alice_everywhere(api, acme)
    exported = (await api.client.get("/v1/users/alice/export", headers=acme.producer)).json()
    erased = (await api.client.delete("/v1/users/alice", headers=acme.producer)).json()
    export_entry = await _audit(api, acme, exported["request"])
    erase_entry = await _audit(api, acme, erased["request"])
    assert (export_entry["kind"], export_entry["user"]) == ("export", "alice")
    assert (erase_entry["kind"], erase_entry["user"]) == ("erase", "alice")
    assert erase_entry["detail"]["by"] == {"app": "acme"}
    assert erase_entry["detail"]["erased"]["inbox"] == 2
    again = (await api.client.delete("/v1/users/alice", headers=acme.producer)).json()
    assert (await _audit(api, acme, erased["request"]))["kind"] == "erase"  # a later erasure keeps the entry
    assert (await _audit(api, acme, again["request"]))["detail"]["erased"]["inbox"] == 0


async def test_export_returns_each_kind_of_data_without_secrets(api: Api, acme: Tenant) -> None:
    secrets = await _alice_everywhere(api, acme)
    await api.runtime.store.topics.subscribe(acme.name, "followers:bob", "alice")
    answer = await api.client.get("/v1/users/alice/export", headers=acme.producer)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["user"] == "alice"
    assert data["profile"]["email"] == "alice@example.org"
    assert data["preferences"]["mutes"]["actors"] == ["mallory"]
    assert [n["seq"] for n in data["inbox"]["notifications"]] == [2, 1]
    assert [s["endpoint_origin"] for s in data["push_subscriptions"]] == ["https://push.example"]
    assert data["topics"] == ["followers:bob"]
    assert "secret-path" not in answer.text
    for secret in secrets:
        assert secret not in answer.text


async def test_another_apps_key_reaches_nothing_of_this_apps_user(api: Api, acme: Tenant) -> None:
    await _alice_everywhere(api, acme)
    globex = await api.tenant("globex")
    assert (await api.client.delete("/v1/users/alice", headers=globex.producer)).json()["erased"][
        "inbox"
    ] == 0
    assert (await api.client.get("/v1/users/alice/export", headers=globex.producer)).json()["profile"] is None
    mine = await api.client.get("/v1/me/notifications", headers=api.user(acme, "alice"))
    assert len(mine.json()["items"]) == 2


async def test_bad_requests_are_refused_and_change_nothing(api: Api, acme: Tenant) -> None:
    await _alice_everywhere(api, acme)
    assert_error(await api.client.delete("/v1/users/alice"), 401)
    assert_error(await api.client.delete("/v1/users/alice", headers=api.user(acme, "alice")), 401)
    assert_error(await api.client.get("/v1/users/alice/export"), 401)
    assert_error(await api.client.delete("/v1/users/al%01ice", headers=acme.producer), 422)
    assert_error(await api.client.delete("/v1/users/" + "a" * 256, headers=acme.producer), 422)
    assert_error(await api.client.get("/v1/users/" + "a" * 256 + "/export", headers=acme.producer), 422)
    mine = await api.client.get("/v1/me/notifications", headers=api.user(acme, "alice"))
    assert len(mine.json()["items"]) == 2


async def test_retention_limits_round_trip_in_the_rules_and_bad_ones_are_refused(
    api: Api, acme: Tenant
) -> None:
    rules = {"retention": {"max_age": 86400.0, "max_count": 500}}
    put = await api.client.put("/v1/rules", headers=acme.producer, json=rules)
    assert put.status_code == 200, put.text
    got = (await api.client.get("/v1/rules", headers=acme.producer)).json()
    assert got["retention"] == {"max_age": 86400.0, "max_count": 500}
    stored = await api.runtime.store.preferences.rules(acme.name)
    assert stored is not None
    assert (stored.retention_max_age, stored.retention_max_count) == (86400.0, 500)
    for bad in ({"max_count": -1}, {"max_age": -5}, {"max_count": "many"}, {"keep": 3}):
        assert_error(await api.client.put("/v1/rules", headers=acme.producer, json={"retention": bad}), 422)
    assert (await api.client.get("/v1/rules", headers=acme.producer)).json()["retention"]["max_count"] == 500
    assert (await api.client.get("/v1/rules", headers=api.user(acme, "alice"))).status_code == 401


async def test_an_erased_user_leaves_the_aggregates_they_acted_in(api: Api, acme: Tenant) -> None:
    """ "Alice and Carol liked your post" becomes "Carol liked your post" for Bob when Alice is erased."""
    for i, actor in enumerate(("carol", "alice")):
        event = Event(
            id=f"like{i}",
            app=acme.name,
            type="post.liked",
            accepted_at=float(i),
            recipients=("bob",),
            actor={"id": actor, "name": actor.title()},
            group_key="post:1",
        )
        await api.runtime.store.inbox.write([InboxWrite(acme.name, "bob", event, aggregate_window=3600.0)])
    before = (await api.client.get("/v1/me/notifications", headers=api.user(acme, "bob"))).json()["items"]
    assert [(n["count"], [a["id"] for a in n["actors"]]) for n in before] == [(2, ["alice", "carol"])]

    answer = await api.client.delete("/v1/users/alice", headers=acme.producer)
    assert answer.status_code == 202, answer.text
    assert answer.json()["actors_scrubbed"] == 1
    after = (await api.client.get("/v1/me/notifications", headers=api.user(acme, "bob"))).json()["items"]
    assert [(n["count"], [a["id"] for a in n["actors"]]) for n in after] == [(1, ["carol"])]
    assert after[0]["replaces"] == before[0]["seq"]

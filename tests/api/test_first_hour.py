"""What a developer meets in the first hour: validation messages that name the field, a preferences body
that round-trips, and an API description that is complete (OpenAPI valid, the live protocol in AsyncAPI)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from tidings.api.asyncapi import WS_ERROR_CODES
from tidings.core import frames

from .support import Api, Tenant, assert_error, event


def _deep(levels: int) -> dict[str, Any]:
    node: Any = 1
    for _ in range(levels):
        node = [node]
    return {"a": node}


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/v1/events", event(recipients=None), "recipients"),
        ("/v1/events", event(topic="t", recipients=["a"]), "recipients"),
        ("/v1/events", event(data=_deep(40)), "data"),
        ("/v1/events", [1, 2], "body"),
    ],
)
async def test_validation_messages_name_the_field_without_pydantic_prefixes(
    api: Api, acme: Tenant, path: str, body: Any, loc: str
) -> None:
    response = await api.client.post(path, json=body, headers=acme.producer)
    details = assert_error(response, 422, "validation_failed")["details"]
    assert "Value error" not in response.text
    assert all(d["loc"] for d in details), details
    assert loc in [d["loc"] for d in details], details


async def test_a_batch_item_error_names_the_field(api: Api, acme: Tenant) -> None:
    body = {"events": [event(), event(recipients=None)]}
    response = await api.client.post("/v1/events/batch", json=body, headers=acme.producer)
    assert response.status_code == 200
    error = response.json()["results"][1]["error"]
    assert error["code"] == "validation_failed"
    assert error["message"] == "recipients: exactly one of recipients or topic is required"


async def test_mark_requests_name_the_field(api: Api, acme: Tenant) -> None:
    headers = api.user(acme, "alice")
    response = await api.client.post("/v1/me/notifications/read", json={}, headers=headers)
    error = assert_error(response, 422, "validation_failed")
    assert error["details"] == [{"loc": "seqs", "msg": "exactly one of seqs or up_to is required"}]
    assert error["message"] == "seqs: exactly one of seqs or up_to is required"


async def test_preferences_round_trip_what_get_answered(api: Api, acme: Tenant) -> None:
    """PUT takes back exactly the body GET answered (its read-only ``defaults`` are ignored)."""
    headers = api.user(acme, "alice")
    rules = {"channels": {"email": False}, "categories": {"social": {"channels": {"web_push": True}}}}
    assert (await api.client.put("/v1/rules", json=rules, headers=acme.producer)).status_code == 200
    mine = {
        "categories": {"social": {"email": True}},
        "mutes": {"actors": ["bob"], "objects": []},
        "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Europe/Paris"},
    }
    assert (await api.client.put("/v1/me/preferences", json=mine, headers=headers)).status_code == 200
    got = (await api.client.get("/v1/me/preferences", headers=headers)).json()
    assert "defaults" in got
    again = await api.client.put("/v1/me/preferences", json=got, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == got
    assert (await api.client.get("/v1/me/preferences", headers=headers)).json() == got


async def test_the_openapi_document_is_valid(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    validate(spec)
    assert "/asyncapi.json" in spec["info"]["description"]  # /docs shows it: the live protocol is linked


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


async def test_the_live_protocol_is_described_in_asyncapi(api: Api) -> None:
    response = await api.client.get("/asyncapi.json", headers={"Host": "tidings.example:8443"})
    assert response.status_code == 200
    doc = response.json()
    assert doc["asyncapi"].startswith("3.")
    assert {c["address"] for c in doc["channels"].values()} == {"/v1/ws", "/v1/stream"}
    assert doc["servers"]["ws"]["host"] == "tidings.example:8443"
    for ref in _refs(doc):
        _resolve(doc, ref)  # every reference points somewhere
    for operation in doc["operations"].values():
        channel = _resolve(doc, operation["channel"]["$ref"])
        for message in operation["messages"]:
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            assert _resolve(doc, message["$ref"]) is not None
        assert channel["messages"]
    schemas = doc["components"]["schemas"]
    # The frame shapes are the ones core/frames.py writes and reads.
    ready = frames.encode_ready("alice", 3, "e")
    assert set(schemas["Ready"]["required"]) == set(json.loads(ready))
    reset = frames.encode_reset(3, "e")
    assert set(schemas["Reset"]["required"]) == set(json.loads(reset))
    assert set(schemas["SseReady"]["required"]) == set(json.loads(ready)) - {"type"}
    read = json.loads(frames.encode_read("read", seqs=[1], up_to=None, unread=0, unseen=0))
    assert set(read) <= set(schemas["Read"]["properties"])
    assert set(schemas["Auth"]["properties"]) == {"type", "token", "after"}
    assert set(WS_ERROR_CODES) >= {"invalid_frame", "unauthorized", "draining", "slow_consumer"}

"""Bad input answers 4xx in the one error shape and writes nothing: never a 5xx, never half an event."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from .conftest import OpenApi
from .support import Api, Tenant, assert_error, event

JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def raw(body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"content": body, "headers": {**JSON, **(headers or {})}}


BAD_BODIES: list[tuple[str, dict[str, Any], int, str]] = [
    ("malformed JSON", raw(b'{"type": "post.liked",'), 400, "malformed_body"),
    ("not UTF-8", raw(b'{"type": "post.liked", "recipients": ["\xff\xfe"]}'), 400, "malformed_body"),
    ("UTF-16", raw(orjson.dumps(event()).decode().encode("utf-16")), 400, "malformed_body"),
    ("NaN", raw(b'{"type": "a", "recipients": ["a"], "data": {"x": NaN}}'), 400, "malformed_body"),
    ("empty body", raw(b""), 400, "malformed_body"),
    (
        "form encoded",
        {"content": b"type=x", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("a JSON array", {"json": [event()]}, 422, "validation_failed"),
    ("wrong types", {"json": event(recipients="alice")}, 422, "validation_failed"),
    ("a number as user id", {"json": event(recipients=[42])}, 422, "validation_failed"),
    ("unknown field", {"json": event(colour="red")}, 422, "validation_failed"),
    ("empty recipients", {"json": event(recipients=[])}, 422, "validation_failed"),
    ("both recipients and topic", {"json": event(topic="followers:bob")}, 422, "validation_failed"),
    ("neither recipients nor topic", {"json": event(recipients=None)}, 422, "validation_failed"),
    ("bad type", {"json": event(type="Post Liked!")}, 422, "validation_failed"),
    ("bad topic", {"json": event(recipients=None, topic="a b")}, 422, "validation_failed"),
    ("bad priority", {"json": event(priority="urgent")}, 422, "validation_failed"),
    ("empty user id", {"json": event(recipients=[""])}, 422, "validation_failed"),
    ("user id too long", {"json": event(recipients=["u" * 256])}, 422, "validation_failed"),
    ("actor without id", {"json": event(actor={"name": "Bob"})}, 422, "validation_failed"),
    ("data not an object", {"json": event(data=[1, 2])}, 422, "validation_failed"),
    ("data over 16 KiB", {"json": event(data={"text": "x" * 17_000})}, 422, "validation_failed"),
    ("group_key too long", {"json": event(group_key="g" * 256)}, 422, "validation_failed"),
    ("key too long", {"json": event(), "headers": {"Idempotency-Key": "k" * 256}}, 422, "validation_failed"),
    ("data nested too deep", {"json": event(data=nested(40))}, 422, "validation_failed"),
    (
        "actor nested too deep",
        {"json": event(actor={"id": "bob", "x": nested(300)})},
        422,
        "validation_failed",
    ),
    ("nesting past the parser", raw(b'{"data":' * 2000 + b"1" + b"}" * 2000), 400, "malformed_body"),
    ("lone surrogate", raw(b'{"type": "a", "recipients": ["\\ud800"]}'), 400, "malformed_body"),
    (
        "too many recipients",
        {"json": event(recipients=[f"u{i}" for i in range(1001)])},
        422,
        "limit_exceeded",
    ),
]


@pytest.mark.parametrize(
    ("case", "request_kwargs", "status", "code"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_event_bodies_are_refused_and_write_nothing(
    api: Api, acme: Tenant, case: str, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    """Each kind of bad body gets its documented 4xx in the error shape, and the log stays empty."""
    kwargs = dict(request_kwargs)
    kwargs["headers"] = {**acme.producer, **kwargs.get("headers", {})}
    response = await api.client.post("/v1/events", **kwargs)
    assert_error(response, status, code)
    assert await api.lag() == 0


async def test_validation_errors_name_the_field_without_echoing_it(api: Api, acme: Tenant) -> None:
    """A 422 says which field is wrong; the value sent is not repeated back."""
    response = await api.client.post("/v1/events", json=event(colour="secret-value"), headers=acme.producer)
    error = assert_error_with_details(response)
    assert error["details"][0]["loc"] == "colour"
    assert "secret-value" not in response.text


def assert_error_with_details(response: Any) -> dict[str, Any]:
    assert response.status_code == 422
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert isinstance(error["details"], list)
    return error


async def test_a_body_without_content_type_is_read_as_json(api: Api, acme: Tenant) -> None:
    """A client that sends JSON without a Content-Type header is understood."""
    response = await api.client.post("/v1/events", content=orjson.dumps(event()), headers=acme.producer)
    assert response.status_code == 202


async def test_an_oversized_body_is_refused_with_413(open_api: OpenApi) -> None:
    """A body over max_body_bytes answers 413 (before authentication or parsing) and writes nothing."""
    api = await open_api(max_body_bytes=2048)
    acme = await api.tenant()
    body = event(data={"text": "x" * 4000})
    response = await api.client.post("/v1/events", json=body, headers=acme.producer)
    assert_error(response, 413, "body_too_large")
    batch = await api.client.post("/v1/events/batch", json={"events": [body]}, headers=acme.producer)
    assert_error(batch, 413, "body_too_large")
    assert await api.lag() == 0


async def test_a_streamed_oversized_body_is_refused_with_413(open_api: OpenApi) -> None:
    """A chunked body (no Content-Length) that grows past the limit is refused too."""
    api = await open_api(max_body_bytes=2048)
    acme = await api.tenant()

    async def chunks() -> Any:
        yield orjson.dumps(event())
        for _ in range(10):
            yield b" " * 512

    response = await api.client.post("/v1/events", content=chunks(), headers={**acme.producer, **JSON})
    assert_error(response, 413, "body_too_large")
    assert await api.lag() == 0


async def test_bad_batches_are_refused_whole(api: Api, acme: Tenant) -> None:
    """A batch that is not {"events": [...]} with at least one item answers 422 and writes nothing."""
    for body in ({"events": []}, {"events": {}}, {"items": [event()]}, {"events": [event()], "x": 1}):
        response = await api.client.post("/v1/events/batch", json=body, headers=acme.producer)
        assert_error(response, 422, "validation_failed")
    assert await api.lag() == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"seqs": [1], "up_to": 3},
        {"seqs": []},
        {"seqs": [0]},
        {"seqs": ["1"]},
        {"up_to": -1},
        {"all": True},
    ],
)
async def test_bad_mark_bodies_are_refused(api: Api, acme: Tenant, body: dict[str, Any]) -> None:
    """Marking read needs exactly one of seqs (positive ints) or up_to."""
    response = await api.client.post("/v1/me/notifications/read", json=body, headers=api.user(acme, "alice"))
    assert_error(response, 422, "validation_failed")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=ten",
        "after=-1",
        "cursor=!!!",
        "cursor=e30",
        "cursor=WzFd",
        "cursor=eyJhZnRlciI6IngifQ",
        "after=1&cursor=eyJiZWZvcmUiOjJ9",
    ],
)
async def test_bad_list_parameters_are_refused(api: Api, acme: Tenant, query: str) -> None:
    """Out-of-range or malformed list parameters answer 400/422, not 500."""
    response = await api.client.get(f"/v1/me/notifications?{query}", headers=api.user(acme, "alice"))
    assert response.status_code in (400, 422)
    assert_error(response, response.status_code)


@pytest.mark.parametrize(
    "path",
    ["/v1/topics/a%20b/subscribers/alice", "/v1/topics/t/subscribers/" + "u" * 256],
)
async def test_bad_topic_paths_are_refused(api: Api, acme: Tenant, path: str) -> None:
    """A topic name or user id that breaks the rules answers 422."""
    response = await api.client.put(path, headers=acme.producer)
    assert_error(response, 422, "validation_failed")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/me/notifications/read", {"seqs": [2**64 - 1]}),
        ("/v1/me/notifications/seen", {"up_to": 2**63}),
    ],
)
async def test_seqs_beyond_64_bits_are_refused(
    api: Api, acme: Tenant, path: str, body: dict[str, Any]
) -> None:
    """A seq no store can hold answers 422 instead of overflowing the database driver."""
    response = await api.client.post(path, json=body, headers=api.user(acme, "alice"))
    assert_error(response, 422, "validation_failed")
    listing = await api.client.get(f"/v1/me/notifications?after={2**64}", headers=api.user(acme, "alice"))
    assert_error(listing, 422, "validation_failed")


async def test_unusual_but_valid_values_are_accepted(api: Api, acme: Tenant) -> None:
    """Unicode in user ids, big integers and nesting within limits in data are all fine."""
    body = event(recipients=["ålice", "a b", "😀"], data={"n": 2**64 - 1, "deep": nested(30)})
    response = await api.client.post("/v1/events", json=body, headers=acme.producer)
    assert response.status_code == 202, response.text
    (delivery,) = await api.runtime.log.read(10, 0.0)
    assert delivery.event.recipients == ("ålice", "a b", "😀")


MUTANTS: list[Any] = [None, True, 0, -1, 2**64, 1.5, "", "x" * 300, [], [None], {}, {"id": None}, nested(5)]


async def test_random_mutations_never_cause_a_server_error(api: Api, acme: Tenant) -> None:
    """Replacing fields of a valid event with values of every wrong type never answers 5xx."""
    rng = random.Random(1234)
    fields = [*event(), "topic", "priority", "idempotency_key", "unknown"]
    for _ in range(150):
        body: Any = event()
        for field in rng.sample(fields, rng.randint(1, 3)):
            body[field] = rng.choice(MUTANTS)
        if rng.random() < 0.1:
            body = rng.choice(MUTANTS)
        single = await api.client.post("/v1/events", json=body, headers=acme.producer)
        batch = await api.client.post("/v1/events/batch", json={"events": [body]}, headers=acme.producer)
        assert single.status_code < 500, (body, single.text)
        assert batch.status_code < 500, (body, batch.text)


@pytest.mark.parametrize("user", ["al\x00ice", "bob\n", "\x7f"])
async def test_control_characters_in_user_ids_are_refused(api: Api, acme: Tenant, user: str) -> None:
    """A recipient id with a control character (NUL, newline, DEL) is a 422 on every backend, not a 503."""
    response = await api.client.post("/v1/events", json=event(recipients=[user]), headers=acme.producer)
    assert_error(response, 422, "validation_failed")
    assert await api.lag() == 0

"""The ingest routes' own request path (``api.routing.DirectRoute``, issue 12): the answers are what FastAPI
gave, headers once each; the cheaper validation helpers agree with the definitions they replace; the log's
lag is counted once however many requests arrive while it is counted."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.api import schemas
from tidings.api.schemas import MAX_DEPTH, Actor, ObjectRef, canonical_json, check_json_bounds

from .support import Api, Tenant, event


def _once(response: Any, *names: str) -> None:
    for name in names:
        assert len(response.headers.get_list(name)) == 1, (name, response.headers.raw)
    assert int(response.headers["content-length"]) == len(response.content)


async def test_answers_carry_each_header_once(api: Api, acme: Tenant) -> None:
    """202, an idempotent replay's 202 and a batch's 200: one content-length (the body's), one content-type."""
    keyed = {**acme.producer, "Idempotency-Key": "k-1"}
    first = await api.client.post("/v1/events", json=event(), headers=keyed)
    again = await api.client.post("/v1/events", json=event(), headers=keyed)
    batch = await api.client.post("/v1/events/batch", json={"events": [event()]}, headers=acme.producer)
    for response, status in ((first, 202), (again, 202), (batch, 200)):
        assert response.status_code == status
        _once(response, "content-length", "content-type")
        assert response.headers["content-type"] == "application/json"
    assert orjson.loads(first.content) == {"id": first.json()["id"], "status": "accepted"}
    assert again.json() == first.json()
    assert again.headers.get_list("idempotent-replayed") == ["true"]
    assert "idempotent-replayed" not in first.headers


async def test_a_bad_key_header_and_a_bad_body_are_reported_together(api: Api, acme: Tenant) -> None:
    """As FastAPI reports them: the header's error first, then the body's, in one 422."""
    headers = {**acme.producer, "Idempotency-Key": "k" * 256}
    response = await api.client.post("/v1/events", json=event(type="BAD TYPE"), headers=headers)
    assert response.status_code == 422
    locs = [d["loc"] for d in response.json()["error"]["details"]]
    assert locs == ["header.Idempotency-Key", "type"]


async def test_authentication_comes_before_validation(api: Api) -> None:
    """No key and a bad body: 401 (the dependencies ran first under FastAPI too)."""
    response = await api.client.post("/v1/events", json={"type": 5})
    assert response.status_code == 401


async def test_requests_arriving_during_a_lag_count_do_not_start_their_own(api: Api, acme: Tenant) -> None:
    """The log's lag is counted once per second at most, not once per request waiting for that count."""
    counts = 0
    real = api.runtime.log.lag

    async def slow_lag() -> int:
        nonlocal counts
        counts += 1
        await asyncio.sleep(0.05)
        return await real()

    api.runtime.log.lag = slow_lag  # type: ignore[method-assign]
    posts = [api.client.post("/v1/events", json=event(), headers=acme.producer) for _ in range(10)]
    answers = await asyncio.gather(*posts)
    assert [a.status_code for a in answers] == [202] * 10
    assert counts == 1


# --- the cheaper helpers agree with what they replace -----------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=40,
)


def _reference_bounds(value: Any, limit: int) -> str | None:
    """``check_json_bounds`` as it was: the depth walk first, then the size."""
    if schemas._depth(value) > MAX_DEPTH:
        return "depth"
    return "size" if len(canonical_json(value)) > limit else None


def _bounds(value: Any, limit: int) -> str | None:
    try:
        check_json_bounds(value, limit, "x")
    except ValueError as exc:
        return "depth" if "deeper" in str(exc) else "size"
    return None


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@given(JSON, st.integers(0, 200))
def test_json_bounds_agree_with_the_walk_first_definition(value: Any, limit: int) -> None:
    assert _bounds(value, limit) == _reference_bounds(value, limit)


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2, 300])
@pytest.mark.parametrize("limit", [10, 66, 10_000])
def test_json_bounds_at_the_depth_edge(depth: int, limit: int) -> None:
    """Depth 33 is 66 bytes of brackets: exactly where the walk can no longer be skipped; 300 is past
    orjson's own recursion limit."""
    value = _nested(depth)
    expected = "depth" if depth > MAX_DEPTH else ("size" if 2 * depth > limit else None)
    assert _bounds(value, limit) == expected


REF = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=10)},
    optional={
        "name": st.none() | st.text(max_size=10),
        "avatar": st.none() | st.text(max_size=10),
        "extra": JSON,
        "more": JSON,
    },
)


@given(REF)
def test_refs_as_json_are_their_model_dumps(raw: dict[str, Any]) -> None:
    """What the bound is checked on (the whole dump) and what the event keeps (fields as sent), in the same
    key order as pydantic's ``model_dump``."""
    raw = {k: v for k, v in raw.items() if "\x00" not in str(v)}
    for model in (Actor, ObjectRef):
        try:
            ref = model.model_validate(raw)
        except ValueError:
            continue
        for only_set in (False, True):
            dumped = ref.model_dump(mode="json", exclude_unset=only_set)
            ours = schemas._as_json(ref, only_set=only_set)
            assert (list(ours.items())) == list(dumped.items())

"""Label cardinality under a flood of random requests: random paths, ids, users, keys and tokens must not
become label values, so an attacker cannot grow the number of series (each one costs Prometheus memory).

The default suite sends ``TIDINGS_FLOOD_REQUESTS`` (1,000) requests in process, in a few seconds; the slow
suite (``pytest -m slow``) sends 100,000. Before the flood, one request of each shape (and each method class)
is sent: those series exist in any deployment; the flood must add none for its random values.
"""

from __future__ import annotations

import os
import random
import string

import pytest

from .metrics_support import exposition, label_values, series
from .support import Stack, Tenant

FLOOD = int(os.environ.get("TIDINGS_FLOOD_REQUESTS", "1000"))
MAX_NEW_SERIES = 50
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"]  # BREW: any other method
MAX_EXPOSITION_BYTES = 1024 * 1024


class Flood:
    """Requests of every shape a client can send, each filled with fresh random values (remembered)."""

    def __init__(self, stack: Stack, tenant: Tenant, rng: random.Random) -> None:
        self.stack, self.tenant, self.rng = stack, tenant, rng
        self.values: set[str] = set()

    def word(self, prefix: str = "") -> str:
        value = prefix + "".join(self.rng.choices(string.ascii_lowercase + string.digits, k=12))
        self.values.add(value)
        return value

    async def send(self, shape: int) -> int:
        http, w = self.stack.http, self.word
        producer = self.tenant.producer
        if shape == 0:
            answer = await http.get(f"/{w()}/{w()}?{w()}={w()}")
        elif shape == 1:
            answer = await http.request(self.rng.choice([*METHODS, w().upper()]), f"/v1/{w()}")
        elif shape == 2:
            answer = await http.put(f"/v1/topics/t{w()}/subscribers/{w('u')}", headers=producer)
        elif shape == 3:
            answer = await http.get(f"/v1/topics/t{w()}/subscribers?cursor={w()}", headers=producer)
        elif shape == 4:
            answer = await http.get("/v1/me/notifications", headers={"Authorization": f"Bearer {w()}"})
        elif shape == 5:
            body = {"type": w("t."), "recipients": [w("u"), w("u")], "data": {"text": w()}, "group_key": w()}
            answer = await http.post("/v1/events", json=body, headers={**producer, "Idempotency-Key": w()})
        elif shape == 6:
            answer = await http.post("/v1/events", json={"type": w(), w(): w()}, headers=producer)
        elif shape == 7:
            answer = await http.get(f"/v1/stream?ticket={w()}&after={w()}")
        elif shape == 8:
            answer = await http.get(f"/admin/api/events/{w()}?user={w()}", headers=self.stack.admin)
        else:
            answer = await http.post(
                "/v1/events",
                json={"type": "t", "recipients": [w()]},
                headers={"Authorization": f"Bearer {w()}"},
            )
        return answer.status_code

    SHAPES = 10


async def _flood(stack: Stack, requests: int) -> None:
    tenant = await stack.tenant("acme")
    flood = Flood(stack, tenant, random.Random(20261125))
    warm = {shape: await flood.send(shape) for shape in range(Flood.SHAPES)}  # the fixed vocabulary
    for method in METHODS:
        await stack.http.request(method, "/v1/warm-up")
    assert warm[5] == 202, warm
    assert warm[0] == 404, warm
    before = series()

    statuses = [await flood.send(i % Flood.SHAPES) for i in range(requests)]
    await stack.fan_out(rounds=1000)  # random recipients through the worker too

    assert len(statuses) == requests
    assert 500 not in statuses
    new = series() - before
    assert len(new) <= MAX_NEW_SERIES, sorted(new)[:20]
    text = exposition()
    assert len(text.encode()) < MAX_EXPOSITION_BYTES
    for label in ("route", "method", "status", "reason", "priority", "stage", "transport", "result"):
        assert not (label_values(label) & flood.values), label
    assert not any(value in text for value in list(flood.values)[:2000])


async def test_a_flood_of_random_requests_adds_no_series(stack: Stack) -> None:
    """Thousands of requests with random paths, ids, users, keys and tokens: no new series, /metrics < 1 MB."""
    await _flood(stack, FLOOD)


@pytest.mark.slow
async def test_a_hundred_thousand_random_requests_add_no_series(stack: Stack) -> None:
    """The same with 100,000 requests (pytest -m slow)."""
    await _flood(stack, 100_000)

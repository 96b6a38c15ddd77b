"""The ingest scenario with its bare baseline (issue 12): both kinds answer every request with 202/200 and
report CPU per event; the bare app refuses a bad body as the real one does. Never a timing assertion."""

from __future__ import annotations

import httpx
import pytest

from tidings.bench import ingest
from tidings.bench.producer import event_body


@pytest.mark.parametrize("kind", ingest.KINDS)
@pytest.mark.parametrize("batch", [0, 20])
async def test_each_kind_accepts_every_event_and_reports_its_cpu(kind: str, batch: int) -> None:
    result = await ingest.run_ingest(batch, connections=2, seconds=1.0, kind=kind)
    assert result["ok"] is True
    assert result["accepted"] > 0
    assert result["refused"] == 0
    assert result["kind"] == ("" if kind == "tidings" else "bare ") + ("batch" if batch else "single")
    assert result["server_cpu_us"] > 0


async def test_the_bare_app_validates_with_the_same_model() -> None:
    transport = httpx.ASGITransport(app=ingest.bare_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bare.test") as client:
        good = await client.post("/v1/events", json=event_body("u1"))
        bad = await client.post("/v1/events", json={**event_body("u1"), "unknown": 1})
        batch = await client.post("/v1/events/batch", json={"events": [event_body("u1")] * 3})
    assert good.status_code == 202
    assert good.json()["status"] == "accepted"
    assert bad.status_code == 422
    assert batch.status_code == 200
    assert len(batch.json()["results"]) == 3

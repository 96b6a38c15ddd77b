"""Operations: probes, drain, metrics without high-cardinality labels, offline docs, the OpenAPI document,
and the error shape of routing errors and bugs."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest
from fastapi import FastAPI

from tidings.api.routes import ops
from tidings.service import build_app

from .conftest import OpenApi
from .support import ADMIN_TOKEN, Api, Tenant, assert_error, event


async def test_healthz_and_readyz_answer_when_all_is_well(api: Api) -> None:
    """Both probes answer 200; readyz lists the dependencies it checked."""
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "log": "ok"}}


async def test_readyz_names_the_unreachable_store(open_api: OpenApi) -> None:
    """With its database gone, readyz answers 503 naming the store, while healthz still answers."""
    api = await open_api()
    await api.runtime.store.close()
    response = await api.client.get("/readyz")
    error = assert_error(response, 503, "not_ready")
    assert "store" in error["message"]
    assert response.headers["Retry-After"] == "1"
    assert (await api.client.get("/healthz")).status_code == 200


async def test_draining_refuses_new_work_but_keeps_probes(api: Api, acme: Tenant) -> None:
    """While draining, API calls answer 503 with Retry-After and write nothing; probes and metrics answer."""
    api.runtime.draining = True
    refused = await api.client.post("/v1/events", json=event(), headers=acme.producer)
    assert_error(refused, 503, "unavailable")
    assert refused.headers["Retry-After"] == "1"
    assert await api.lag() == 0
    assert (await api.client.get("/healthz")).status_code == 200
    assert (await api.client.get("/metrics")).status_code == 200
    ready = await api.client.get("/readyz")
    assert "draining" in assert_error(ready, 503, "not_ready")["message"]


async def test_routing_errors_use_the_error_shape(api: Api, acme: Tenant) -> None:
    """Unknown paths answer 404 and wrong methods 405 (with Allow), both as JSON errors."""
    assert_error(await api.client.get("/v1/nope"), 404, "not_found")
    wrong = await api.client.get("/v1/events", headers=acme.producer)
    assert_error(wrong, 405, "method_not_allowed")
    assert "POST" in wrong.headers["Allow"]
    assert_error(await api.client.get("/static/swagger-ui/missing.js"), 404)


async def test_a_bug_answers_500_without_detail(api: Api) -> None:
    """An unexpected exception answers a bare 500 JSON error: no traceback, no message from inside."""
    app = api.client._transport.app  # type: ignore[attr-defined]
    assert isinstance(app, FastAPI)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    response = await api.client.get("/boom")
    assert_error(response, 500, "internal_error")
    assert "secret" not in response.text


async def test_metrics_use_route_templates_not_raw_paths(api: Api, acme: Tenant) -> None:
    """After requests to random paths, users and topics, no label value contains any of them."""
    secrets_sent = [secrets.token_hex(8) for _ in range(3)]
    await api.client.get(f"/{secrets_sent[0]}/x")
    await api.client.request("BREW", f"/v1/{secrets_sent[1]}")
    await api.client.put(
        f"/v1/topics/t{secrets_sent[2]}/subscribers/u{secrets_sent[2]}", headers=acme.producer
    )
    await api.client.post("/v1/events", json=event(), headers=acme.producer)
    text = (await api.client.get("/metrics")).text
    assert not any(value in text for value in secrets_sent)
    assert acme.api_key not in text
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert {"unmatched", "/v1/topics/{topic}/subscribers/{user_id}", "/v1/events"} <= routes
    assert all(route == "unmatched" or route.startswith("/") for route in routes)
    assert set(re.findall(r'method="([^"]*)"', text)) <= {
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "other",
    }
    assert 'tidings_events_accepted_total{priority="normal"}' in text


async def test_refused_events_are_counted_by_reason(api: Api, acme: Tenant) -> None:
    """Invalid events show up in tidings_events_rejected_total under their error code."""

    def rejected(text: str, reason: str) -> float:
        match = re.search(rf'tidings_events_rejected_total{{reason="{reason}"}} ([0-9.]+)', text)
        return float(match.group(1)) if match else 0.0

    before = (await api.client.get("/metrics")).text
    await api.client.post("/v1/events", json=event(recipients=[]), headers=acme.producer)
    await api.client.post("/v1/events", content=b"{", headers=acme.producer)
    after = (await api.client.get("/metrics")).text
    assert rejected(after, "validation_failed") == rejected(before, "validation_failed") + 1
    assert rejected(after, "malformed_body") == rejected(before, "malformed_body") + 1


async def test_docs_load_nothing_from_other_hosts(api: Api) -> None:
    """/docs and the Swagger UI files it references are all served by Tidings itself."""
    html = (await api.client.get("/docs")).text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls
    assert all(url.startswith("/") and not url.startswith("//") for url in urls)
    assert "http://" not in html
    assert "https://" not in html
    for url in urls:
        assert (await api.client.get(url)).status_code == 200


async def test_openapi_documents_every_route_and_its_errors(api: Api) -> None:
    """The OpenAPI document lists every API route with its error answers in the error schema."""
    spec = (await api.client.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        ("post", "/v1/events"): {"400", "401", "409", "413", "422", "429"},
        ("post", "/v1/events/batch"): {"400", "401", "413", "422", "429"},
        ("put", "/v1/topics/{topic}/subscribers/{user_id}"): {"401", "422"},
        ("delete", "/v1/topics/{topic}/subscribers/{user_id}"): {"401", "422"},
        ("get", "/v1/topics/{topic}/subscribers"): {"400", "401", "422"},
        ("get", "/v1/me/notifications"): {"400", "401", "422"},
        ("get", "/v1/me/unread-count"): {"401"},
        ("post", "/v1/me/notifications/read"): {"400", "401", "422"},
        ("post", "/v1/me/notifications/seen"): {"400", "401", "422"},
        ("post", "/v1/me/stream-tickets"): {"401"},
        ("post", "/v1/apps"): {"401", "404", "409", "422"},
        ("get", "/readyz"): {"503"},
        ("get", "/healthz"): set(),
        ("get", "/metrics"): set(),
    }
    for (method, path), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (method, path)
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    batch = spec["components"]["schemas"]["BatchIn"]["properties"]["events"]
    assert "idempotency_key" in str(batch)


async def test_the_lag_is_read_from_the_log_at_most_once_a_second(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However often /metrics and the admin stats are scraped, the log's lag is queried once per second."""
    calls: list[float] = []
    real_lag = api.runtime.log.lag

    async def counted() -> int:
        calls.append(api.clock.monotonic())
        return await real_lag()

    monkeypatch.setattr(api.runtime.log, "lag", counted)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    transport = httpx.ASGITransport(app=build_app(api.runtime))  # with the admin routes
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/admin/api/stats", headers=admin)).status_code == 200
        assert len(calls) == 1
        api.clock.advance(0.9)
        await client.get("/metrics")
        assert len(calls) == 1
        api.clock.advance(0.1)
        await client.get("/metrics")
        assert len(calls) == 2


async def test_a_separate_metrics_listener_takes_metrics_off_the_main_app(open_api: OpenApi) -> None:
    """With metrics_port >= 0 the main app answers 404 on /metrics and keeps its probes; the scrape app
    serves /metrics and /healthz only."""
    api = await open_api(metrics_port=0)
    app = build_app(api.runtime, ("api",))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as main:
        assert (await main.get("/metrics")).status_code == 404
        assert (await main.get("/healthz")).status_code == 200
    scrape = httpx.ASGITransport(app=ops.scrape_app(api.runtime))
    async with httpx.AsyncClient(transport=scrape, base_url="http://tidings.test") as side:
        response = await side.get("/metrics")
        assert response.status_code == 200
        assert "tidings_log_lag" in response.text
        assert (await side.get("/healthz")).json() == {"status": "ok"}
        assert (await side.get("/v1/events")).status_code == 404

"""Metrics a team watches: the delivery funnel, the latency histograms, deliveries and connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tidings.api.middleware import MetricsMiddleware
from tidings.observability import metrics

from .metrics_support import exposition, value
from .support import Stack


async def test_one_event_moves_through_every_stage_of_the_funnel(stack: Stack) -> None:
    """One event to two users, one connected: accepted 1, fanned out 2, stored 2, live 1, seen 1, read 1."""
    before = {stage: value("tidings_funnel_total", stage=stage) for stage in metrics.FUNNEL_STAGES}
    stored_before = value("tidings_accepted_to_stored_seconds_count")
    delivered_before = value("tidings_accepted_to_delivered_seconds_count")
    acme = await stack.tenant("acme")
    alice = await stack.connect("acme", "alice")
    body = {"type": "post.liked", "recipients": ["alice", "bob"]}
    assert (await stack.http.post("/v1/events", json=body, headers=acme.producer)).status_code == 202
    await stack.fan_out()
    (notification,) = await alice.notifications(1)
    token = {"Authorization": f"Bearer {await stack.user_token(acme, 'alice')}"}
    for mark in ("seen", "read"):
        answer = await stack.http.post(
            f"/v1/me/notifications/{mark}", json={"up_to": notification["seq"]}, headers=token
        )
        assert answer.json() == {"updated": 1}
    # A second mark of the same row changes nothing, and counts nothing.
    await stack.http.post("/v1/me/notifications/read", json={"up_to": notification["seq"]}, headers=token)

    after = {stage: value("tidings_funnel_total", stage=stage) for stage in metrics.FUNNEL_STAGES}
    moved = {stage: after[stage] - before[stage] for stage in metrics.FUNNEL_STAGES}
    assert moved == {"accepted": 1, "fanned_out": 2, "stored": 2, "delivered_live": 1, "seen": 1, "read": 1}
    assert value("tidings_accepted_to_stored_seconds_count") == stored_before + 2
    assert value("tidings_accepted_to_delivered_seconds_count") == delivered_before + 1


async def test_the_delivered_latency_is_observed_after_the_write_not_before(stack: Stack) -> None:
    """A frame queued but not yet written is not counted as delivered: the histogram moves after the write."""
    acme = await stack.tenant("acme")
    alice = await stack.connect("acme", "alice")
    await stack.http.post("/v1/events", json={"type": "t", "recipients": ["alice"]}, headers=acme.producer)
    await stack.fan_out()
    count = value("tidings_accepted_to_delivered_seconds_count")
    delivered = value("tidings_funnel_total", stage="delivered_live")
    frames = await alice.frames()  # handed to the shell, which is "writing" it now
    assert [f["type"] for f in frames] == ["notification"]
    assert value("tidings_accepted_to_delivered_seconds_count") == count
    await alice.flush()  # the shell asks for more: the write is done
    assert value("tidings_accepted_to_delivered_seconds_count") == count + 1
    assert value("tidings_funnel_total", stage="delivered_live") == delivered + 1


async def test_a_resumed_backlog_counts_as_delivered_but_not_in_the_live_latency(stack: Stack) -> None:
    """Notifications read from the store on resume reach the funnel; their latency is not a live one."""
    acme = await stack.tenant("acme")
    for _ in range(3):
        await stack.http.post(
            "/v1/events", json={"type": "t", "recipients": ["carol"]}, headers=acme.producer
        )
    await stack.fan_out()
    count = value("tidings_accepted_to_delivered_seconds_count")
    delivered = value("tidings_funnel_total", stage="delivered_live")
    resumed = await stack.connect("acme", "carol", after=0)
    assert [n["seq"] for n in await resumed.notifications(3)] == [1, 2, 3]
    assert value("tidings_funnel_total", stage="delivered_live") == delivered + 3
    assert value("tidings_accepted_to_delivered_seconds_count") == count


def test_every_stage_and_the_process_metrics_are_exported_from_the_start() -> None:
    """Dashboards can rate() every stage before traffic; CPU, memory and fds are there for saturation."""
    text = exposition()
    for stage in metrics.FUNNEL_STAGES:
        assert f'tidings_funnel_total{{stage="{stage}"}}' in text
    for name in (
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
    ):
        assert f"\n{name} " in text
    assert 'tidings_build_info{version="' in text


async def test_static_files_get_their_mount_as_route_label(stack: Stack) -> None:
    """Files under a mount are labelled with the mount's path, not ``unmatched``."""
    for path, route in (("/sdk/tidings.js", "/sdk"), ("/admin/static/admin.js", "/admin/static")):
        before = value("tidings_http_requests_total", method="GET", route=route, status="200")
        assert (await stack.http.get(path)).status_code == 200
        assert value("tidings_http_requests_total", method="GET", route=route, status="200") == before + 1
    unmatched = value("tidings_http_requests_total", method="GET", route="unmatched", status="200")
    assert unmatched == 0


async def test_a_long_lived_stream_is_counted_but_not_timed_as_an_answer() -> None:
    """An SSE response is counted in the requests total, but stays out of the duration histogram."""

    async def events() -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0.05)
            yield b": ping\n\n"

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    async def answer(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/metrics-test/stream", stream), Route("/metrics-test/answer", answer)])
    app = MetricsMiddleware(inner, routes=lambda: inner.router.routes)
    labels = {"method": "GET", "status": "200"}
    seconds = "tidings_http_request_duration_seconds_count"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/metrics-test/stream")).text.count("ping") == 3
        assert (await http.get("/metrics-test/answer")).text == "ok"
    assert value("tidings_http_requests_total", route="/metrics-test/stream", **labels) == 1
    assert value(seconds, route="/metrics-test/stream", **labels) == 0
    assert value(seconds, route="/metrics-test/answer", **labels) == 1

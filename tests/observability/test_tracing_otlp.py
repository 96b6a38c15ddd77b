"""A real ``tidings serve`` with the standard OTEL_* variables, exporting to an OTLP/HTTP receiver on
loopback: one trace from the producer's request to the WebSocket delivery, across the process boundary the
spans are exported over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from websockets.asyncio.client import connect

from .otlp_receiver import OtlpReceiver
from .server import Server

pytestmark = pytest.mark.e2e

PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
NAMES = ("api.append", "worker.fanout", "store.write", "bus.publish", "gateway.deliver")


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    started = await OtlpReceiver().start()
    try:
        yield started
    finally:
        await started.stop()


async def test_one_trace_from_the_api_span_to_the_websocket_delivery(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Send an event with a traceparent; the spans exported by the server form one trace, API to socket."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "tidings-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s rather than 5 s
    }
    server = await Server(tmp_path / "data", env=env).start()
    try:
        app = await server.create_app("traced")
        claims = {"iss": "traced", "sub": "alice", "aud": "tidings", "exp": 4102444800}
        token = jwt.encode(claims, app["jwt_secret"], algorithm="HS256")
        async with connect(f"ws://127.0.0.1:{server.port}/v1/ws", open_timeout=10) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            assert orjson.loads(await ws.recv(decode=False))["type"] == "ready"
            headers = {
                "Authorization": f"Bearer {app['api_key']}",
                "traceparent": f"00-{PRODUCER_TRACE}-b7ad6b7169203331-01",
            }
            async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=10) as http:
                answer = await http.post(
                    "/v1/events", json={"type": "t", "recipients": ["alice"]}, headers=headers
                )
            assert answer.status_code == 202
            frame = orjson.loads(await ws.recv(decode=False))
            assert frame["notification"]["event_id"] == answer.json()["id"]

        for name in NAMES:  # the worker's span ends after its batch's ack: it may come last
            await receiver.wait_for(name)
        spans = {span.name: span for span in receiver.spans if span.trace_id == PRODUCER_TRACE}
        deliver = spans["gateway.deliver"]
    finally:
        assert await server.stop() == 0, server.tail()

    assert set(NAMES) <= set(spans)
    assert spans["api.append"].parent_span_id == "b7ad6b7169203331"
    assert spans["worker.fanout"].parent_span_id == spans["api.append"].span_id
    assert spans["bus.publish"].parent_span_id == spans["worker.fanout"].span_id
    assert deliver.parent_span_id == spans["bus.publish"].span_id
    assert deliver.attributes["tidings.transport"] == "ws"
    assert spans["worker.fanout"].attributes["tidings.event.id"] == answer.json()["id"]
    assert {span.service for span in receiver.spans} == {"tidings-under-test"}

"""Traces in-process: one trace from the producer's request to the socket write, and nothing when off."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tidings.backends.envelope import decode_live, encode_live
from tidings.channels.base import Message, Outcome
from tidings.core.delivery import Claimed, WebhookEndpoint
from tidings.core.models import Event, LiveMessage, event_from_bytes, event_to_bytes
from tidings.core.rules import AppRules
from tidings.errors import ConfigError, UnavailableError
from tidings.observability import tracing
from tidings.ports import EventLog
from tidings.sender import Sender

from .support import Stack, open_stack

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"


def _by_name(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        named.setdefault(span.name, []).append(span)
    return named


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_runs_from_the_producer_request_to_the_socket_write(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    """A producer's traceparent is continued through append, fan-out, store, bus and each delivery."""
    acme = await stack.tenant("acme")
    alice, bob = await stack.connect("acme", "alice"), await stack.connect("acme", "bob", transport="sse")
    body = {"type": "post.liked", "recipients": ["alice", "bob"], "data": {"text": "hi"}}
    headers = {**acme.producer, "traceparent": TRACEPARENT}
    answer = await stack.http.post("/v1/events", json=body, headers=headers)
    assert answer.status_code == 202
    await stack.fan_out()
    await alice.notifications(1)
    await bob.notifications(1)

    named = _by_name(spans)
    assert {span.context.trace_id for span in spans.get_finished_spans()} == {int(PARENT_TRACE, 16)}
    (append,) = named["api.append"]
    (fanout,) = named["worker.fanout"]
    (write,) = named["store.write"]
    (publish,) = named["bus.publish"]
    delivers = named["gateway.deliver"]
    assert append.kind is SpanKind.SERVER
    assert _parent_of(append) == int("00f067aa0ba902b7", 16)
    assert _parent_of(fanout) == append.context.span_id
    assert _parent_of(write) == _parent_of(publish) == fanout.context.span_id
    assert sorted(span.attributes["tidings.transport"] for span in delivers) == ["sse", "ws"]  # type: ignore[index]
    assert all(_parent_of(span) == publish.context.span_id for span in delivers)
    assert fanout.attributes is not None
    assert fanout.attributes["tidings.event.id"] == answer.json()["id"]
    assert fanout.attributes["tidings.recipients"] == 2
    # Each delivery span ends only once its frame was written: after the publish that caused it.
    assert all(span.end_time is not None and publish.end_time is not None for span in delivers)
    assert all(span.end_time >= publish.end_time for span in delivers)  # type: ignore[operator]


async def test_a_request_without_traceparent_starts_a_trace_per_request(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    """Without an incoming context, each request (a whole batch) is the root of its own trace."""
    acme = await stack.tenant("acme")
    batch = {"events": [{"type": "t", "recipients": [f"u{i}"]} for i in range(3)]}
    assert (await stack.http.post("/v1/events/batch", json=batch, headers=acme.producer)).status_code == 200
    assert (
        await stack.http.post("/v1/events", json=batch["events"][0], headers=acme.producer)
    ).status_code == 202
    await stack.fan_out()
    named = _by_name(spans)
    appends = named["api.append"]
    assert len(appends) == 2
    assert all(span.parent is None for span in appends)
    fanouts = named["worker.fanout"]
    assert len(fanouts) == 4
    batch_trace = next(s.context.trace_id for s in appends if len(s.attributes["tidings.event.ids"]) == 3)  # type: ignore[arg-type, index]
    assert sum(span.context.trace_id == batch_trace for span in fanouts) == 3


async def test_a_topic_split_into_chunk_jobs_stays_in_the_producers_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """A topic fan-out run as chunk jobs on the log: every job, write, publish and delivery joins one trace."""
    async with open_stack(tmp_path, fanout_chunk=2) as stack:
        acme = await stack.tenant("acme")
        for user in ("u1", "u2", "u3", "u4", "u5"):
            await stack.http.put(f"/v1/topics/followers:bob/subscribers/{user}", headers=acme.producer)
        clients = [await stack.connect("acme", user) for user in ("u1", "u5")]
        headers = {**acme.producer, "traceparent": TRACEPARENT}
        answer = await stack.http.post(
            "/v1/events", json={"type": "t", "topic": "followers:bob"}, headers=headers
        )
        assert answer.status_code == 202
        await stack.fan_out()
        for client in clients:
            await client.notifications(1)
    named = _by_name(spans)
    assert {span.context.trace_id for span in spans.get_finished_spans()} == {int(PARENT_TRACE, 16)}
    fanouts = named["worker.fanout"]
    assert len(fanouts) >= 3  # the split job and its chunk jobs
    assert {span.attributes["tidings.event.id"] for span in fanouts} == {answer.json()["id"]}  # type: ignore[index]
    assert sum(span.attributes["tidings.rows"] for span in named["store.write"]) == 5  # type: ignore[misc, index]
    assert len(named["gateway.deliver"]) == 2


async def test_an_unsampled_request_makes_no_span_anywhere_downstream(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    """A traceparent with the sampled flag off: no span in the API, the worker or the gateway; still delivered."""
    acme = await stack.tenant("acme")
    alice = await stack.connect("acme", "alice")
    headers = {**acme.producer, "traceparent": TRACEPARENT[:-2] + "00"}
    answer = await stack.http.post("/v1/events", json={"type": "t", "recipients": ["alice"]}, headers=headers)
    assert answer.status_code == 202
    await stack.fan_out()
    assert [n["event_id"] for n in await alice.notifications(1)] == [answer.json()["id"]]
    assert spans.get_finished_spans() == ()


class _UnreachableLog:
    """The event log of ``stack``, but every append fails as an unreachable broker's would."""

    def __init__(self, log: EventLog) -> None:
        self._log = log

    async def append(self, items: object) -> list[object]:
        raise UnavailableError("the event log is unreachable")

    async def lag(self) -> int:
        return await self._log.lag()


async def test_a_failed_append_marks_its_span_failed_without_the_message(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    """A refused event's span says it failed, by error type only: no input is copied into the trace."""
    acme = await stack.tenant("acme")
    stack.runtime.log, real = _UnreachableLog(stack.runtime.log), stack.runtime.log  # type: ignore[assignment]
    body = {"type": "t", "recipients": ["alice"], "data": {"text": "secret words"}}
    try:
        answer = await stack.http.post("/v1/events", json=body, headers=acme.producer)
    finally:
        stack.runtime.log = real
    assert answer.status_code == 503
    (append,) = _by_name(spans)["api.append"]
    assert append.status.description == "UnavailableError"
    assert "secret" not in repr(append.attributes)
    assert not append.events


def test_the_trace_context_crosses_the_log_and_the_bus_inside_the_data() -> None:
    """Event.trace survives the log encoding, LiveMessage.trace the bus envelope; old payloads still decode."""
    carrier = {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
    event = Event(id="e1", app="a", type="t", accepted_at=1.0, recipients=("u",), trace=carrier)
    assert event_from_bytes(event_to_bytes(event)) == event
    untraced = Event(id="e1", app="a", type="t", accepted_at=1.0)
    assert b"trace" not in event_to_bytes(untraced)  # off: the payload is byte for byte what it was
    old = orjson.dumps({"id": "e1", "app": "a", "type": "t", "accepted_at": 1.0})
    assert event_from_bytes(old).trace is None
    assert event_from_bytes(old[:-1] + b',"trace":{"traceparent":5}}').trace is None  # malformed: dropped

    message = LiveMessage("a", "u", 3, b'{"seq":3}', accepted_at=2.0, trace=carrier)
    assert decode_live(encode_live(message)) == message
    assert b'"tc"' not in encode_live(LiveMessage("a", "u", 3, b"{}"))
    assert decode_live(b'{"a":"a","u":"u","s":1,"tc":["x"]}\n{}').trace is None


def test_tracing_is_switched_on_only_by_the_standard_variables() -> None:
    """Nothing set means off; an OTLP endpoint or an exporter name turns it on; OTEL_SDK_DISABLED wins."""
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "supported are otlp"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "only http/protobuf"),
    ],
)
def test_a_configuration_tidings_cannot_honour_is_refused_at_start(env: dict[str, str], message: str) -> None:
    """An exporter or protocol that is not installed fails loudly at start-up rather than tracing nothing."""
    with pytest.raises(ConfigError, match=message):
        tracing.configure(env)


OFF_PROBE = textwrap.dedent(
    """
    import asyncio, sys, tempfile, threading
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from observability.support import open_stack

    async def main():
        async with open_stack(Path(tempfile.mkdtemp())) as stack:
            acme = await stack.tenant("acme")
            client = await stack.connect("acme", "alice")
            for _ in range(20):
                answer = await stack.http.post(
                    "/v1/events", json={{"type": "t", "recipients": ["alice"]}}, headers=acme.producer
                )
                assert answer.status_code == 202, answer.text
            await stack.fan_out()
            await client.notifications(20)
        prefixes = ("opentelemetry.sdk", "opentelemetry.exporter")
        loaded = sorted(name for name in sys.modules if name.startswith(prefixes))
        threads = sorted(t.name for t in threading.enumerate())
        print(loaded, threads)

    asyncio.run(main())
    """
)


def test_with_tracing_off_no_sdk_is_loaded_and_no_exporter_thread_started() -> None:
    """Off by default: serving and delivering loads neither the SDK nor an exporter, and starts no thread.

    (The OpenTelemetry *API* may be imported: FastAPI's own telemetry imports it, and stays dormant because
    Tidings never sets the global tracer provider.)"""
    tests = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", OFF_PROBE.format(tests=tests)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded, threads = done.stdout.strip().split("] [")
    assert loaded == "[", f"imported: {loaded}"
    assert "Otel" not in threads
    assert "BatchSpan" not in threads


class _Webhook:
    """A webhook channel that accepts every message, keeping them."""

    name = "webhook"

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> Outcome:
        self.sent.append(message)
        return Outcome("sent")

    async def close(self) -> None:
        return None


async def _offline_send(stack: Stack, traceparent: str) -> tuple[str, _Webhook, list[Claimed]]:
    """An event to Bob, whose app has a webhook endpoint, fanned out and sent by a sender with a fake
    webhook channel; returns the event id, the channel and what the ledger held before the send."""
    acme = await stack.tenant("acme")
    store = stack.runtime.store
    await store.preferences.set_rules("acme", AppRules(channels={"webhook": True}))
    hook = WebhookEndpoint("h1", "acme", "https://hooks.example/in?token=t0ken", (), ("whsec_x",), 1.0)
    await store.outbound.add_webhook(hook)
    headers = {**acme.producer, "traceparent": traceparent}
    answer = await stack.http.post("/v1/events", json={"type": "t", "recipients": ["bob"]}, headers=headers)
    assert answer.status_code == 202
    await stack.fan_out()
    channel = _Webhook()
    sender = Sender(store, stack.runtime.settings, clock=stack.runtime.clock, channels={"webhook": channel})
    claimed = await store.outbound.claim(sender.owner, stack.runtime.clock.time() + 1, 30.0, 10)
    await sender.deliver(claimed)
    await sender.close()
    event_id: str = answer.json()["id"]
    return event_id, channel, claimed


async def test_the_offline_send_continues_the_events_trace(stack: Stack, spans: InMemorySpanExporter) -> None:
    """``sender.send`` is a child of the event's ``store.write`` span, in the producer's trace; its attributes
    name the channel, result and attempt, never the target URL, its token or the body."""
    event_id, channel, _ = await _offline_send(stack, TRACEPARENT)
    assert len(channel.sent) == 1
    named = _by_name(spans)
    (append,) = named["api.append"]
    (fanout,) = named["worker.fanout"]
    (write,) = named["store.write"]
    (send,) = named["sender.send"]
    assert send.context.trace_id == int(PARENT_TRACE, 16)
    assert _parent_of(send) == write.context.span_id
    assert _parent_of(write) == fanout.context.span_id
    assert _parent_of(fanout) == append.context.span_id
    attributes = dict(send.attributes or {})
    assert attributes["tidings.channel"] == "webhook"
    assert attributes["tidings.result"] == "sent"
    assert attributes["tidings.attempt"] == 1
    assert attributes["tidings.event.id"] == event_id
    assert not any("hooks.example" in str(value) or "t0ken" in str(value) for value in attributes.values())


async def test_an_unsampled_trace_stores_no_context_and_makes_no_send_span(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    """A producer's unsampled context (flags 00): the delivery carries nothing and the send has no span."""
    _, channel, claimed = await _offline_send(stack, TRACEPARENT[:-2] + "00")
    assert len(channel.sent) == 1
    assert [(c.traceparent, c.tracestate) for c in claimed] == [(None, None)]
    assert "sender.send" not in _by_name(spans)


async def test_with_tracing_off_the_delivery_carries_no_context(stack: Stack) -> None:
    _, channel, claimed = await _offline_send(stack, TRACEPARENT)
    assert len(channel.sent) == 1
    assert [(c.traceparent, c.tracestate) for c in claimed] == [(None, None)]

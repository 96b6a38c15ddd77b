"""Scenarios that configure process-wide logging, so each runs in a child process of its own (the test
process's logging and structlog configuration stay as pytest set them). ``run_probe`` starts one and returns
what it wrote to its output directory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
EVENTS = 10_000
BATCH = 500
USERS = 10


def run_probe(name: str, out: Path, timeout: float = 120.0) -> dict[str, Any]:
    """Runs ``name`` in a fresh interpreter (no OTEL_* variables) and returns its ``result.json``."""
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); from observability.probes import main; main()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code, name, str(out)], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    return result


def main() -> None:
    name, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(PROBES[name](out))


def _memory_tracing() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tidings.observability import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    return exporter


def _spans_text(exporter: Any) -> str:
    """Everything a span carries to a backend that could hold a value: names, attributes, events, links,
    status, resource (``to_json`` would do, at ten times the cost)."""
    spans = exporter.get_finished_spans()
    lines = [json.dumps(dict(spans[0].resource.attributes)) if spans else ""]
    for span in spans:
        events = [(event.name, dict(event.attributes or {})) for event in span.events]
        links = [dict(link.attributes or {}) for link in span.links]
        fields = (span.name, dict(span.attributes or {}), events, links, span.status.description)
        lines.append(json.dumps(fields))
    return "\n".join(lines)


async def logs(out: Path) -> None:
    """Log lines from our components (with trace ids inside a span) and from uvicorn, as JSON."""
    import logging

    import structlog

    from tidings.observability import logging as tidings_logging
    from tidings.observability import tracing

    with (out / "log.jsonl").open("w") as stream:
        tidings_logging.configure("INFO", stream=stream)
        exporter = _memory_tracing()
        structlog.get_logger("tidings.worker").warning("outside_any_span", events=3)
        with tracing.server_span("api.append", {}) as span:
            assert span is not None
            structlog.get_logger("tidings.api").info("inside_a_span", events=1)
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
        structlog.get_logger("tidings.gateway.hub").info("with_secrets", token="t0ken", note="Bearer abc.def")
        try:
            raise RuntimeError("failed with eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl inside")
        except RuntimeError:
            structlog.get_logger("tidings.api").exception("unhandled_error")
    (finished,) = exporter.get_finished_spans()
    context = finished.get_span_context()
    result = {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
    (out / "result.json").write_text(json.dumps(result))


async def canary(out: Path) -> None:
    """10,000 events carrying planted secrets through the API, the worker and live delivery, at DEBUG level,
    with tracing on; plus requests that fail with those secrets in them. Writes every log line, span, the
    metrics exposition and every answer to an error, for the test to search."""
    from tidings.observability import logging as tidings_logging
    from tidings.observability import metrics

    with (out / "log.jsonl").open("w") as stream:
        tidings_logging.configure("DEBUG", stream=stream)
        exporter = _memory_tracing()
        planted, answers = await _canary_traffic(out)
    (out / "spans.jsonl").write_text(_spans_text(exporter))
    (out / "metrics.txt").write_bytes(metrics.render()[0])
    (out / "answers.json").write_text(json.dumps(answers))
    (out / "result.json").write_text(json.dumps({"planted": planted, "answers": len(answers)}))


async def _canary_traffic(out: Path) -> tuple[dict[str, str], list[dict[str, Any]]]:
    from .support import open_stack

    big = {"outbox_max_frames": 100_000, "outbox_max_bytes": 1 << 26}
    async with open_stack(out / "data", **big) as stack:
        acme = await stack.tenant("acme")
        jwt = await stack.user_token(acme, "u0")
        planted = {
            "api_key": acme.api_key,
            "jwt": jwt,
            "jwt_secret": acme.jwt_secret,
            "webhook_secret": "whsec_CANARYwebhook0123456789abcdef",
            "body": "CANARY-BODY the quick brown fox 7f3a",
        }
        clients = [await stack.connect("acme", f"u{i}") for i in range(USERS)]
        ticket = await _accepted_traffic(stack, acme, planted)
        planted["ticket"] = ticket
        answers = await _refused_traffic(stack, acme, planted)
        await stack.runtime.bus.close()  # the worker now logs publish failures for what follows
        await stack.http.post("/v1/events", json=_event(planted, 0), headers=acme.producer)
        await stack.fan_out()
        for client in clients:
            await client.notifications(EVENTS // USERS, within=30)
    return planted, answers


def _event(planted: dict[str, str], i: int) -> dict[str, Any]:
    data = {"text": planted["body"], "webhook_secret": planted["webhook_secret"], "n": i}
    return {"type": "comment.created", "recipients": [f"u{i % USERS}"], "data": data, "group_key": f"g{i}"}


async def _accepted_traffic(stack: Any, acme: Any, planted: dict[str, str]) -> str:
    headers = {**acme.producer, "Webhook-Secret": planted["webhook_secret"]}
    for start in range(0, EVENTS, BATCH):
        batch = {"events": [_event(planted, i) for i in range(start, start + BATCH)]}
        answer = await stack.http.post("/v1/events/batch", json=batch, headers=headers)
        assert answer.status_code == 200, answer.text
        await stack.fan_out()
    user = {"Authorization": f"Bearer {planted['jwt']}"}
    assert (await stack.http.get("/v1/me/notifications", headers=user)).status_code == 200
    assert (
        await stack.http.post("/v1/me/notifications/read", json={"up_to": 5}, headers=user)
    ).status_code == 200
    ticket = (await stack.http.post("/v1/me/stream-tickets", headers=user)).json()["ticket"]
    assert isinstance(ticket, str)
    return ticket


async def _refused_traffic(stack: Any, acme: Any, planted: dict[str, str]) -> list[dict[str, Any]]:
    """Requests that fail while carrying the secrets; every answer is kept."""
    http, body, key, jwt = stack.http, planted["body"], planted["api_key"], planted["jwt"]
    producer = acme.producer
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/events", {"content": f'{{"type": "{body}", broken', "headers": producer}),
        (
            "POST",
            "/v1/events",
            {"json": {"type": "t", "recipients": ["u"], "extra": body}, "headers": producer},
        ),
        (
            "POST",
            "/v1/events",
            {"json": {"type": "t", "recipients": body, "data": body}, "headers": producer},
        ),
        ("POST", "/v1/events", {"json": {"type": body * 20, "recipients": ["u"]}, "headers": producer}),
        (
            "POST",
            "/v1/events",
            {"json": {"type": "t", "recipients": [f"{body}{i}" for i in range(5000)]}, "headers": producer},
        ),
        ("POST", "/v1/events", {"json": _event(planted, 1), "headers": {"Authorization": f"Bearer {key}x"}}),
        ("POST", "/v1/events", {"json": _event(planted, 1), "headers": {"Authorization": f"Bearer {jwt}"}}),
        ("GET", "/v1/me/notifications", {"headers": {"Authorization": f"Bearer {jwt[:-4]}AAAA"}}),
        ("GET", "/v1/me/notifications", {"headers": {"Authorization": f"Bearer {key}"}}),
        ("GET", f"/v1/stream?ticket={planted['ticket']}x", {}),
        ("GET", f"/v1/nothing-here?ticket={planted['ticket']}&token={jwt}", {}),
        ("GET", "/admin/api/stats", {"headers": {"Authorization": f"Bearer {planted['webhook_secret']}"}}),
        (
            "POST",
            "/v1/events/batch",
            {"json": {"events": [{"data": {"text": body}}] * 3}, "headers": producer},
        ),
        ("PUT", "/v1/me/preferences", {"json": {"secret": planted["webhook_secret"]}, "headers": producer}),
    ]
    answers = []
    for index, (method, path, options) in enumerate(requests):
        answer = await http.request(method, path, **options)
        # (A batch answers 200 with an error per item: those are error answers too.)
        assert answer.status_code >= 400 or "error" in answer.text, (index, answer.status_code)
        answers.append({"status": answer.status_code, "headers": dict(answer.headers), "body": answer.text})
    return answers


PROBES = {"logs": logs, "canary": canary}

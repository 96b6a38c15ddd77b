"""Scenario (a): unicast fan-out to many WebSocket clients, deliveries per second, side by side.

Every server gets the same offered load: rounds of one ~200-byte message per connection, at most ``window``
messages per connection in flight end to end. Throughput is what the clients received divided by the time
from their first receipt to their last. The gateway may coalesce what is queued for a connection into one
write; the baselines send through their usual per-message API.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from tidings.bench.harness import Fleet, load_average, span_rate, utilisation
from tidings.bench.servers import STALL_SECONDS

# Messages per connection for each kind at full size: about 3-8 s of work each, bounded for the slow ones.
PER_CONN = {
    "tidings": 600,
    "tidings-gc": 600,
    "tidings-tuned": 600,
    "tidings-bare": 600,
    "tidings-uvicorn": 100,
    "starlette": 100,
    "socketio": 15,
    "raw": 400,
    "node": 400,
    "mosquitto": 400,
}


@dataclass(frozen=True)
class FanoutSpec:
    kind: str
    connections: int = 1000
    per_conn: int = 100
    window: int = 32
    payload: int = 200
    client_procs: int = 2
    servers: int = 1


async def run_fanout(spec: FanoutSpec) -> dict[str, Any]:
    fleet = Fleet(spec.kind, spec.connections, spec.client_procs, payload_size=spec.payload)
    try:
        await fleet.start_servers(spec.servers)
        await fleet.start_clients()
        if not await fleet.wait_connected(spec.connections):
            raise RuntimeError(f"{spec.kind}: not every client connected")
        await asyncio.sleep(0.5)  # the gateway's first store read per stream ends before the load starts
        load = load_average()
        before, started = fleet.cpu(), time.perf_counter()
        command = {
            "cmd": "fanout",
            "connections": spec.connections,
            "per_conn": spec.per_conn,
            "window": spec.window,
            "counters": fleet.counters.path if fleet.counters else "",
            "slots": spec.client_procs,
        }
        for server in fleet.servers:
            await server.send(command)
        replies = [await server.expect("fanout", 600) for server in fleet.servers]
        published = sum(r["published"] for r in replies)
        stalled = [r["diagnosis"] for r in replies if r.get("stalled")]
        complete = not stalled and await fleet.wait_received(published, timeout=60)
        wall = time.perf_counter() - started
        after = fleet.cpu()
        stats = [await server.call({"cmd": "stats"}, "stats") for server in fleet.servers]
        assert fleet.counters is not None
        received, span = span_rate(fleet.counters)
        return {
            "scenario": "fanout",
            "kind": spec.kind,
            "servers": spec.servers,
            "connections": spec.connections,
            "payload": spec.payload,
            "window": spec.window,
            "published": published,
            "received": received,
            "complete": complete,
            "seconds": round(span, 4),
            "rate": round(received / span, 1) if span > 0 else 0.0,
            "load": round(load, 2),
            **utilisation(before, after, wall),
            **_gateway_extras(stats),
            **({} if complete else _failed(published, received, stalled, fleet.diagnosis())),
        }
    finally:
        await fleet.close()


def _failed(
    published: int, received: int, servers: list[dict[str, Any]], clients: dict[str, Any]
) -> dict[str, Any]:
    """A run that stopped making progress: a failed result that says what each side sent, received and holds."""
    why = (
        f"stalled: no receipts for {STALL_SECONDS:g} s"
        if servers
        else "incomplete: not every frame arrived in time"
    )
    return {
        "ok": False,
        "error": f"{why} ({received} of {published} frames received)",
        "diagnosis": {"servers": servers, "clients": clients},
    }


def _gateway_extras(replies: list[dict[str, Any]]) -> dict[str, Any]:
    writes = sum(r.get("writes", 0) for r in replies)
    sent = sum(r.get("frames_sent", 0) for r in replies)
    return (
        {"frames_per_write": round(sent / writes, 2), "writes": writes, "frames_sent": sent} if writes else {}
    )

"""Scenarios (b)-(f): connections and memory, latency, ingest, celebrity fan-out, resume storm.

Each function runs one bounded measurement and returns a flat dict (the structured result); ``runner`` repeats
them and ``report`` summarises. Scenario (a), fan-out throughput, is in ``fanout.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson

from tidings.bench.harness import Fleet, load_average, profile_child, utilisation, workdir
from tidings.bench.procs import Child, python_child

REDIS = "redis://127.0.0.1:6379/0"  # the event log next to PostgreSQL in the celebrity scenario


async def run_connections(kind: str, connections: int, procs: int) -> dict[str, Any]:
    """(b): hold ``connections`` idle WebSocket connections; server memory per connection (RSS growth)."""
    fleet = Fleet(kind, connections, procs)
    try:
        await fleet.start_servers()
        await asyncio.sleep(0.5)
        before = fleet.servers[0].rss_bytes()
        load = load_average()
        seconds = await fleet.start_clients(read_buffer=1024, timeout=600)
        ok = await fleet.wait_connected(connections, timeout=120)
        await asyncio.sleep(1.0)  # let the last streams finish their first store read
        grown = fleet.servers[0].rss_bytes() - before
        assert fleet.counters is not None
        held = fleet.counters.total_connected()
        return {
            "scenario": "connections",
            "kind": kind,
            "connections": connections,
            "held": held,
            "ok": ok,
            "bytes_per_connection": round(grown / max(1, held)),
            "server_rss_mb": round(fleet.servers[0].rss_bytes() / 2**20, 1),
            "connect_seconds": round(seconds, 2),
            "load": round(load, 2),
        }
    finally:
        await fleet.close()


async def run_resume(kind: str, connections: int, backlog: int, procs: int) -> dict[str, Any]:
    """(f): ``connections`` clients reconnect at once with ``after=0`` and a backlog of ``backlog`` rows each;
    seconds from the go until every client has its whole backlog, and the server's CPU-seconds over the storm
    (``server_cpu_seconds``: what compares on a shared machine, where the seconds follow the load)."""
    fleet = Fleet(kind, connections, procs, rows_per_user=backlog)
    try:
        await fleet.start_servers()
        await fleet.start_clients(hold=True, after=0, expect=backlog, read_buffer=2048)
        load = load_average()
        before = fleet.cpu()
        go = time.monotonic_ns()
        for client in fleet.clients:
            await client.send({"cmd": "go"})
        ok = await fleet.wait_connected(connections, timeout=300)
        wall = (time.monotonic_ns() - go) / 1e9
        spent = fleet.cpu()
        assert fleet.counters is not None
        last = max((s.last_ns for s in fleet.counters.all()), default=go)
        return {
            "scenario": "resume",
            "kind": kind,
            "connections": connections,
            "backlog": backlog,
            "resumed": fleet.counters.total_connected(),
            "ok": ok,
            "seconds": round((last - go) / 1e9, 3),
            "server_cpu_seconds": round(spent[0] - before[0], 2),
            "load": round(load, 2),
            **utilisation(before, spent, wall),
        }
    finally:
        await fleet.close()


async def _producer(fleet: Fleet, **spec: Any) -> dict[str, Any]:
    spec = {"port": fleet.port, "api_key": fleet.app["api_key"], "users": fleet.connections or 1000, **spec}
    child = await Child.start("producer", python_child("producer", orjson.dumps(spec).decode()))
    try:
        await child.expect("ready", 30)
        return await child.expect("done", spec["seconds"] + 120)
    finally:
        await child.stop()


async def run_ingest(batch: int, connections: int, seconds: float) -> dict[str, Any]:
    """(d): accepted events/s of one API process (embedded log), closed loop; ``batch`` 0 = single endpoint."""
    fleet = Fleet("tidings", 0, 1, stack_roles="api")
    try:
        await fleet.start_servers()
        load = load_average()
        before, started = fleet.cpu(), time.perf_counter()
        done = await _producer(fleet, batch=batch, connections=connections, seconds=seconds, rate=0)
        wall = time.perf_counter() - started
        return {
            "scenario": "ingest",
            "kind": "batch" if batch else "single",
            "batch": batch,
            "connections": connections,
            "accepted": done["accepted"],
            "refused": done["refused"],
            "rate": round(done["rate"], 1),
            "ok": done["refused"] == 0,
            "load": round(load, 2),
            **utilisation(before, fleet.cpu(), wall),
        }
    finally:
        await fleet.close()


async def run_latency(kind: str, rate: int, batch: int, seconds: float, connections: int) -> dict[str, Any]:
    """(c): events at ``rate``/s through API -> log -> worker -> inbox -> bus -> gateway -> client, in one
    process on embedded backends; latency from the producer's answer to the client's receipt."""
    fleet = Fleet(kind, connections, 1, stack_roles="api,worker,gateway")
    work = workdir()
    try:
        await fleet.start_servers()
        await fleet.start_clients(record=str(work / "received.txt"), read_buffer=4096)
        await fleet.wait_connected(connections)
        await asyncio.sleep(0.5)
        load = load_average()
        sent = work / "sent.txt"
        before, started = fleet.cpu(), time.perf_counter()
        done = await _producer(
            fleet, batch=batch, connections=4, seconds=seconds, rate=rate, record=str(sent)
        )
        await fleet.wait_received(done["accepted"], timeout=60)
        # The server's CPU from the first event sent to the last received, per event: what an event costs
        # the whole pipeline (API, log, worker, inbox, bus, gateway) in the one process.
        cpu = fleet.cpu()[0] - before[0]
        wall = time.perf_counter() - started
        for client in fleet.clients:
            await client.call({"cmd": "stop"}, "stopped", 60)
        latencies = _join(sent, work / "received.txt")
        return {
            "scenario": "latency",
            "kind": kind,
            "rate": rate,
            "achieved_rate": round(done["rate"], 1),
            "batch": batch,
            "events": done["accepted"],
            "delivered": len(latencies),
            "ok": len(latencies) == done["accepted"],
            **_percentiles(latencies),
            "server_cpu_us": round(cpu / done["accepted"] * 1e6, 1) if done["accepted"] else 0.0,
            "server_cpu": round(cpu / wall, 3) if wall > 0 else 0.0,
            "load": round(load, 2),
        }
    finally:
        await fleet.close()
        for path in work.iterdir():
            path.unlink()
        work.rmdir()


def _join(sent: Path, received: Path) -> list[float]:
    """Milliseconds from each event's accepted answer to its receipt by the client (may be < 0: the client
    can get the notification before the producer has read the 202)."""
    accepted = dict(line.split() for line in sent.read_text().splitlines() if line)
    latencies = []
    for line in received.read_text().splitlines():
        event_id, at = line.split()
        if event_id in accepted:
            latencies.append((int(at) - int(accepted[event_id])) / 1e6)
    return latencies


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "p999_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": round(ordered[-1], 2)}


async def run_celebrity(store: str, followers: int) -> dict[str, Any]:
    """(e): one event to ``followers`` topic subscribers; seconds until every inbox row exists."""
    work = workdir()
    spec = {
        "store": store,
        "broker": REDIS,
        "data": str(work),
        "followers": followers,
        "tag": f"{os.getpid()}",
    }
    child = await Child.start("celebrity", python_child("celebrity", orjson.dumps(spec).decode()))
    profiler = await profile_child(child, f"celebrity-{'pg' if store.startswith('postgres') else 'sqlite'}")
    load = load_average()
    try:
        done = await child.expect("done", 900)
    finally:
        await child.stop()
        if profiler is not None:
            await profiler.wait()
        shutil.rmtree(work)
    return {
        "scenario": "celebrity",
        "kind": "postgresql" if store.startswith("postgres") else "sqlite",
        "followers": followers,
        "rows": done["rows"],
        "ok": done["rows"] == followers,
        "seconds": round(done["seconds"], 2),
        "rows_per_second": round(done["rows"] / done["seconds"], 1) if done["seconds"] else 0.0,
        "load": round(load, 2),
    }

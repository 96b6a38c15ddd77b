"""Scenario (d), ingest: accepted events/s of one API process, beside a bare FastAPI endpoint in the same run.

``tidings`` is an API-only Tidings process (embedded log, ``sqlite_synchronous=FULL``): every 202 is a
committed event. ``bare`` is the baseline the issue names: a FastAPI app on uvicorn (same server settings)
that parses the same body with the same pydantic model (``EventIn``; batch items with ``BatchEventIn``) and
answers 202 without authenticating, storing or counting anything. The ratio of the two is what the API's
own work per event costs.

Besides the rate, each result has the CPU the server process used per accepted event (``server_cpu_us``,
user + system from ``/proc``), which contention on the shared machine disturbs least, and the producer's CPU
(``client_cpu_max``), so a run limited by the load generator says so.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson
from fastapi import FastAPI

from tidings.api.schemas import Accepted, BatchEventIn, BatchIn, BatchOut, EventIn
from tidings.bench.harness import Fleet, load_average, profile_child, utilisation
from tidings.bench.procs import Child, emit

KINDS = ("tidings", "bare")
BARE_ID = "01BARE0000000000000000000"  # every bare answer carries this id: nothing is stored


def bare_app() -> FastAPI:
    """The baseline app: same models, same status codes, no auth, no log, no middleware."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/events", status_code=202)
    async def post_event(event: EventIn) -> Accepted:
        return Accepted(id=BARE_ID)

    @app.post("/v1/events/batch")
    async def post_batch(batch: BatchIn) -> BatchOut:
        # As the real route: each item validated alone, so one bad item is refused alone.
        results: list[Any] = []
        for raw in batch.events:
            BatchEventIn.model_validate(raw)
            results.append(Accepted(id=BARE_ID))
        return BatchOut(results=results)

    return app


async def serve_bare() -> None:
    """The ``bare`` server role: prints ``listening`` with its port, runs until stdin closes."""
    from tidings.bench.procs import commands
    from tidings.bench.servers import _start_uvicorn, tune_gc

    tune_gc()  # as the Tidings process under test does
    holder: Any = type("Holder", (), {"_uvicorn": None})()
    port = await _start_uvicorn(holder, bare_app(), 0)
    emit("listening", port=port, ws_port=port, pid=os.getpid())
    try:
        async for _ in commands():
            pass
    finally:
        holder._uvicorn.should_exit = True


async def _start_bare(fleet: Fleet) -> None:
    argv = [sys.executable, "-m", "tidings.bench.ingest", "bare"]
    child = await Child.start("ingest-bare-server", argv)
    fleet.servers.append(child)
    profiler = await profile_child(child, "ingest-bare")
    if profiler is not None:
        fleet.profilers.append(profiler)
    fleet.port = (await child.expect("listening", 60))["port"]
    fleet.app = {"api_key": "unused"}


async def run_ingest(batch: int, connections: int, seconds: float, kind: str = "tidings") -> dict[str, Any]:
    """(d): accepted events/s of one ``kind`` server process, closed loop; ``batch`` 0 = single endpoint."""
    fleet = Fleet("tidings", 0, 1, stack_roles="api")
    try:
        if kind == "bare":
            await _start_bare(fleet)
        else:
            await fleet.start_servers()
        spec = {"port": fleet.port, "api_key": fleet.app["api_key"], "users": 1000}
        spec |= {"batch": batch, "connections": connections, "seconds": seconds, "rate": 0}
        producer = await Child.start("producer", _producer_argv(spec))
        try:
            await producer.expect("ready", 30)
            load = load_average()
            before = (fleet.cpu()[0], [producer.cpu_seconds()])
            started = time.perf_counter()
            done = await producer.expect("done", seconds + 120)
            wall = time.perf_counter() - started
            after = (fleet.cpu()[0], [producer.cpu_seconds()])
        finally:
            await producer.stop()
        used = after[0] - before[0]
        return {
            "scenario": "ingest",
            "kind": _label(kind, batch),
            "batch": batch,
            "connections": connections,
            "accepted": done["accepted"],
            "refused": done["refused"],
            "rate": round(done["rate"], 1),
            "server_cpu_us": round(used / max(1, done["accepted"]) * 1e6, 2),
            "ok": done["refused"] == 0 and done["accepted"] > 0,
            "load": round(load, 2),
            **utilisation(before, after, wall),
        }
    finally:
        await fleet.close()


def _label(kind: str, batch: int) -> str:
    """``single``/``batch`` for Tidings (the names earlier results use), ``bare single``/``bare batch``."""
    shape = "batch" if batch else "single"
    return shape if kind == "tidings" else f"{kind} {shape}"


def _producer_argv(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "tidings.bench", "producer", orjson.dumps(spec).decode()]


if __name__ == "__main__":  # the bare server role: python -m tidings.bench.ingest bare
    import uvloop

    if sys.argv[1:] != ["bare"]:
        raise SystemExit("usage: python -m tidings.bench.ingest bare")
    uvloop.run(serve_bare())

"""A whole Tidings process for the end-to-end scenarios, started by the bench (not by ``tidings serve``).

Roles as ``tidings serve`` has them (API on uvicorn, fan-out worker, gateway) on the embedded backends; the
gateway's WebSocket listener is ``gateway.listener`` on its own port (``ws_server="fastws"``), or the ASGI
shell on the API port (``"uvicorn"``), as the service has it today. The service cannot pick fastws yet: the
settings/service change it needs is written in docs/decisions/0002-gateway-websocket-server.md.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from tidings.bench.procs import commands, emit
from tidings.bench.servers import _start_uvicorn, bench_settings, tune_gc

UNLIMITED = 1e12  # the producer key's rate limit is not what these scenarios measure


async def serve_stack(data: str, roles: str, ws_server: str) -> None:
    """``roles``: comma-separated ``api``, ``worker``, ``gateway``. Prints ``listening`` with both ports."""
    from tidings.gateway.hub import Hub
    from tidings.gateway.listener import FastGateway
    from tidings.service import build_app, close_runtime, open_runtime
    from tidings.worker import FanoutWorker

    wanted = set(roles.split(","))
    switch = os.environ.get("TIDINGS_BENCH_SWITCH_INTERVAL")  # an experiment knob: the GIL hand-over period
    if switch:
        sys.setswitchinterval(float(switch))
    # The defaults (durable commits: sqlite_synchronous FULL; heartbeats), but no producer rate limit.
    settings = bench_settings(
        data, rate_per_key=UNLIMITED, rate_burst=UNLIMITED, heartbeat_interval=15.0, sqlite_synchronous="FULL"
    )
    tune_gc()  # as ``tidings serve`` does since the fastws listener landed (cli._tune_gc)
    runtime = await open_runtime(settings)
    runtime.hub = runtime.hub or Hub(runtime.bus)
    asgi_roles = (wanted - {"gateway"}) | (
        {"gateway"} if ws_server == "uvicorn" and "gateway" in wanted else set()
    )
    holder: Any = type("Holder", (), {"_uvicorn": None})()
    port = await _start_uvicorn(holder, build_app(runtime, asgi_roles or {"worker"}), 0)
    gateway = None
    ws_port = port
    if "gateway" in wanted and ws_server == "fastws":
        gateway = FastGateway(runtime, "127.0.0.1", 0)
        ws_port = await gateway.start()
    worker = FanoutWorker(runtime) if "worker" in wanted else None
    worker_task = asyncio.create_task(worker.run()) if worker else None
    emit("listening", port=port, ws_port=ws_port, pid=os.getpid())
    try:
        async for command in commands():
            if command.get("cmd") == "lag":
                emit("lag", lag=await runtime.log.lag())
    finally:
        if worker is not None and worker_task is not None:
            worker.stop()
            await worker_task
        if gateway is not None:
            await gateway.close(timeout=1.0)
        holder._uvicorn.should_exit = True
        await close_runtime(runtime)

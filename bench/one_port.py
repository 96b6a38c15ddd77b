"""One port for HTTP and WebSocket, measured both ways (docs/decisions/0007-one-port-listener.md).

Each mode is a server process with the gateway's real per-connection work (``TidingsKind``'s runtime: hub,
``LiveStream``, journal, histograms) and the HTTP app of ``tidings serve`` (``build_app``), listening on:

- ``own-port``: uvicorn (plain httptools protocol) for HTTP, the fast listener on a second port (before 0007);
- ``front``: uvicorn's protocol in front (``gateway.front``: deadlines, per-IP cap), upgrades handed to the fast
  listener (option A, what ``tidings serve`` runs now);
- ``sniff``: the fast listener in front: it reads each new connection's first request line and hands anything
  but ``/v1/ws`` to uvicorn's plain httptools protocol (option B, no deadlines: its best case);
- ``uvicorn``: uvicorn's protocol for everything, WebSocket through the ASGI shell (the fallback).

In the same run, interleaved, ``--reps`` times: HTTP requests/s (GET /healthz, keep-alive, from 32 connections;
and one request per new connection, from 8), then WebSocket frames/s delivered (picows clients in a process of
their own; ``drive`` keeps a window of frames in flight). Run from a checkout:
``PYTHONPATH=src python bench/one_port.py --reps 3``. Keep runs short: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tidings.bench.counters import Counters
from tidings.bench.harness import prepare_app, span_rate, workdir
from tidings.bench.procs import Child, commands, emit, python_child
from tidings.bench.servers import TidingsKind, _obey, _QuietServer, sample_payload, tidings_runtime, tune_gc
from tidings.gateway.front import Front
from tidings.gateway.listener import PATH, FastGateway
from tidings.service import build_app

MODES = ("own-port", "front", "sniff", "uvicorn")
WS_PREFIX = b"GET " + PATH.encode()


def sniffing(gateway: FastGateway, config: uvicorn.Config, server: uvicorn.Server) -> Any:
    """Option B: a protocol that reads a connection's first bytes and keeps ``/v1/ws`` or hands over to uvicorn."""

    class Sniff(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer = b""
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            if len(self.buffer) < len(WS_PREFIX) + 1:
                return
            buffer, self.buffer = self.buffer, b""
            if buffer.startswith(WS_PREFIX) and buffer[len(WS_PREFIX)] in b" ?":
                gateway.adopt(self.transport, buffer)
                return
            http = HttpToolsProtocol(config, server.server_state, {})
            self.transport.set_protocol(http)
            http.connection_made(self.transport)
            http.data_received(buffer)

        def connection_lost(self, exc: Exception | None) -> None:
            return None

    return Sniff


async def serve(mode: str, data: str) -> None:
    kind = TidingsKind(data, "fastws", sample_payload(200), False)
    # The per-IP cap is not what is measured: every client here is 127.0.0.1, opening 300 sockets at once.
    kind.runtime, kind.bus = await tidings_runtime(data, max_connections_per_ip=0)
    tune_gc()
    runtime = kind.runtime
    app = build_app(runtime, {"api", "gateway"})
    gateway = kind.gateway = FastGateway(runtime, "127.0.0.1", 0)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http="httptools",
        ws="websockets-sansio",
        lifespan="off",
        log_config=None,
        access_log=False,
        ws_ping_interval=None,
        backlog=4096,
    )
    server = _QuietServer(config)
    if mode == "front":
        config.http = Front.of(runtime.settings, gateway).protocol()
    ws_port = 0
    if mode == "own-port":
        ws_port = await gateway.start()
    if mode == "sniff":
        config.load()
        sniff = sniffing(gateway, config, server)
        listener = await asyncio.get_running_loop().create_server(sniff, "127.0.0.1", 0, backlog=4096)
        port = listener.sockets[0].getsockname()[1]
        config.port = 0
    asyncio.get_running_loop().create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has no start-up event
        await asyncio.sleep(0.01)
    if mode != "sniff":
        port = server.servers[0].sockets[0].getsockname()[1]
    emit("listening", port=port, ws_port=ws_port or port, pid=os.getpid())
    async for command in commands():
        await _obey(kind, command)


async def http_load(port: int, connections: int, seconds: float, keep_alive: bool) -> tuple[float, int]:
    """Requests/s of GET /healthz from ``connections`` clients for ``seconds``, and the requests answered."""
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n" + (b"" if keep_alive else b"Connection: close\r\n")
    request += b"\r\n"
    deadline = time.perf_counter() + seconds
    counts = [0] * connections

    async def one(index: int) -> None:
        reader = writer = None
        while time.perf_counter() < deadline:
            if reader is None or writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            counts[index] += 1
            if not keep_alive:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(connections)))
    return sum(counts) / (time.perf_counter() - started), sum(counts)


async def frames_per_second(
    server: Child, app: dict[str, str], ws_port: int, mode: str, n: int
) -> tuple[float, float]:
    """Frames/s received by the clients, and the server's CPU microseconds per frame during the fan-out."""
    directory = workdir()
    counters = Counters(directory / "counters", 1, create=True)
    args = {
        "proto": "tidings",
        "url": f"ws://127.0.0.1:{ws_port}/v1/ws",
        "port": ws_port,
        "count": n,
        "first_user": 0,
        "user_prefix": f"{mode}-",
        "app": app["app"],
        "secret": app["jwt_secret"],
        "counters": str(counters.path),
        "slots": 1,
        "slot": 0,
        "hold": False,
    }
    clients = await Child.start("clients", python_child("clients", orjson.dumps(args).decode()))
    try:
        await clients.expect("connected", 120)
        deadline = time.monotonic() + 60
        while counters.total_connected() < n and time.monotonic() < deadline:  # noqa: ASYNC110 - every stream is ready
            await asyncio.sleep(0.05)
        command = {"cmd": "fanout", "counters": str(counters.path), "slots": 1}
        cpu = server.cpu_seconds()
        try:
            await server.call({**command, "connections": n, "per_conn": 200, "window": 64}, "fanout", 60)
        except TimeoutError:  # a stalled run is reported as failed, not waited on
            print(
                f"{mode}: fan-out stalled at {counters.total_received()} of {n * 200} frames", file=sys.stderr
            )
            return float("nan"), float("nan")
        cpu = server.cpu_seconds() - cpu
        received, seconds = span_rate(counters)
        return (received / seconds if seconds else 0.0), cpu * 1e6 / max(1, received)
    finally:
        await clients.send({"cmd": "stop"})
        await clients.stop()
        counters.close()


async def measure(mode: str, connections: int) -> dict[str, float]:
    data = workdir() / "data"
    app = await prepare_app(data)
    server = await Child.start(mode, [sys.executable, __file__, "server", mode, str(data)])
    try:
        listening = await server.expect("listening", 60)
        port = listening["port"]
        result: dict[str, float] = {}
        for name, clients, seconds, keep_alive in (
            ("keepalive", 32, 3.0, True),
            ("new_conn", 8, 2.0, False),
        ):
            cpu = server.cpu_seconds()
            rate, count = await http_load(port, clients, seconds, keep_alive)
            result[f"http_{name}_rps"] = rate
            result[f"http_{name}_us_cpu"] = (server.cpu_seconds() - cpu) * 1e6 / max(1, count)
        rate, us = await frames_per_second(server, app, listening["ws_port"], mode, connections)
        result["ws_frames_per_s"], result["ws_us_cpu_per_frame"] = rate, us
        return result
    finally:
        await server.stop()


async def main(reps: int, connections: int) -> None:
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for rep in range(reps):
        for mode in MODES if rep % 2 == 0 else tuple(reversed(MODES)):
            results[mode].append(await measure(mode, connections))
            print(f"rep {rep} {mode}: {results[mode][-1]}", file=sys.stderr, flush=True)
    keys = list(results[MODES[0]][0])
    print("median of", reps, "interleaved runs; *_us_cpu: server CPU microseconds per request or frame")
    print(f"{'mode':<10}" + "".join(f"{key:>24}" for key in keys))
    for mode, runs in results.items():
        cells = [statistics.median([r[key] for r in runs if r[key] == r[key]] or [0.0]) for key in keys]
        print(f"{mode:<10}" + "".join(f"{cell:>24,.1f}" for cell in cells))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        import uvloop

        uvloop.run(serve(sys.argv[2], sys.argv[3]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--reps", type=int, default=3)
        parser.add_argument("--connections", type=int, default=500)
        options = parser.parse_args()
        import uvloop

        uvloop.run(main(options.reps, options.connections))

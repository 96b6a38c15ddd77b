"""What idle connections cost: the CPU of one ``tidings serve`` (embedded SQLite) holding N idle WebSocket
connections, for two checkouts of the code side by side in the same run (docs/performance.md, "Idle
connections").

For each round, each size and each code (interleaved): a fresh data directory with one app and one committed
notification per user (``u0`` .. ``uN-1``), ``python -m tidings serve`` from that code's ``src`` with
``TIDINGS_HEARTBEAT_INTERVAL`` set, N picows clients from this process (one user each, no cursor; each answers
the server's pings with a pong, as the SDKs do), a settling pause, then the server's CPU over ``--seconds`` read
from ``/proc/<pid>/stat``, and the pings the clients heard meanwhile. One JSON line per measurement on stdout.

Make the baseline's tree first, e.g. ``git archive main src | tar -x -C /tmp/tidings-main``, then:
``PYTHONPATH=src python bench/idle_connections.py --code main=/tmp/tidings-main/src --code branch=src``.
Bounded: every wait has a deadline; the servers are stopped by their pid. Keep runs short: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from tidings.bench.clients import token
from tidings.bench.harness import load_average, prepare_app, workdir
from tidings.bench.procs import cpu_seconds

CONNECT_CONCURRENCY = 64
PONG = b'{"type":"pong"}'


class Counts:
    def __init__(self) -> None:
        self.ready = 0
        self.pings = 0
        self.closed = 0


def listener(counts: Counts, auth: bytes) -> type[WSListener]:
    class Client(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: WSTransport) -> None:
            transport.send(WSMsgType.TEXT, auth)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type != WSMsgType.TEXT:
                return
            kind = orjson.loads(frame.get_payload_as_bytes()).get("type")
            if kind == "ping":
                counts.pings += 1
                transport.send(WSMsgType.TEXT, PONG)
            elif kind == "ready":
                counts.ready += 1

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            counts.closed += 1

    return Client


async def connect(url: str, app: dict[str, str], n: int, counts: Counts) -> list[Any]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int) -> Any:
        auth = orjson.dumps({"type": "auth", "token": token(app["app"], app["jwt_secret"], f"u{i}")})
        async with gate:
            transport, _ = await ws_connect(listener(counts, auth), url, websocket_handshake_timeout=60)
        return transport

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def wait_until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {within} s")
        await asyncio.sleep(0.1)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(code: str, src: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    data = workdir()
    app = await prepare_app(data / "data", users=n, rows_per_user=1)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        PYTHONPATH=str(src),
        TIDINGS_HEARTBEAT_INTERVAL=str(args.heartbeat),
        TIDINGS_MAX_CONNECTIONS_PER_IP="0",  # every client is 127.0.0.1
    )
    argv = [sys.executable, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--data", str(data / "data")]
    log = (data / "server.log").open("wb")
    # Popen returns at once; readiness is polled without blocking. A session of its own: signals go to it only.
    server = subprocess.Popen(  # noqa: ASYNC220
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    transports: list[Any] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            deadline = time.monotonic() + 30
            while not await ready():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready: {(data / 'server.log').read_text()[-2000:]}")
                await asyncio.sleep(0.1)
        counts = Counts()
        transports = await asyncio.wait_for(connect(f"ws://127.0.0.1:{port}/v1/ws", app, n, counts), 120)
        await wait_until(lambda: counts.ready == n, 60, "ready frames")
        await asyncio.sleep(args.settle)
        load = load_average()
        pings, before, started = counts.pings, cpu_seconds(server.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu, wall = cpu_seconds(server.pid) - before, time.monotonic() - started
        if counts.closed:
            raise RuntimeError(f"{counts.closed} connections closed during the run")
        return {
            "code": code,
            "connections": n,
            "heartbeat_s": args.heartbeat,
            "seconds": round(wall, 1),
            "server_cpu_s": round(cpu, 2),
            "cores": round(cpu / wall, 4),
            "pings_per_s": round((counts.pings - pings) / wall, 1),
            "load1": load,
        }
    finally:
        for transport in transports:
            transport.disconnect()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def parse() -> tuple[argparse.Namespace, list[tuple[str, Path]]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--code", action="append", required=True, help="name=path of a checkout's src dir")
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0, help="pause after the last ready frame")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="TIDINGS_HEARTBEAT_INTERVAL (s)")
    args = parser.parse_args()
    return args, [(name, Path(path).resolve()) for name, path in (c.split("=", 1) for c in args.code)]


async def main(args: argparse.Namespace, codes: list[tuple[str, Path]]) -> None:
    for _ in range(args.rounds):
        for n in (int(s) for s in args.sizes.split(",")):
            for name, src in codes:
                print(orjson.dumps(await measure(name, src, n, args)).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*parse()))

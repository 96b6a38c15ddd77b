"""Wide fan-out, one `tidings serve` process: N events to R recipients each, P-byte payloads, every recipient
connected over WebSocket. Prints peak server RSS and accepted -> receipt latency percentiles as JSON.

    PYTHONPATH=src .venv/bin/python bench/wide_fanout.py --engine pg-nats   # PostgreSQL store + NATS log/bus
    PYTHONPATH=src .venv/bin/python bench/wide_fanout.py --engine embedded  # SQLite + in-process

Bounded: every wait has a deadline (``--deadline``), and a run that receives nothing for ``--stall`` seconds
stops and reports what it got. Loopback only; the PostgreSQL schema and NATS streams of its namespace are
removed afterwards. Extra ``TIDINGS_*`` settings pass through to the server (e.g. TIDINGS_WORKER_BATCH=64).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import jwt
import websockets

TIDINGS = str(Path(sys.executable).parent / "tidings")
POSTGRES = os.environ.get("WIDE_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
NATS = os.environ.get("WIDE_NATS", "nats://127.0.0.1:4222")
# WIDE_WRAP=script.py runs the server as ``python script.py serve ...`` (e.g. a tracemalloc wrapper).
SERVER = [sys.executable, os.environ["WIDE_WRAP"]] if os.environ.get("WIDE_WRAP") else [TIDINGS]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def drop_namespace(namespace: str) -> None:
    import asyncpg
    import nats

    with contextlib.suppress(Exception):
        pg = await asyncpg.connect(POSTGRES, timeout=5)
        await pg.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        await pg.close()
    with contextlib.suppress(Exception):
        nc = await nats.connect(NATS, connect_timeout=3)
        js = nc.jetstream()
        for lane in ("high", "normal", "low"):
            with contextlib.suppress(Exception):
                await js.delete_stream(f"{namespace}_events_{lane}")
        await nc.close()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=("pg-nats", "embedded"), default="pg-nats")
    ap.add_argument("--events", type=int, default=1500)
    ap.add_argument("--recipients", type=int, default=26)
    ap.add_argument("--payload", type=int, default=4096, help="bytes of text in each event's data")
    ap.add_argument("--batch", type=int, default=10, help="events per POST /v1/events/batch")
    ap.add_argument("--concurrency", type=int, default=4, help="batch requests in flight")
    ap.add_argument("--rate", type=float, default=100.0, help="events per second offered (0: all at once)")
    ap.add_argument("--split", action="store_true", help="api, worker and gateway in 3 processes")
    ap.add_argument("--deadline", type=float, default=240.0)
    ap.add_argument("--stall", type=float, default=20.0)
    args = ap.parse_args()

    namespace = "wf" + secrets.token_hex(4)
    data = Path(tempfile.mkdtemp(prefix="wide-fanout-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("TIDINGS_")})
    env.update({"TIDINGS_NAMESPACE": namespace, "TIDINGS_DATA": str(data), "TIDINGS_RATE_PER_KEY": "0"})
    if args.engine == "pg-nats":
        env.update({"TIDINGS_STORE": POSTGRES, "TIDINGS_BROKER": NATS})
    created = subprocess.run(  # noqa: ASYNC221 - once, before anything runs
        [TIDINGS, "apps", "create", "wide"], env=env, capture_output=True, text=True, check=True
    )
    app = json.loads(created.stdout)
    roles = ("api", "worker", "gateway") if args.split else ("serve",)
    ports = {role: free_port() for role in roles}
    servers: dict[str, subprocess.Popen[bytes]] = {}
    for role in roles:
        with data.with_suffix(f".{role}.log").open("wb") as out:
            servers[role] = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [*(SERVER if role == os.environ.get("WIDE_WRAP_ROLE", role) else [TIDINGS]), role, "--port", str(ports[role]), "--host", "127.0.0.1", "--metrics-port", "-1"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    api = f"http://127.0.0.1:{ports.get('api', ports.get('serve'))}"
    gateway = f"http://127.0.0.1:{ports.get('gateway', ports.get('serve'))}"
    result: dict[str, object] = {"engine": args.engine, "events": args.events, "recipients": args.recipients}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for role, proc in servers.items():
                for _ in range(1800):
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(f"http://127.0.0.1:{ports[role]}/readyz")).status_code == 200:
                            break
                    assert proc.poll() is None, data.with_suffix(f".{role}.log").read_text()[-3000:]
                    await asyncio.sleep(0.1)
            pids = {role: proc.pid for role, proc in servers.items()}
            result.update(await run(args, app, api, gateway, http, pids))
    finally:
        for proc in servers.values():
            proc.terminate()
        for proc in servers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if args.engine == "pg-nats":
            await drop_namespace(namespace)
    print(json.dumps(result))
    return 0 if result.get("received") == args.events * args.recipients else 1


async def run(
    args: argparse.Namespace,
    app: dict[str, str],
    api: str,
    gateway: str,
    http: httpx.AsyncClient,
    pids: dict[str, int],
) -> dict[str, object]:
    users = [f"u{i}" for i in range(args.recipients)]
    accepted: dict[int, float] = {}
    receipts: list[tuple[int, float]] = []
    ready = 0
    sockets = []
    peak = dict.fromkeys(pids, 0)
    for user in users:
        token = jwt.encode(
            {"iss": app["app"], "sub": user, "aud": "tidings", "exp": int(time.time()) + 3600},
            app["jwt_secret"],
            algorithm="HS256",
        )
        ws = await websockets.connect(gateway.replace("http", "ws") + "/v1/ws", max_size=2**22)
        await ws.send(json.dumps({"type": "auth", "token": token, "after": 0}))
        sockets.append(ws)

    async def reader(ws: websockets.ClientConnection) -> None:
        nonlocal ready
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "notification":
                receipts.append((frame["notification"]["data"]["i"], time.monotonic()))
            elif kind == "ready":
                ready += 1
            elif kind == "ping":
                await ws.send('{"type":"pong"}')

    readers = [asyncio.create_task(reader(ws)) for ws in sockets]
    for _ in range(300):
        if ready >= len(sockets):
            break
        await asyncio.sleep(0.05)
    headers = {"Authorization": f"Bearer {app['api_key']}"}
    text = "x" * args.payload
    gate = asyncio.Semaphore(args.concurrency)

    async def post(first: int) -> None:
        if args.rate > 0:
            await asyncio.sleep(max(0.0, start + first / args.rate - time.monotonic()))
        events = [
            {"type": "wide", "actor": {"id": "a"}, "recipients": users, "data": {"i": i, "text": text}}
            for i in range(first, min(first + args.batch, args.events))
        ]
        async with gate:
            for _ in range(100):  # a producer retries a 503 after its Retry-After
                response = await http.post(f"{api}/v1/events/batch", json={"events": events}, headers=headers)
                if response.status_code != 503:
                    break
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        now = time.monotonic()
        assert response.status_code == 200, response.text
        for i in range(first, first + len(events)):
            accepted[i] = now

    want = args.events * args.recipients
    start = time.monotonic() + 0.5
    posting = asyncio.gather(*(post(first) for first in range(0, args.events, args.batch)))
    last_count, last_change = 0, time.monotonic()
    while len(receipts) < want and time.monotonic() - start < args.deadline:
        for role, pid in pids.items():
            peak[role] = max(peak[role], rss_kib(pid))
        if len(receipts) != last_count:
            last_count, last_change = len(receipts), time.monotonic()
        elif time.monotonic() - last_change > args.stall:
            break
        await asyncio.sleep(0.05)
    await posting
    elapsed = time.monotonic() - start
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()
    latencies = sorted(t - accepted[i] for i, t in receipts if i in accepted)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "received": len(receipts),
        "seconds": round(elapsed, 2),
        "p50_s": round(q[49], 3),
        "p90_s": round(q[89], 3),
        "p99_s": round(q[98], 3),
        **{
            f"peak_rss_mib_{role}": round(max(peak[role], rss_kib(pid, "VmHWM")) / 1024, 1)
            for role, pid in pids.items()
        },
    }


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

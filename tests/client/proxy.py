"""A TCP proxy between a client and the server that a test can use to break the network, for real:

- ``cut()`` resets every open connection (a lost Wi-Fi, a NAT timeout);
- ``block()`` / ``unblock()``: new connections are reset at once (the network is down);
- ``lose_next_answer()``: the next connection carries the request to the server, but the server's answer
  never reaches the client, whose connection is reset instead (the request was done; the client cannot know).
"""

from __future__ import annotations

import asyncio
import contextlib

CHUNK = 64 * 1024


class CutProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self.answers_lost = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._blocked = False
        self._lose_next = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        for writer in tuple(self._open):
            writer.transport.abort()
        self._open.clear()

    def block(self) -> None:
        self._blocked = True
        self.cut()

    def unblock(self) -> None:
        self._blocked = False

    def lose_next_answer(self) -> None:
        self._lose_next = True

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._blocked:
            client_writer.transport.abort()
            return
        self.connections += 1
        lose, self._lose_next = self._lose_next, False
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._open.update((client_writer, server_writer))
        try:
            await asyncio.gather(
                _pipe(client_reader, server_writer),
                self._answer(server_reader, client_writer, lose),
                return_exceptions=True,
            )
        finally:
            for writer in (client_writer, server_writer):
                self._open.discard(writer)
                writer.transport.abort()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lose: bool) -> None:
        if not lose:
            await _pipe(reader, writer)
            return
        if await reader.read(CHUNK):  # the server answered: drop it and reset the client instead
            self.answers_lost += 1
        writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies bytes until either side ends; every read returns data or ends the loop (EOF or reset)."""
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    writer.transport.abort()

"""Live clients as a well-behaved app writes them: WebSocket and SSE, each resuming with the last seq it saw.

A client keeps every notification it received, concatenated across reconnects (``received``), so the ledger
checker can hold the whole stream to "exactly once, in seq order". It reconnects whenever a session ends
(server close, crash, drain), with jittered backoff, and can be told to drop its own connection at random
(``drop_chance`` per notification, at most ``max_drops`` times) to exercise resume. Every loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from typing import Any

import httpx
import websockets
from httpx_sse import SSEError, aconnect_sse
from websockets.asyncio.client import ClientConnection, connect

from .harness import http_client

Notification = dict[str, Any]


class StreamClient:
    """What WebSocket and SSE clients share: the received stream, resume state, reconnect loop."""

    transport = "?"

    def __init__(
        self,
        user: str,
        token: str,
        *,
        seed: int = 0,
        drop_chance: float = 0.0,
        max_drops: int = 0,
        max_connects: int = 400,
    ) -> None:
        self.user = user
        self.token = token
        self.received: list[Notification] = []
        self.last_seq = 0
        self.ready: list[dict[str, Any]] = []
        self.connects = 0
        self.drops = 0
        self.fruitless = 0  # sessions in a row that delivered nothing new (refused, down, or stuck)
        self.errors: list[str] = []  # connection failures (expected while the server restarts)
        self.violations: list[str] = []  # protocol breaches the checker reports
        self._rng = random.Random(seed)
        self._drop_chance = drop_chance
        self._max_drops = max_drops
        self._max_connects = max_connects
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"{self.transport}:{self.user}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=repr(self))

    async def stop(self) -> None:
        """Stops reconnecting and closes the current session."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def seqs(self) -> list[int]:
        return [n["seq"] for n in self.received]

    async def _run(self) -> None:
        while not self._stopping and self.connects < self._max_connects:
            self.connects += 1
            before = len(self.received)
            try:
                await self._session()
            except (OSError, httpx.HTTPError, SSEError, websockets.WebSocketException, TimeoutError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            except (ValueError, KeyError, TypeError) as exc:  # not JSON, or not the documented shape
                self.violations.append(f"unreadable frame: {type(exc).__name__}: {exc}")
            # Back off only while nothing gets through (server down or restarting); resume at once otherwise.
            self.fruitless = 0 if len(self.received) > before else self.fruitless + 1
            await asyncio.sleep(self._rng.uniform(0.5, 1.0) * min(0.02 * 2.0 ** min(self.fruitless, 10), 0.5))

    async def _session(self) -> None:
        raise NotImplementedError

    def _on_ready(self, ready: dict[str, Any]) -> None:
        self.ready.append(ready)
        if ready.get("user") != self.user:
            self.violations.append(f"ready for user {ready.get('user')!r}")

    def _accept(self, notification: Notification) -> bool:
        """Records one notification; False when the client decides to drop its connection now."""
        self.received.append(notification)
        self.last_seq = max(self.last_seq, int(notification["seq"]))
        if self.drops < self._max_drops and self._rng.random() < self._drop_chance:
            self.drops += 1
            return False
        return True


class WsClient(StreamClient):
    """A WebSocket client of ``/v1/ws``. ``reading`` can be cleared to stop reading (a slow consumer)."""

    transport = "ws"

    def __init__(
        self,
        ws_url: str,
        user: str,
        token: str,
        *,
        origin: str | None = None,
        rcvbuf: int | None = None,
        max_queue: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(user, token, **kwargs)
        self.ws_url = ws_url
        self.origin = origin
        self.close_codes: list[int | None] = []
        self.error_frames: list[dict[str, Any]] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self._rcvbuf = rcvbuf
        self._max_queue = max_queue

    async def _session(self) -> None:
        sock = await _small_socket(self.ws_url, self._rcvbuf) if self._rcvbuf else None
        async with open_ws(self.ws_url, origin=self.origin, sock=sock, max_queue=self._max_queue) as ws:
            await ws.send(auth_frame(self.token, self.last_seq))
            try:
                while await self._read_one(ws):
                    pass
            except websockets.ConnectionClosed as exc:
                self.close_codes.append(exc.rcvd.code if exc.rcvd else None)

    async def _read_one(self, ws: ClientConnection) -> bool:
        """Handles one frame; False when the client dropped the connection."""
        await self.reading.wait()
        frame = json.loads(await ws.recv())
        kind = frame.get("type")
        if kind == "notification":
            if self._accept(frame["notification"]):
                return True
            await self._drop(ws)
            return False
        if kind == "ready":
            self._on_ready(frame)
        elif kind == "ping":
            await ws.send(json.dumps({"type": "pong"}))
        elif kind == "error":
            self.error_frames.append(frame)
        return True

    async def _drop(self, ws: ClientConnection) -> None:
        """Half the drops are clean closes, half a vanished network (the TCP connection just goes away)."""
        if self._rng.random() < 0.5:
            ws.transport.abort()
        else:
            await ws.close()


class SseClient(StreamClient):
    """An SSE client of ``/v1/stream``; resumes with ``Last-Event-ID`` or ``?after=`` (``resume``)."""

    transport = "sse"

    def __init__(
        self, base_url: str, user: str, token: str, *, resume: str = "header", **kwargs: Any
    ) -> None:
        super().__init__(user, token, **kwargs)
        self.resume = resume
        self.ends: list[int | None] = []  # per stream the server ended: its last retry hint after ready
        self.error_events: list[dict[str, Any]] = []
        self.refusals: list[tuple[int, str]] = []
        self._http = http_client(base_url, token=token, timeout=30.0)

    async def stop(self) -> None:
        await super().stop()
        await self._http.aclose()

    def _resume_args(self) -> tuple[dict[str, str], dict[str, str]]:
        if self.resume == "header" and self.connects > 1:
            return {"Last-Event-ID": str(self.last_seq)}, {}
        return {}, {"after": str(self.last_seq)}

    async def _session(self) -> None:
        headers, params = self._resume_args()
        async with aconnect_sse(self._http, "GET", "/v1/stream", headers=headers, params=params) as source:
            if source.response.status_code != 200:
                await source.response.aread()
                self.refusals.append((source.response.status_code, source.response.text))
                return
            opened, hint = len(self.ready), None  # hint: the last retry hint after ready, as a drain sends
            async for event in source.aiter_sse():
                if event.retry is not None and len(self.ready) > opened:
                    hint = event.retry
                if not self._on_event(event.event, event.id, event.data):
                    return
            self.ends.append(hint)

    def _on_event(self, kind: str, event_id: str, data: str) -> bool:
        """Handles one event; False when the client dropped the stream."""
        if kind == "ready":
            self._on_ready(json.loads(data))
        elif kind == "notification":
            notification = json.loads(data)
            if event_id != str(notification.get("seq")):
                self.violations.append(f"event id {event_id!r} but seq {notification.get('seq')}")
            return self._accept(notification)
        elif kind == "error":
            self.error_events.append(json.loads(data))
        return True


def open_ws(
    ws_url: str, *, origin: str | None = None, sock: socket.socket | None = None, max_queue: int = 16
) -> connect:
    """A websockets client connection: no proxy, no compression, short timeouts."""
    return connect(
        ws_url,
        origin=origin,  # type: ignore[arg-type]
        proxy=None,
        compression=None,
        open_timeout=5,
        close_timeout=2,
        max_queue=max_queue,
        sock=sock,
    )


async def _small_socket(ws_url: str, rcvbuf: int) -> socket.socket:
    """A connected socket with a small receive buffer: a client that stops reading backs up the server."""
    host_port = ws_url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return sock


async def stream_ticket(base_url: str, token: str) -> httpx.Response:
    """POST /v1/me/stream-tickets as the user of ``token``."""
    async with http_client(base_url, token=token) as http:
        return await http.post("/v1/me/stream-tickets")


async def ws_until_close(
    ws_url: str,
    *frames: str | bytes,
    origin: str | None = None,
    within: float = 5.0,
    token: str | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Sends ``frames`` and reads until the server closes; the frames received and the close code.

    With ``token``, it first authenticates and waits for the answer (``ready``), so the frames that follow
    reach an authenticated session. A text frame that is not JSON is kept as ``{"raw": ...}``.
    """
    received: list[dict[str, Any]] = []
    async with open_ws(ws_url, origin=origin) as ws:
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            if token is not None:
                await ws.send(auth_frame(token))
                async with asyncio.timeout(within):
                    received.append(_frame(await ws.recv()))
            for frame in frames:
                await ws.send(frame)
            async with asyncio.timeout(within):
                async for raw in ws:
                    received.append(_frame(raw))
        return received, ws.close_code


async def ws_ready(ws_url: str, token: str, *, origin: str | None = None, after: int = 0) -> dict[str, Any]:
    """Authenticates and returns the first frame (``ready`` when all is well); closes cleanly."""
    async with open_ws(ws_url, origin=origin) as ws:
        await ws.send(auth_frame(token, after))
        async with asyncio.timeout(5.0):
            return _frame(await ws.recv())


def auth_frame(token: str, after: int = 0) -> str:
    """The first frame of every WebSocket session."""
    return json.dumps({"type": "auth", "token": token, "after": after})


def _frame(raw: str | bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError:
        return {"raw": raw}
    return obj if isinstance(obj, dict) else {"raw": raw}

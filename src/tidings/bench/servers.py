"""The servers under test, each in its own process: the Tidings gateway and what users would pick instead.

Every kind accepts WebSocket (or MQTT) clients and can ``publish_round``: one ~200-byte message to every
connection it holds, through its normal per-message API:

- ``tidings``: the gateway on ``gateway.listener`` doing its real per-connection work (auth, hub, bus,
  ``LiveStream``: session seq check, bounded outbox, framing), fed by the in-process bus like the worker feeds it;
- ``tidings-uvicorn``: the same protocol core behind the ASGI shell ``gateway.websocket`` on uvicorn;
- ``starlette``: a minimal uvicorn + Starlette broadcaster (a queue and ``send_text`` per message);
- ``socketio``: python-socketio (ASGI on uvicorn), ``emit`` per message;
- ``raw``: a plain asyncio server that writes pre-framed bytes, one ``write`` per message (the ceiling of
  per-message writes: no parsing, no state, no queue).

``drive`` is the load generator shared by all kinds: it keeps at most ``window`` messages per connection in
flight end to end (published minus received by the clients, read from ``Counters``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import Any, cast

import orjson
import uvicorn

from tidings.backends import open_log, open_store
from tidings.backends.memory import MemoryBus, MemorySubscription
from tidings.bench.counters import Counters
from tidings.bench.procs import commands, emit
from tidings.core import frames
from tidings.core.models import LiveMessage
from tidings.gateway.hub import Hub
from tidings.gateway.listener import FastGateway, frame_header
from tidings.ports import LiveHandler, Subscription
from tidings.runtime import Runtime
from tidings.settings import Settings

Publish = Callable[[], Awaitable[int] | int]


def bench_settings(data: str, **changes: object) -> Settings:
    """Settings of a benchmarked gateway: defaults, but no periodic store poll during a measurement (the
    bench feeds the bus directly, without inbox rows, so a poll would find nothing to fill gaps with)."""
    base = Settings(data=data, sqlite_synchronous="NORMAL", heartbeat_interval=3600.0, auth_timeout=60.0)
    return base.replace(**changes)


class RecordingBus(MemoryBus):
    """The in-process bus, also telling the bench which users are connected here (in connection order)."""

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[tuple[str, str], int] = {}  # (app, user) -> last seq published

    async def subscribe(self, app: str, user: str, handler: LiveHandler) -> Subscription:
        subscription = await super().subscribe(app, user, handler)
        self.users.setdefault((app, user), 0)
        return subscription

    def remove(self, subscription: MemorySubscription) -> None:
        super().remove(subscription)
        self.users.pop(subscription.key, None)


def sample_payload(size: int = 200) -> bytes:
    """A notification JSON whose WebSocket frame (``{"type":"notification",...}``) is about ``size`` bytes."""
    base = {
        "seq": 1,
        "id": "01JBENCH00000000000000000",
        "event_id": "01JBENCHEVENT000000000000",
        "type": "post.liked",
        "actors": [{"id": "bob"}],
        "count": 1,
        "object": {"id": "post:42"},
        "data": {"text": ""},
        "created_at": "2026-11-25T21:00:00Z",
    }
    frame = frames.encode_notification(orjson.dumps(base))
    base["data"] = {"text": "x" * max(0, size - len(frame))}
    return orjson.dumps(base)


async def tidings_runtime(data: str, **settings: object) -> tuple[Runtime, RecordingBus]:
    s = bench_settings(data, **settings)
    store = await open_store(s.store_url, s)
    bus = RecordingBus()
    runtime = Runtime(settings=s, store=store, log=await open_log("memory://", s, store), bus=bus)
    runtime.hub = Hub(bus)
    return runtime, bus


class TidingsKind:
    """The gateway; ``shell`` is ``fastws`` or ``uvicorn`` (the ASGI shell)."""

    def __init__(
        self, data: str, shell: str, payload: bytes, reuse_port: bool, gc_tuned: bool = False
    ) -> None:
        self.data, self.shell, self.payload, self.reuse_port = data, shell, payload, reuse_port
        self.gc_tuned = gc_tuned
        self.runtime: Runtime | None = None
        self.bus: RecordingBus | None = None
        self.gateway: FastGateway | None = None
        self._uvicorn: Any = None

    async def start(self, port: int) -> int:
        self.runtime, self.bus = await tidings_runtime(self.data)
        if self.gc_tuned:
            tune_gc()
        if self.shell == "fastws":
            self.gateway = FastGateway(self.runtime, "127.0.0.1", port, reuse_port=self.reuse_port)
            return await self.gateway.start()
        from tidings.service import build_app

        return await _start_uvicorn(self, build_app(self.runtime, {"gateway"}), port)

    def connected(self) -> int:
        assert self.bus is not None
        return len(self.bus.users)

    async def publish_round(self) -> int:
        """One live message to every connected user, as the bus hands them to the hub."""
        bus = self.bus
        assert bus is not None
        users = bus.users
        messages = []
        payload = self.payload
        now = time.time()  # as the worker stamps it: the gateway observes accepted -> delivered per frame
        for key, seq in users.items():
            users[key] = seq + 1
            messages.append(LiveMessage(key[0], key[1], seq + 1, payload, accepted_at=now))
        await bus.publish(messages)
        return len(messages)

    def extra(self) -> dict[str, Any]:
        if self.gateway is None:
            return {}
        stats = self.gateway.statistics()
        return {"frames_sent": stats.frames_sent, "writes": stats.writes}

    async def close(self) -> None:
        if self.gateway is not None:
            await self.gateway.close(timeout=1.0)
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self.runtime is not None:
            await self.runtime.log.close()
            await self.runtime.store.close()


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the bench stops its processes itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _Unobserved:
    def observe(self, value: float) -> None:
        return None

    def observe_all(self, values: Any) -> None:
        return None


def without_per_message_observability() -> None:
    """What-if for the profile's last finding (docs/performance.md): the gateway without the work it does per
    delivered message for observability (the delivery journal entry, the accepted -> delivered histogram
    observation). Measures the upper bound of making them per batch; never a way to run Tidings."""
    from tidings.observability import metrics
    from tidings.observability.journal import JOURNAL

    JOURNAL.delivered = lambda *args, **kwargs: None  # type: ignore[method-assign]
    metrics.accepted_to_delivered_seconds = _Unobserved()  # type: ignore[assignment]


GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """What a long-lived gateway process can do about the cyclic GC (see docs/performance.md): move what
    start-up made out of the collector's sight, and collect the young generation every 50,000 allocations
    rather than every 700 (a delivery allocates a few short-lived containers; none forms a cycle)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _start_uvicorn(owner: Any, app: Any, port: int) -> int:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        ws="websockets-sansio",
        lifespan="off",
        log_config=None,
        access_log=False,
        ws_ping_interval=None,
        backlog=4096,
    )
    server = owner._uvicorn = _QuietServer(config)
    asyncio.get_running_loop().create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has no start-up event
        await asyncio.sleep(0.01)
    return int(server.servers[0].sockets[0].getsockname()[1])


class StarletteKind:
    """A minimal uvicorn + Starlette broadcaster: one queue per socket, ``send_text`` per message."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.queues: list[asyncio.Queue[str]] = []
        self._uvicorn: Any = None

    async def start(self, port: int) -> int:
        from starlette.applications import Starlette
        from starlette.routing import WebSocketRoute
        from starlette.websockets import WebSocket

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            queue: asyncio.Queue[str] = asyncio.Queue()
            self.queues.append(queue)
            try:
                while True:
                    await websocket.send_text(await queue.get())
            except Exception:
                pass
            finally:
                self.queues.remove(queue)

        return await _start_uvicorn(self, Starlette(routes=[WebSocketRoute("/ws", endpoint)]), port)

    def connected(self) -> int:
        return len(self.queues)

    def publish_round(self) -> int:
        for queue in self.queues:
            queue.put_nowait(self.text)
        return len(self.queues)

    def extra(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True


class SocketioKind:
    """python-socketio on uvicorn: ``emit`` of the notification (a dict) to each client's sid."""

    def __init__(self, payload: bytes) -> None:
        self.notification = orjson.loads(payload)
        self.sids: list[str] = []
        self.sio: Any = None
        self._uvicorn: Any = None

    async def start(self, port: int) -> int:
        import socketio  # type: ignore[import-untyped]

        sio = self.sio = socketio.AsyncServer(async_mode="asgi", ping_interval=600, ping_timeout=600)

        async def connect(sid: str, environ: dict[str, Any]) -> None:
            self.sids.append(sid)

        async def disconnect(sid: str, *args: Any) -> None:
            with contextlib.suppress(ValueError):
                self.sids.remove(sid)

        sio.on("connect", connect)
        sio.on("disconnect", disconnect)
        return await _start_uvicorn(self, socketio.ASGIApp(sio), port)

    def connected(self) -> int:
        return len(self.sids)

    async def publish_round(self) -> int:
        for sid in self.sids:
            await self.sio.emit("notification", self.notification, to=sid)
        return len(self.sids)

    def extra(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _RawConnection(asyncio.Protocol):
    def __init__(self, kind: RawKind) -> None:
        self.kind = kind
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.buffer is None:
            return  # after the handshake: client frames are ignored
        self.buffer += data
        head, sep, _ = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.buffer = None  # type: ignore[assignment]
        self.kind.transports.append(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(ValueError):
            self.kind.transports.remove(self.transport)  # type: ignore[arg-type]


class RawKind:
    """A plain asyncio server writing a pre-framed message to each socket: one ``write`` per message."""

    def __init__(self, text: bytes) -> None:
        self.frame = frame_header(len(text)) + text
        self.transports: list[asyncio.Transport] = []

    async def start(self, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _RawConnection(self), "127.0.0.1", port, backlog=4096)
        return int(self.server.sockets[0].getsockname()[1])

    def connected(self) -> int:
        return len(self.transports)

    def publish_round(self) -> int:
        frame = self.frame
        for transport in self.transports:
            transport.write(frame)
        return len(self.transports)

    def extra(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        self.server.close()


class MosquittoKind:
    """A publisher on the Mosquitto broker at 127.0.0.1:1883: one QoS 0 PUBLISH per subscriber's topic.

    The broker is the server under test; this process only feeds it (packets of a round in one write)."""

    def __init__(self, text: bytes, prefix: str) -> None:
        self.text, self.prefix = text, prefix
        self.n = 0
        self.transport: asyncio.Transport | None = None

    async def start(self, port: int) -> int:
        from tidings.bench.clients import mqtt_connect

        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port or 1883)
        self.transport.write(mqtt_connect(f"tb-pub-{os.getpid()}".encode()))
        return port or 1883

    def expect(self, n: int) -> None:
        from tidings.bench.clients import mqtt_publish

        self.n = n
        self.round = b"".join(mqtt_publish(f"{self.prefix}{i}".encode(), self.text) for i in range(n))

    def connected(self) -> int:
        return self.n

    async def publish_round(self) -> int:
        assert self.transport is not None
        self.transport.write(self.round)
        if self.transport.get_write_buffer_size() > 4 * 1024 * 1024:
            await asyncio.sleep(0.001)  # let the broker read: the window bounds the rest
        return self.n

    def extra(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


STALL_SECONDS = 10.0  # no receipt for this long while messages are in flight: the run has failed


async def drive(
    kind: Any,
    total_connections: int,
    per_conn: int,
    window: int,
    counters: Counters,
    stall: float = STALL_SECONDS,
) -> dict[str, Any]:
    """Publish ``per_conn`` rounds, keeping at most ``window`` messages per connection in flight end to end.

    This process holds ``n`` of the run's ``total_connections``; it counts its share of the clients'
    receipts as ``received * n / total`` (connections are spread evenly over the processes sharing a port).
    When the window is full and the clients' receipts have not moved for ``stall`` seconds, it stops and says
    so (``stalled``) with what each side holds (``diagnosis``), instead of waiting forever.
    """
    await wait_streams_settled(kind, stall)
    n = kind.connected()
    rounds = published = 0
    started = time.perf_counter()
    seen, moved = counters.total_received(), time.monotonic()
    while rounds < per_conn:
        received = counters.total_received()
        if received != seen:
            seen, moved = received, time.monotonic()
        delivered = received * n // max(1, total_connections)
        allowed = min(per_conn - rounds, (delivered + window * n - published) // max(1, n))
        if allowed <= 0:
            if time.monotonic() - moved > stall:
                return {
                    "published": published,
                    "seconds": time.perf_counter() - started,
                    "connections": n,
                    "stalled": True,
                    "diagnosis": {"rounds": rounds, "received_by_clients": received, **diagnose(kind)},
                }
            await asyncio.sleep(0.0005)
            continue
        for _ in range(allowed):
            sent = kind.publish_round()
            if not isinstance(sent, int):
                sent = await sent
            published += sent
            rounds += 1
        await asyncio.sleep(0)
    return {"published": published, "seconds": time.perf_counter() - started, "connections": n}


def _streams(kind: Any) -> list[Any]:
    runtime = getattr(kind, "runtime", None)
    return list(getattr(runtime.hub, "_streams", ())) if runtime is not None else []


def _fetching(stream: Any) -> bool:
    connection = getattr(stream, "_connection", None)
    return connection is None or bool(getattr(getattr(connection, "_session", None), "fetching", False))


async def wait_streams_settled(kind: Any, within: float) -> None:
    """Waits (at most ``within`` s) until no Tidings stream is still reading its first backlog page.

    The bench feeds the bus without inbox rows. A live message that meets a stream still reading the store is
    left to the store by design (the session reads again and finds the row; the product's guarantee), but here
    the store has no rows, so that connection would get nothing more for the rest of the run: the cause of the
    stall seen once (432k of 600k frames). A fixed sleep did not always cover 1,000 first reads."""
    deadline = time.monotonic() + within
    while any(_fetching(s) for s in _streams(kind)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def diagnose(kind: Any) -> dict[str, Any]:
    """What the server side holds: its streams, frames queued in their outboxes, streams waiting on a store
    read, and bytes in its sockets' send buffers (``kind.extra()`` adds frames sent and writes)."""
    streams = _streams(kind)
    queued = 0
    for stream in streams:
        outbox = getattr(getattr(stream, "_connection", None), "_outbox", None)
        queued += len(outbox) if outbox is not None else 0
    gateway = getattr(kind, "gateway", None)
    buffered = 0
    for connection in getattr(gateway, "connections", ()) if gateway is not None else ():
        transport = getattr(connection, "_transport", None)
        if transport is not None and not transport.is_closing():
            buffered += transport.get_write_buffer_size()
    return {
        "server_connected": kind.connected(),
        "server_streams": len(streams),
        "server_streams_reading_store": sum(1 for s in streams if _fetching(s)),
        "server_outbox_frames": queued,
        "server_socket_send_bytes": buffered,
        **kind.extra(),
    }


def make_kind(name: str, data: str, payload: bytes, reuse_port: bool) -> Any:
    text = frames.encode_notification(payload)
    if name == "tidings":
        return TidingsKind(data, "fastws", payload, reuse_port)
    if name == "tidings-gc":
        return TidingsKind(data, "fastws", payload, reuse_port, gc_tuned=True)
    if name == "tidings-bare":  # a what-if, not a configuration: see without_per_message_observability
        without_per_message_observability()
        return TidingsKind(data, "fastws", payload, reuse_port, gc_tuned=True)
    if name == "tidings-uvicorn":
        return TidingsKind(data, "uvicorn", payload, reuse_port)
    if name == "starlette":
        return StarletteKind(text.decode())
    if name == "socketio":
        return SocketioKind(payload)
    if name == "raw":
        return RawKind(text)
    if name.startswith("mosquitto"):
        return MosquittoKind(text, name.partition(":")[2] or "u")
    raise SystemExit(f"unknown server kind {name!r}")


async def serve(name: str, port: int, data: str, payload_size: int, reuse_port: bool) -> None:
    """A server process: start, announce the port, then obey commands from stdin until it closes."""
    kind = make_kind(name, data, sample_payload(payload_size), reuse_port)
    bound = await kind.start(port)
    emit("listening", port=bound, pid=os.getpid())
    try:
        async for command in commands():
            await _obey(kind, command)
    finally:
        await kind.close()


async def _obey(kind: Any, command: dict[str, Any]) -> None:
    what = command["cmd"]
    if what == "stats":
        emit("stats", connected=kind.connected(), **kind.extra())
    elif what == "fanout":
        if hasattr(kind, "expect"):
            kind.expect(command["connections"])
        counters = Counters(command["counters"], command["slots"])
        result = await drive(kind, command["connections"], command["per_conn"], command["window"], counters)
        counters.close()
        emit("fanout", **result, **kind.extra())
    elif what == "profile":
        await _profiled(kind, command)


async def _profiled(kind: Any, command: dict[str, Any]) -> None:
    """The same drive under pyinstrument; the text report goes to ``command["out"]``."""
    from pyinstrument import Profiler

    counters = Counters(command["counters"], command["slots"])
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    result = await drive(kind, command["connections"], command["per_conn"], command["window"], counters)
    profiler.stop()
    counters.close()
    _write_text(command["out"], profiler.output_text(unicode=False, color=False, show_all=False))
    emit("profile", **result)


def _write_text(path: str, text: str) -> None:
    Path(path).write_text(text)

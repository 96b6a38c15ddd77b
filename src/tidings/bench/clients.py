"""Load clients: many cheap connections in one process (picows for WebSocket, a tiny MQTT reader for Mosquitto).

A client process opens ``count`` connections, then counts what arrives into its ``Counters`` slot: frames
received, first and last receipt time, and connections established (or, with ``--expect``, connections that
received all they expected: a finished resume). It never parses notifications unless asked to record their
receipt times (``--record``), so one process can take far more frames per second than a server sends.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import jwt
import orjson

from tidings.bench.counters import Counters
from tidings.bench.procs import commands, emit

CONNECT_CONCURRENCY = 512  # handshakes in flight per client process


class Tally:
    """What this process has seen; flushed to the shared slot on every change (one small pack_into)."""

    def __init__(self, counters: Counters, slot: int) -> None:
        self.counters, self.slot = counters, slot
        self.received = self.first_ns = self.last_ns = self.connected = 0
        self.records: list[tuple[bytes, int]] = []

    def frame(self) -> None:
        now = time.monotonic_ns()
        if not self.received:
            self.first_ns = now
        self.received += 1
        self.last_ns = now
        self.counters.write(self.slot, self.received, self.first_ns, self.last_ns, self.connected)

    def connection(self) -> None:
        self.connected += 1
        self.counters.write(self.slot, self.received, self.first_ns, self.last_ns, self.connected)


def _ws_listener(tally: Tally, proto: str, auth: bytes | None, expect: int, record: bool) -> Any:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport

    greetings = {"plain": 0, "tidings": 1, "socketio": 2}[proto]

    class Listener(WSListener):
        """Counts frames after the protocol's greeting (tidings: ready; socket.io: open, then connect).

        Established means greeted; with ``expect`` > 0 it means ``expect`` frames arrived (a finished resume).
        """

        def __init__(self) -> None:
            self.greeting = greetings
            self.got = 0

        def on_ws_connected(self, transport: WSTransport) -> None:
            if auth is not None:
                transport.send(WSMsgType.TEXT, auth)
            if not self.greeting:
                tally.connection()

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is WSMsgType.CLOSE:
                transport.disconnect()
            elif self.greeting:
                self.greeting -= 1
                if proto == "socketio" and self.greeting:
                    transport.send(WSMsgType.TEXT, b"40")  # join the default namespace
                if not self.greeting and expect <= 0:
                    tally.connection()
            else:
                tally.frame()
                if record:
                    tally.records.append((frame.get_payload_as_bytes(), tally.last_ns))
                self.got += 1
                if self.got == expect:
                    tally.connection()

    return Listener


def token(app: str, secret: str, user: str) -> str:
    claims = {"iss": app, "sub": user, "aud": "tidings", "exp": int(time.time()) + 3600}
    return jwt.encode(claims, secret, algorithm="HS256")


async def open_ws(args: dict[str, Any], tally: Tally) -> list[Any]:
    """``args["count"]`` WebSocket connections, at most ``CONNECT_CONCURRENCY`` handshakes at a time."""
    from picows import ws_connect

    proto = args["proto"]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    url = args["url"]
    if proto == "socketio":
        url += "/socket.io/?EIO=4&transport=websocket"

    async def one(index: int) -> Any:
        auth = None
        if proto == "tidings":
            user = f"{args['user_prefix']}{args['first_user'] + index}"
            frame: dict[str, Any] = {"type": "auth", "token": token(args["app"], args["secret"], user)}
            if args.get("after") is not None:
                frame["after"] = args["after"]
            auth = orjson.dumps(frame)
        factory = _ws_listener(tally, proto, auth, args.get("expect", 0), bool(args.get("record")))
        async with gate:
            transport, _ = await ws_connect(
                factory,
                url,
                read_buffer_init_size=args.get("read_buffer", 4096),
                websocket_handshake_timeout=60,
            )
        return transport

    return list(await asyncio.gather(*(one(i) for i in range(args["count"]))))


# --- MQTT 3.1.1: just enough to subscribe and count PUBLISH packets ------------------------------------------


def mqtt_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def mqtt_connect(client_id: bytes) -> bytes:
    body = mqtt_string(b"MQTT") + b"\x04\x02" + (600).to_bytes(2, "big") + mqtt_string(client_id)
    return b"\x10" + mqtt_length(len(body)) + body


def mqtt_subscribe(topic: bytes) -> bytes:
    body = b"\x00\x01" + mqtt_string(topic) + b"\x00"
    return b"\x82" + mqtt_length(len(body)) + body


def mqtt_publish(topic: bytes, payload: bytes) -> bytes:
    body = mqtt_string(topic) + payload
    return b"\x30" + mqtt_length(len(body)) + body


class MqttReader(asyncio.Protocol):
    """Subscribes to one topic and counts PUBLISH packets; SUBACK marks the connection established."""

    def __init__(self, tally: Tally, topic: bytes) -> None:
        self.tally, self.topic = tally, topic
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(
            mqtt_connect(b"tb-" + self.topic.replace(b"/", b"-")) + mqtt_subscribe(self.topic)
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        pos, end = 0, len(buffer)
        while pos + 2 <= end:
            kind = buffer[pos] >> 4
            length, shift, i = 0, 0, pos + 1
            while i < end:
                byte = buffer[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            else:
                break
            if i + length > end:
                break
            pos = i + length
            if kind == 3:
                self.tally.frame()
            elif kind == 9:
                self.tally.connection()
        self.buffer = buffer[pos:]


async def open_mqtt(args: dict[str, Any], tally: Tally) -> list[Any]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int) -> Any:
        topic = f"{args['user_prefix']}{args['first_user'] + index}".encode()
        async with gate:
            transport, _ = await loop.create_connection(
                lambda: MqttReader(tally, topic), "127.0.0.1", args["port"]
            )
        return transport

    return list(await asyncio.gather(*(one(i) for i in range(args["count"]))))


async def run(args: dict[str, Any]) -> None:
    """A client process: wait for ``go`` (a storm starts at once), connect, report, then wait for ``stop``."""
    counters = Counters(args["counters"], args["slots"])
    tally = Tally(counters, args["slot"])
    cmds = commands()
    if args.get("hold"):
        await anext(cmds)  # the go command
    started = time.monotonic_ns()
    opener = open_mqtt if args["proto"] == "mqtt" else open_ws
    transports = await opener(args, tally)
    emit(
        "connected", count=len(transports), started_ns=started, seconds=(time.monotonic_ns() - started) / 1e9
    )
    async for command in cmds:
        if command.get("cmd") == "stop":
            break
    if args.get("record"):
        _dump(tally.records, args["record"])
    for transport in transports:
        closer = getattr(transport, "disconnect", None) or transport.close
        closer()
    counters.close()
    emit("stopped")


def _dump(records: list[tuple[bytes, int]], path: str) -> None:
    """``event_id receipt_ns`` per notification received (for the latency join)."""
    lines = []
    for payload, at in records:
        notification = orjson.loads(payload).get("notification") or {}
        lines.append(f"{notification.get('event_id')} {at}")
    Path(path).write_text("\n".join(lines) + "\n")

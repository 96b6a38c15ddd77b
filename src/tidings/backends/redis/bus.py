"""The Redis live bus on pub/sub (``RedisBus``).

Channel ``{namespace}:live:{token(app)}:{token(user)}`` per user; at most once, like every ``ports.Bus``. One
pub/sub connection per bus, outside the pool, read by one task that calls the handlers; after any disconnection
(or a PING unanswered) it reconnects with jittered backoff and subscribes every channel again. A subscriber too
slow for the server's ``client-output-buffer-limit pubsub`` is disconnected by Redis: the same path, and the
gateways fill the gap from the inbox. Publishing runs a small Lua script (``PUBLISH_SCRIPT``, one command for a
whole batch), so a Redis user with an ACL needs ``EVALSHA`` and ``SCRIPT LOAD`` besides ``PUBLISH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tidings.backends.envelope import decode_live, encode_live, token
from tidings.backends.redis.client import connect, translated
from tidings.core.backoff import full_jitter
from tidings.core.models import LiveMessage
from tidings.errors import ConflictError, UnavailableError
from tidings.ports import Bus, LiveHandler, Subscription
from tidings.settings import Settings

bus_log = structlog.get_logger("tidings.bus")

SUBSCRIBE_TIMEOUT = 2.0
SUBSCRIBE_CHUNK = 1000  # channels per SUBSCRIBE when a reconnected bus subscribes again
# Seconds of silence on the pub/sub connection before a PING; no reply within as long again: reconnect.
PING_AFTER = 5.0
# ARGV: channel, message, channel, message, ...: published in that order, as one command.
PUBLISH_SCRIPT = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end return #ARGV / 2"
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()  # what Redis names it once loaded
PUBLISH_CHUNK = 1000  # messages per command (the worker publishes a write chunk at a time)


class RedisSubscription:
    """The subscription of one (app, user): its channel and handler; ``ready`` is done once Redis confirmed a
    SUBSCRIBE to the channel. ``close`` is idempotent."""

    def __init__(
        self, bus: RedisBus, channel: bytes, handler: LiveHandler, ready: asyncio.Future[None]
    ) -> None:
        self._bus = bus
        self.channel = channel
        self.handler = handler
        self.ready = ready

    async def close(self) -> None:
        await self._bus.remove(self)

    def deliver(self, message: LiveMessage) -> None:
        try:
            self.handler(message)
        except Exception:
            # No user id or payload in the log line: ids and bodies stay out of logs.
            bus_log.exception("live_handler_failed", app=message.app, kind=message.kind)


class RedisBus:
    """``ports.Bus`` on Redis pub/sub (see the module docstring): channel -> its one subscription."""

    def __init__(self, client: Redis, settings: Settings) -> None:
        self._client = client
        self._prefix = f"{settings.namespace}:live:"
        self._channels: dict[bytes, RedisSubscription] = {}
        # Per channel, the ``ready`` of each SUBSCRIBE sent on this connection, oldest first: replies come in
        # command order, so a confirmation resolves exactly the subscribe it answers.
        self._confirms: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None  # the pub/sub connection, while it is up
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str, settings: Settings) -> Bus:
        client = connect(url)
        try:
            with translated("open"):
                await client.ping()
        except BaseException:
            await client.aclose()
            raise
        bus = cls(client, settings)
        bus._reader = asyncio.create_task(bus._listen(), name="tidings-redis-bus")
        return bus

    def channel(self, app: str, user: str) -> bytes:
        return f"{self._prefix}{token(app)}:{token(user)}".encode()

    async def publish(self, messages: Sequence[LiveMessage]) -> None:
        """One ``EVALSHA`` of ``PUBLISH_SCRIPT`` per ``PUBLISH_CHUNK`` messages: one command and one reply where
        a pipeline of PUBLISH commands had one each per message (the client's per-reply cost was most of the
        worker's publish); Redis publishes them in order, as it would the pipeline's."""
        self._check_open()
        with translated("publish"):
            for start in range(0, len(messages), PUBLISH_CHUNK):
                args: list[bytes] = []
                for message in messages[start : start + PUBLISH_CHUNK]:
                    args += (self.channel(message.app, message.user), encode_live(message))
                await self._publish_all(args)

    async def _publish_all(self, args: list[bytes]) -> None:
        try:
            await self._client.evalsha(PUBLISH_SHA, 0, *args)
        except NoScriptError:  # the first publish since Redis started (or its scripts were flushed)
            await self._client.script_load(PUBLISH_SCRIPT)
            await self._client.evalsha(PUBLISH_SHA, 0, *args)

    async def subscribe(self, app: str, user: str, handler: LiveHandler) -> Subscription:
        """Returns once Redis confirmed the channel; ``UnavailableError`` after SUBSCRIBE_TIMEOUT without.
        ``ConflictError`` while (app, user) has an open subscription here (see ``ports.Bus``)."""
        self._check_open()
        name = self.channel(app, user)
        if name in self._channels:
            raise ConflictError("this (app, user) is subscribed already on this bus")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        subscription = self._channels[name] = RedisSubscription(self, name, handler, ready)
        try:
            await self._send("SUBSCRIBE", [name])
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.shield(ready)
        except TimeoutError as exc:
            await subscription.close()
            raise UnavailableError("redis: subscribing to the live bus timed out") from exc
        except BaseException:
            await subscription.close()  # a failed subscribe leaves nothing behind
            raise
        return subscription

    async def remove(self, subscription: RedisSubscription) -> None:
        """Forgets the subscription at once, then unsubscribes its channel. Idempotent."""
        if self._channels.get(subscription.channel) is not subscription:
            return
        del self._channels[subscription.channel]  # users come and go: keep no channel without a handler
        await self._send("UNSUBSCRIBE", [subscription.channel])

    async def _send(self, command: str, channels: list[bytes]) -> None:
        """Sends on the pub/sub connection if it is up; if not, ``_listen`` subscribes what is wanted when it
        connects again (so a failure here needs no handling either)."""
        conn = self._conn
        if conn is None or not conn.is_connected:
            return
        if command == "SUBSCRIBE":
            for name in channels:
                self._confirms.setdefault(name, deque()).append(self._channels[name].ready)
        with contextlib.suppress(RedisError, OSError):
            await conn.send_command(command, *channels, check_health=False)

    async def _listen(self) -> None:
        """The reader task: connect, subscribe everything wanted, dispatch; on failure back off and again.
        Runs until ``close`` cancels it."""
        attempt = 0
        while not self._closed:
            try:
                conn = await self._connect()
                attempt = 0
                await self._pump(conn)
            except (RedisError, OSError) as exc:
                bus_log.warning("live_bus_disconnected", error=type(exc).__name__, attempt=attempt)
            except Exception:
                bus_log.exception("live_bus_failed")
            finally:
                await self._drop_connection()
            await asyncio.sleep(full_jitter(attempt, random.random(), base=0.05, cap=2.0))
            attempt += 1

    async def _connect(self) -> AbstractConnection:
        pool = self._client.connection_pool
        # Outside the pool: a subscribed connection answers nothing but pub/sub.
        conn: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        await conn.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
        self._conn = conn
        self._confirms.clear()
        wanted = list(self._channels)
        for start in range(0, len(wanted), SUBSCRIBE_CHUNK):
            # A channel given up while earlier chunks were sent is left out.
            chunk = [name for name in wanted[start : start + SUBSCRIBE_CHUNK] if name in self._channels]
            if chunk:
                await self._send("SUBSCRIBE", chunk)
        return conn

    async def _pump(self, conn: AbstractConnection) -> None:
        """Reads replies until the connection fails; a PING after PING_AFTER of silence proves it alive."""
        pinged = False
        while True:
            reply = await conn.read_response(timeout=PING_AFTER)
            if reply is None:
                if pinged:
                    raise RedisTimeoutError("no reply to PING")
                await conn.send_command("PING", check_health=False)
                pinged = True
                continue
            pinged = False
            self._on_reply(reply)

    def _on_reply(self, reply: Any) -> None:
        kind = reply[0]
        if kind == b"message":
            self._dispatch(reply[1], reply[2])
        elif kind == b"subscribe":
            waiting = self._confirms.get(reply[1])
            if waiting:
                ready = waiting.popleft()
                if not ready.done():
                    ready.set_result(None)
                if not waiting:
                    del self._confirms[reply[1]]
        # "unsubscribe" and "pong" need nothing.

    def _dispatch(self, name: bytes, data: bytes) -> None:
        subscription = self._channels.get(name)
        if subscription is None:
            return  # unsubscribed meanwhile
        try:
            message = decode_live(data)
        except ValueError:
            bus_log.warning("live_message_unreadable")
            return
        if self.channel(message.app, message.user) != name:
            bus_log.warning("live_message_misaddressed", app=message.app)  # never to another user's handler
            return
        subscription.deliver(message)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await conn.disconnect(nowait=True)

    async def close(self) -> None:
        """Stops the reader, closes the connections; later calls raise ``UnavailableError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        # A subscribe still waiting for its confirmation is left to time out into UnavailableError.
        self._channels.clear()
        self._confirms.clear()
        await self._client.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the live bus is closed")

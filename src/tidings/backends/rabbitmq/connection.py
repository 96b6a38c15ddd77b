"""The RabbitMQ connection and names shared by the event log and the live bus.

Names (``ns`` = ``Settings.namespace``): the log is three durable quorum queues ``{ns}.events.{high,normal,low}``
(one per lane, so a flood of ``low`` never delays ``high``); the bus is the topic exchange ``{ns}.live``.

Reconnects. ``connect_robust`` reconnects every ``RECONNECT_INTERVAL`` s and re-declares the lane queues,
the exchange, the bus queue, its bindings and its consumer (subscriptions survive; messages published
meanwhile are lost, as a bus may). While the connection is down every call raises ``UnavailableError`` at
once; each broker call is bounded by ``OP_TIMEOUT``. A silently dead peer is noticed by AMQP heartbeats
(the broker proposes 60 s; ``?heartbeat=10`` in the URL shortens it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from tidings.backends.envelope import token
from tidings.core.models import Priority
from tidings.errors import UnavailableError

OP_TIMEOUT = 3.0  # seconds for one broker call (declare, get, bind...)
RECONNECT_INTERVAL = 1.0  # seconds between reconnect attempts (unless the URL says reconnect_interval=)
MAX_ROUTING_KEY = 255  # bytes, AMQP's limit
BROKER_ERRORS = (*CONNECTION_EXCEPTIONS, TimeoutError)


def lane_queue(namespace: str, lane: Priority) -> str:
    return f"{namespace}.events.{lane}"


def live_exchange(namespace: str) -> str:
    return f"{namespace}.live"


def routing_key(app: str, user: str) -> str:
    """``{token(app)}.{token(user)}``; when ids are too long for AMQP's 255 bytes, ``h.<sha256>`` instead (a
    one-character first word that ``token`` never produces, so the two forms cannot collide)."""
    key = f"{token(app)}.{token(user)}"
    if len(key) <= MAX_ROUTING_KEY:
        return key
    return "h." + hashlib.sha256(f"{app}\x00{user}".encode()).hexdigest()


@contextlib.asynccontextmanager
async def broker(what: str, timeout: float = OP_TIMEOUT) -> AsyncIterator[None]:
    """Bounds a broker call and translates the library's errors into ``UnavailableError``, once."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except BROKER_ERRORS as exc:
        raise UnavailableError(f"RabbitMQ: {what} failed ({type(exc).__name__})") from exc


async def connect(url: str, role: str, namespace: str) -> AbstractRobustConnection:
    """A robust connection named after its role (shown by ``rabbitmqctl list_connections``)."""
    name = f"{namespace}.{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"client_properties": {"connection_name": name}, "timeout": OP_TIMEOUT}
    if "reconnect_interval" not in parse_qs(urlsplit(url).query):
        options["reconnect_interval"] = RECONNECT_INTERVAL
    async with broker("connect", OP_TIMEOUT * 2):
        connection: AbstractRobustConnection = await aio_pika.connect_robust(url, **options)
    return connection


def check_connected(connection: AbstractRobustConnection, closed: bool, what: str) -> None:
    if closed:
        raise UnavailableError(f"the RabbitMQ {what} is closed")
    if not cast(aio_pika.RobustConnection, connection).connected.is_set():
        raise UnavailableError("RabbitMQ is unreachable; reconnecting")

"""The Redis client shared by the event log and the live bus: bounded timeouts, retries and connections.

Unreachable Redis: connect and reply timeouts of 2 s and one quick retry (a stale pooled connection after a
Redis restart is replaced transparently), so every call fails within about 4 s with ``UnavailableError``. The
pool reconnects by itself when Redis is back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from tidings.errors import UnavailableError

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 2.0  # every reply; blocking reads wait in slices well below it
RETRIES = 1  # one quick retry on a fresh connection: enough for a stale one, short enough to stay prompt
MAX_CONNECTIONS = 64  # per client; callers beyond it wait (COMMAND_TIMEOUT at most) for a free one


def connect(url: str) -> Redis:
    """A client with bounded timeouts, retries and connections (see the module docstring)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), RETRIES),
        protocol=2,  # RESP2: pub/sub messages arrive as replies on our own connection, not as RESP3 pushes
    )
    return Redis.from_pool(pool)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Redis and socket errors become ``UnavailableError`` (the class name only: no keys or data)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise UnavailableError(f"redis: {what} failed ({type(exc).__name__})") from exc

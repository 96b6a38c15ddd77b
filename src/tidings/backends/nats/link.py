"""The NATS connection shared by the event log and the live bus: URL parsing, and ``Link``, one client that
reconnects by itself, forever.

Failure. Every call raises ``UnavailableError`` within ``OP_TIMEOUT`` seconds (at once when the connection is
known to be down); the connection reconnects by itself, forever, and the same objects work again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError

from tidings.errors import ConfigError, UnavailableError

log = structlog.get_logger("tidings.nats")

OP_TIMEOUT = 3.0  # seconds: the longest any call waits for the server before UnavailableError
CONNECT_TIMEOUT = 5.0  # seconds: opening a log or bus on an unreachable server
RECONNECT_WAIT = 1  # seconds between reconnect attempts (the client retries forever)
PING_INTERVAL = 10  # seconds: a silent server is taken for dead after two unanswered pings
LIBRARY_ERRORS = (NatsError, OSError, TimeoutError)

T = TypeVar("T")


def parse_url(url: str) -> tuple[str, int]:
    """``nats://h:p?replicas=3`` -> (the server URL for the client, stream replicas). ``tls://`` stays TLS."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    try:
        replicas = int(query.get("replicas", ["1"])[0])
    except ValueError as exc:
        raise ConfigError("replicas in the NATS URL must be an integer") from exc
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), replicas


class Link:
    """One NATS connection that reconnects by itself, forever. ``check`` raises ``UnavailableError`` while it is
    down; ``on_change`` callbacks hear every loss and recovery (they must not block)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.nc = Client()
        self.on_change: list[Callable[[bool], None]] = []
        self._error_logged = False
        self._closing = False

    @classmethod
    async def connect(cls, url: str, role: str, timeout: float = CONNECT_TIMEOUT) -> Link:
        """Connects, waiting up to ``timeout`` seconds for the server (it may be starting up)."""
        link = cls(role)
        try:
            async with asyncio.timeout(timeout):
                await link.nc.connect(
                    servers=[url],
                    name=f"tidings-{role}",
                    connect_timeout=2,
                    reconnect_time_wait=RECONNECT_WAIT,
                    max_reconnect_attempts=-1,
                    ping_interval=PING_INTERVAL,
                    max_outstanding_pings=2,
                    error_cb=link._on_error,
                    disconnected_cb=link._on_down,
                    reconnected_cb=link._on_up,
                )
        except LIBRARY_ERRORS as exc:
            with contextlib.suppress(*LIBRARY_ERRORS):
                await link.nc.close()
            raise UnavailableError(f"NATS is unreachable ({type(exc).__name__})") from exc
        return link

    def check(self) -> None:
        if not self.nc.is_connected:
            raise UnavailableError(f"NATS connection of the {self.role} is down")

    async def call(self, operation: Awaitable[T]) -> T:
        """Awaits one library call, translating its failures; the library's own timeouts bound it."""
        try:
            return await operation
        except LIBRARY_ERRORS as exc:
            raise UnavailableError(f"NATS {self.role}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(*LIBRARY_ERRORS):
            await self.nc.close()

    async def _on_error(self, exc: Exception) -> None:
        # Reconnect attempts fail every RECONNECT_WAIT while the server is away: say it once per outage.
        if not self._error_logged and not self._closing:
            self._error_logged = True
            log.warning("nats_error", role=self.role, error=type(exc).__name__)

    async def _on_down(self) -> None:
        if self._closing:
            return
        log.warning("nats_disconnected", role=self.role)
        self._notify(False)

    async def _on_up(self) -> None:
        self._error_logged = False
        log.info("nats_reconnected", role=self.role)
        self._notify(True)

    def _notify(self, up: bool) -> None:
        for callback in tuple(self.on_change):
            callback(up)

"""The one listener of a Tidings process: uvicorn's HTTP protocol with per-connection deadlines and a per-IP cap,
handing WebSocket upgrades of ``/v1/ws`` to the fast listener (docs/decisions/0007-one-port-listener.md).

Every HTTP byte is parsed by uvicorn's httptools protocol, subclassed here: keep-alive, pipelining, chunked
request bodies and streamed (SSE) responses are uvicorn's, unchanged. What this class adds:

- **Deadlines** (slowloris): a request head must be complete within ``header_timeout`` seconds (counted from the
  connection's opening for its first request, from the request's first byte for a keep-alive one; a silent new
  socket is such a head), and its body within ``body_timeout`` seconds of the head. A late head is answered 408
  and the socket closed; a late body closes the socket (the app sees the client gone). Past the one timer a new
  socket gets, timers are armed only when a head or body did not arrive whole in one read.
- **A per-IP cap**: at most ``max_connections_per_ip`` sockets from one address in the HTTP stage (0: no cap);
  one more is closed at once, before a byte is read. A socket handed to a WebSocket server leaves the count (its
  handshake is complete and the auth frame has its own deadline, ``auth_timeout``).
- **The hand-off**: an upgrade to ``/v1/ws`` goes to ``FastGateway.adopt`` with the rebuilt request head and the
  bytes after it; any other upgrade goes to uvicorn's WebSocket protocol (the ASGI routes), as without us.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import _TrustedHosts
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tidings.gateway.listener import PATH, FastGateway
from tidings.settings import Settings


def _request_timeout() -> bytes:
    body = b'{"error":{"code":"request_timeout","message":"the request was not sent in time"}}'
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


REQUEST_TIMEOUT = _request_timeout()


class Front:
    """What every connection of one listening socket shares: the deadlines, the per-IP counts, the gateway."""

    def __init__(
        self,
        *,
        header_timeout: float,
        body_timeout: float,
        max_connections_per_ip: int,
        gateway: FastGateway | None = None,
    ) -> None:
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.max_per_ip = max_connections_per_ip
        self.gateway = gateway
        self.per_ip: dict[str, int] = {}
        self._trusted: tuple[object, _TrustedHosts] | None = None  # uvicorn's trusted proxies, parsed once

    def trusted(self, allowed: list[str] | str) -> _TrustedHosts:
        """uvicorn's trusted proxy addresses (``FORWARDED_ALLOW_IPS``) as a set to test membership in."""
        if self._trusted is None or self._trusted[0] != allowed:
            self._trusted = (allowed, _TrustedHosts(allowed))
        return self._trusted[1]

    @classmethod
    def of(cls, settings: Settings, gateway: FastGateway | None = None) -> Front:
        return cls(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_connections_per_ip=settings.max_connections_per_ip,
            gateway=gateway,
        )

    def admit(self, ip: str) -> bool:
        count = self.per_ip.get(ip, 0)
        if self.max_per_ip and count >= self.max_per_ip:
            return False
        self.per_ip[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        count = self.per_ip.get(ip, 0) - 1
        if count > 0:
            self.per_ip[ip] = count
        else:
            self.per_ip.pop(ip, None)

    def protocol(self) -> type[FrontProtocol]:
        """The protocol class to give uvicorn (``Config(http=...)``): uvicorn makes one per connection."""
        return type("FrontProtocol", (FrontProtocol,), {"front": self})


class _Phase(Enum):
    HEAD = 1  # a request head is expected or being read
    BODY = 2  # the head is in, the body is being read
    IDLE = 3  # the request is whole: the response is the app's (uvicorn's keep-alive timer runs after it)


class FrontProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines, the cap and the hand-off (see the module docstring)."""

    front: ClassVar[Front]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._ip: str | None = None  # set while this socket counts against its address's cap
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = _Phase.HEAD

    # --- connection ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.front.admit(ip):
            transport.abort()  # over the cap: closed before a byte is read (connection_lost sees no transport)
            return
        self._ip = ip
        super().connection_made(transport)
        self._arm(self.front.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # refused in connection_made
            return
        self._leave()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, plus the lazy deadlines and the hand-off of ``/v1/ws`` with the bytes after its head."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                self._upgrade(data[upgrade.args[0] :] if upgrade.args else b"")
            else:
                self._unsupported_upgrade_warning()
            return
        if self._deadline is None and self._phase is not _Phase.IDLE:
            head = self._phase is _Phase.HEAD
            self._arm(self.front.header_timeout if head else self.front.body_timeout)

    # --- parser callbacks: where a request is ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._phase = _Phase.HEAD
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._phase = _Phase.BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._phase = _Phase.IDLE
        super().on_message_complete()

    # --- the hand-off --------------------------------------------------------------------------------------

    def _upgrade(self, rest: bytes) -> None:
        """The socket leaves this protocol: to the fast listener for ``/v1/ws``, else to uvicorn's WebSocket."""
        self._leave()
        gateway = self.front.gateway
        if gateway is None or self.url.partition(b"?")[0] != PATH.encode():
            self.handle_websocket_upgrade()
            return
        self.connections.discard(self)
        head = [self.scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        gateway.adopt(self.transport, b"".join(head) + rest, self._scheme())

    def _scheme(self) -> str:
        """``http`` or ``https`` as the client sees this server: the socket's, or a trusted proxy's
        ``X-Forwarded-Proto`` under uvicorn's own rule (``proxy_headers``, ``FORWARDED_ALLOW_IPS``), the rule
        the ASGI shell's ``scope["scheme"]`` follows too."""
        scheme = self.scheme or "http"
        client = self.client[0] if self.client else None
        if not self.config.proxy_headers or client not in self.front.trusted(self.config.forwarded_allow_ips):
            return scheme
        for name, value in self.headers:
            if name == b"x-forwarded-proto":
                proto = value.decode("latin-1").strip().lower()
                if proto in ("http", "https", "ws", "wss"):
                    scheme = "https" if proto in ("https", "wss") else "http"
        return scheme

    # --- deadlines -----------------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _leave(self) -> None:
        """No deadline and no place in the cap any more (closed, or handed to a WebSocket protocol)."""
        self._disarm()
        if self._ip is not None:
            self.front.release(self._ip)
            self._ip = None

    def _timed_out(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport.is_closing():
            return
        if self._phase is _Phase.HEAD and (self.cycle is None or self.cycle.response_complete):
            transport.write(REQUEST_TIMEOUT)
            transport.close()
        else:
            transport.abort()  # mid-body, or a pipelined head behind a response: nothing more is sent

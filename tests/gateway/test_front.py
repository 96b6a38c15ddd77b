"""The one listener's HTTP protocol (``gateway.front``) over a stub transport: the per-IP cap, the head deadline of
a keep-alive request, and the hand-off of ``/v1/ws`` with the bytes after the head and the scheme."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from tidings.gateway.front import Front


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class _Transport(asyncio.Transport):
    def __init__(self, peer: str = "10.0.0.1") -> None:
        super().__init__()
        self.peer = peer
        self.written = b""
        self.closed = self.aborted = False
        self.protocol: Any = None

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.peer, 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class _Gateway:
    def __init__(self) -> None:
        self.adopted: list[tuple[_Transport, bytes, str]] = []

    def adopt(self, transport: Any, data: bytes, scheme: str = "http") -> None:
        self.adopted.append((transport, data, scheme))


def _protocol(front: Front) -> Any:
    config = uvicorn.Config(
        _ok, lifespan="off", log_config=None, access_log=False, forwarded_allow_ips="10.0.0.9"
    )
    config.load()
    return front.protocol()(config, ServerState(), {})


def _front(**changes: Any) -> Front:
    options: dict[str, Any] = {"header_timeout": 10.0, "body_timeout": 10.0, "max_connections_per_ip": 2}
    return Front(**(options | changes))


async def test_a_socket_over_the_per_ip_cap_is_closed_at_once_and_a_freed_place_is_taken_again() -> None:
    front = _front()
    first, second, third, other = _Transport(), _Transport(), _Transport(), _Transport("10.0.0.2")
    protocols = [_protocol(front) for _ in range(4)]
    for protocol, transport in zip(protocols, (first, second, third, other), strict=True):
        protocol.connection_made(transport)
    assert third.aborted, "the third socket from one address was kept"
    assert [t.aborted for t in (first, second, other)] == [False, False, False]
    protocols[2].connection_lost(None)  # the refused one leaves nothing behind
    protocols[0].connection_lost(None)
    again = _Transport()
    _protocol(front).connection_made(again)
    assert not again.aborted, "a place freed by a closed socket was not taken again"


async def test_a_keep_alive_request_whose_head_stops_is_answered_408_at_the_deadline() -> None:
    transport = _Transport()
    protocol = _protocol(_front(header_timeout=0.05))
    protocol.connection_made(transport)
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(50):  # the app's answer to the first request
        if b"200 OK" in transport.written:
            break
        await asyncio.sleep(0.01)
    protocol.data_received(b"GET /b HTTP/1.1\r\nHost: x\r\n")  # and the second request stops mid-head
    for _ in range(100):
        if transport.closed:
            break
        await asyncio.sleep(0.01)
    assert transport.written.startswith(b"HTTP/1.1 200 OK"), transport.written
    assert b"HTTP/1.1 408 Request Timeout" in transport.written, transport.written
    assert transport.closed


async def test_an_upgrade_of_v1_ws_goes_to_the_gateway_with_its_head_the_bytes_after_it_and_the_scheme() -> (
    None
):
    gateway = _Gateway()
    front = _front(gateway=gateway, max_connections_per_ip=1)
    proxy = _Transport("10.0.0.9")  # a trusted proxy (forwarded_allow_ips) that terminated TLS
    protocol = _protocol(front)
    protocol.connection_made(proxy)
    head = (
        b"GET /v1/ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"X-Forwarded-Proto: https\r\n\r\n"
    )
    protocol.data_received(head + b"FRAME")
    [(transport, data, scheme)] = gateway.adopted
    assert transport is proxy
    assert data.startswith(b"GET /v1/ws?x=1 HTTP/1.1\r\n"), data
    assert b"upgrade: websocket\r\n" in data.lower()
    assert data.endswith(b"\r\n\r\nFRAME"), data
    assert scheme == "https"
    again = _Transport("10.0.0.9")
    _protocol(front).connection_made(again)
    assert not again.aborted, "a socket handed to the WebSocket listener still counted against the cap"

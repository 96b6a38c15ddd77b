"""The front's own cost, without sockets (docs/decisions/0007-one-port-listener.md): CPU microseconds per request
on a keep-alive connection, per new connection with one request, and per WebSocket upgrade routed to the
listener, for uvicorn's plain httptools protocol, option A (``gateway.front``) and option B (a first-line sniffer
handing HTTP to httptools). A trivial ASGI app answers; a stub transport takes the writes; a stub gateway's
``adopt`` does nothing (what is measured is the routing). ``PYTHONPATH=src python bench/one_port_micro.py``."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tidings.gateway.front import Front

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
UPGRADE = (
    b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://x\r\n\r\n"
)
WS_PREFIX = b"GET /v1/ws"


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class StubTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: Any) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def set_protocol(self, protocol: Any) -> None:
        return None


class StubGateway:
    def adopt(self, transport: Any, data: bytes, scheme: str = "http") -> None:
        return None


def sniffer(config: uvicorn.Config, state: ServerState, gateway: StubGateway) -> Any:
    class Sniff(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if data.startswith(WS_PREFIX) and data[len(WS_PREFIX)] in b" ?":
                gateway.adopt(self.transport, data)
                return
            http = HttpToolsProtocol(config, state, {})
            self.transport.set_protocol(http)
            http.connection_made(self.transport)
            http.data_received(data)
            self.http = http

    return Sniff


async def answered(proto: Any) -> None:
    while proto.cycle is not None and not proto.cycle.response_complete:  # noqa: ASYNC110
        await asyncio.sleep(0)
    await asyncio.sleep(0)


async def keep_alive(make: Any, n: int) -> float:
    proto = make()
    proto.connection_made(StubTransport())
    proto.data_received(
        REQUEST
    )  # the sniffer hands over on the first request; then the protocol is uvicorn's
    proto = getattr(proto, "http", proto)
    await answered(proto)
    start = time.process_time()
    for _ in range(n):
        proto.data_received(REQUEST)
        await answered(proto)
    return (time.process_time() - start) / n * 1e6


async def new_connections(make: Any, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        proto = make()
        transport = StubTransport()
        proto.connection_made(transport)
        proto.data_received(REQUEST)
        http = getattr(proto, "http", proto)
        await answered(http)
        http.connection_lost(None)
    return (time.process_time() - start) / n * 1e6


async def upgrades(make: Any, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        proto = make()
        proto.connection_made(StubTransport())
        proto.data_received(UPGRADE)
    return (time.process_time() - start) / n * 1e6


async def main(reps: int = 5, n: int = 20000) -> None:
    # proxy_headers as uvicorn's default (on): the upgrade's scheme check consults the trusted addresses
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    config.load()
    state = ServerState()
    gateway = StubGateway()
    front = Front(header_timeout=10, body_timeout=30, max_connections_per_ip=0, gateway=gateway).protocol()  # type: ignore[arg-type]
    makers = {
        "httptools": lambda: HttpToolsProtocol(config, state, {}),
        "front (A)": lambda: front(config, state, {}),
        "sniff (B)": sniffer(config, state, gateway),
    }
    rows: dict[str, dict[str, list[float]]] = {
        name: {"keep-alive": [], "new conn": [], "upgrade": []} for name in makers
    }
    for _ in range(reps):
        for name, make in makers.items():
            rows[name]["keep-alive"].append(await keep_alive(make, n))
            rows[name]["new conn"].append(await new_connections(make, n))
            if name != "httptools":
                rows[name]["upgrade"].append(await upgrades(make, n))
    print(f"CPU µs per operation, median of {reps} interleaved runs of {n}")
    print(f"{'':<12}{'keep-alive request':>20}{'new conn + request':>20}{'upgrade routed':>16}")
    for name, cells in rows.items():
        line = [statistics.median(v) if v else float("nan") for v in cells.values()]
        print(f"{name:<12}{line[0]:>20.1f}{line[1]:>20.1f}{line[2]:>16.1f}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))

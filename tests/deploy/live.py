"""Running the deployment for real, without Docker: `tidings` processes on loopback ports, and haproxy on the
shipped config with only its addresses rewritten (compose service names -> those ports).

Every process starts in its own process group and is ended (SIGTERM, then SIGKILL) when its ``with`` block
exits; its output goes to a log file in the test's temporary directory. Settings are exactly the ``TIDINGS_*``
values a test gives: the runner's own are not passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .support import ENTRYPOINT, HAPROXY_CFG, env_file, free_port

TIDINGS = Path(sys.executable).parent / "tidings"
WAIT = 30.0  # seconds any one start-up or state change may take on a busy 2-core machine


def require(what: str, available: bool) -> None:
    """Skips the test when ``what`` is missing, or fails it when TIDINGS_TEST_REQUIRE is set (as in CI)."""
    if available:
        return
    if os.environ.get("TIDINGS_TEST_REQUIRE"):
        pytest.fail(f"{what} is not available")
    pytest.skip(f"{what} is not available")


def require_haproxy() -> None:
    require("haproxy (apt-get install -y haproxy)", shutil.which("haproxy") is not None)


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def tidings_env(**settings: object) -> dict[str, str]:
    """This environment without its TIDINGS_* variables, plus ``settings`` as TIDINGS_<NAME>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update({f"TIDINGS_{k.upper()}": str(v) for k, v in settings.items()})
    return env | {"PYTHONUNBUFFERED": "1"}


def tidings_command(role: str, port: int) -> list[str]:
    """``tidings <role>`` started through the image's entrypoint, as the container starts it."""
    return ["sh", str(ENTRYPOINT), str(TIDINGS), role, "--port", str(port)]


class Processes:
    """The processes one test starts, each in its own process group with its output in ``<name>.log``."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        with (self._logs / f"{name}.log").open("wb") as out:  # the child keeps its own copy of the descriptor
            started = subprocess.Popen(
                command, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._started.append(started)
        return started

    def stop(self) -> None:
        """SIGTERM to every process still running, all at once (each drains in parallel), then SIGKILL to any
        still running after ``WAIT`` seconds."""
        running = [p for p in self._started if p.poll() is None]
        for started in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started.pid, signal.SIGTERM)
        deadline = time.monotonic() + WAIT
        for started in running:
            try:
                started.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(started.pid, signal.SIGKILL)
                started.wait(timeout=WAIT)


@contextlib.contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    """Processes that are all stopped when the block exits, however it exits."""
    started = Processes(logs)
    try:
        yield started
    finally:
        started.stop()


def haproxy_config(tmp: Path, backends: Mapping[str, list[int]], public: int) -> Path:
    """The shipped config, each ``server-template <name> ... <name>:<port>`` replaced by one ``server`` line per
    local port, the public and stats listeners on free loopback ports, and maxconn fitting this machine."""
    text = HAPROXY_CFG.read_text()
    port = env_file()["TIDINGS_PORT"]
    for name, ports in backends.items():
        template = re.compile(rf"^(\s*)server-template {name} \S+ {name}:{port}$", re.M)
        servers = [f"server {name}{i} 127.0.0.1:{p}" for i, p in enumerate(ports, 1)]
        text, replaced = template.subn(lambda m, s=servers: "\n".join(m.group(1) + x for x in s), text)
        assert replaced == 1, name
    for old, new in (
        (f"bind :{port}", f"bind 127.0.0.1:{public}"),
        ("bind :8404", f"bind 127.0.0.1:{free_port()}"),
        ("maxconn 50000", "maxconn 1000"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp / "haproxy.cfg"
    path.write_text(text)
    return path


@contextlib.asynccontextmanager
async def client(base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, timeout=10, trust_env=False) as http:
        yield http


async def poll(
    request: Callable[[], Awaitable[httpx.Response]],
    watched: subprocess.Popen[bytes],
    want: int = 200,
    *,
    exited: bool = False,
) -> None:
    """Until ``request()`` answers ``want``; ``watched`` must stay up meanwhile unless ``exited``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert exited or watched.poll() is None, f"{watched.args} exited with {watched.returncode}"
        with contextlib.suppress(httpx.TransportError):
            if (await request()).status_code == want:
                return
        await asyncio.sleep(0.1)
    pytest.fail(f"no {want} within {WAIT} s while {watched.args} ran")


async def ready(port: int, watched: subprocess.Popen[bytes]) -> None:
    async with client(f"http://127.0.0.1:{port}") as http:
        await poll(lambda: http.get("/readyz"), watched)


def user_token(credentials: Mapping[str, str], user: str) -> str:
    """A user JWT as the app's backend would mint it (HS256, iss = app, aud = tidings)."""
    claims = {"iss": credentials["app"], "sub": user, "aud": "tidings", "exp": int(time.time()) + 600}
    return jwt.encode(claims, credentials["jwt_secret"], algorithm="HS256")


@contextlib.asynccontextmanager
async def websocket(port: int, token: str) -> AsyncIterator[ClientConnection]:
    """A WebSocket on ``/v1/ws``, authenticated from seq 0, past its ready frame."""
    async with connect(f"ws://127.0.0.1:{port}/v1/ws", open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token, "after": 0}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["type"] == "ready", first
        yield ws


async def notification_seqs(ws: ClientConnection, count: int) -> list[int]:
    """The seqs of the next ``count`` notification frames (pings skipped)."""
    seqs: list[int] = []
    for _ in range(count + 100):  # pings at most in between
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if frame["type"] == "notification":
            seqs.append(frame["notification"]["seq"])
            if len(seqs) == count:
                break
    return seqs


async def until_closed(ws: ClientConnection) -> tuple[dict[str, object], int | None]:
    """The last frame before the server closed the socket, and the close code that came through."""
    last: dict[str, object] = {}
    with contextlib.suppress(ConnectionClosed):
        for _ in range(100):  # pings at most, until the close
            last = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return last, ws.close_code


def event(recipient: str, object_id: str = "post:1") -> dict[str, object]:
    return {
        "type": "post.liked",
        "actor": {"id": "bob"},
        "object": {"id": object_id},
        "recipients": [recipient],
    }


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def metric(port: int, name: str) -> float:
    """``name`` summed over its label sets, as the ``/metrics`` of the process on ``port`` reports it (on its
    metrics listener: ``--port + 1000``, the role commands' default)."""
    async with client(f"http://127.0.0.1:{port + 1000}") as http:
        text = (await http.get("/metrics")).text
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.M))

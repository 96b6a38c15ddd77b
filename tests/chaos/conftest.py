"""Fixtures of the chaos runs: a network namespace of the test's own (removed in a finalizer, whatever
happened), a PostgreSQL schema of its own, the processes it starts, and a broker server of its own."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from scaleout.conftest import artifacts, postgres_answers, require, start_broker
from scaleout.processes import Children
from scaleout.topology import POSTGRES

from .netns import Netns, unavailable

__all__ = ["artifacts", "start_broker"]


@pytest.fixture
async def children(namespace: str, artifacts: Path) -> AsyncIterator[Children]:
    """The processes of one test; all stopped at teardown, whatever happened (no haproxy needed here)."""
    started = Children(artifacts)
    try:
        yield started
    finally:
        try:
            await started.stop_all()
        finally:
            started.kill_remaining()


@pytest.fixture
def netns(artifacts: Path, namespace: str) -> Iterator[Netns]:
    """A network namespace; removed (and its forwarders stopped) before the schema is dropped, so no
    connection through a forwarder still holds the schema's locks then."""
    reason = unavailable()
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    ns = Netns(artifacts)
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A PostgreSQL schema (and broker prefix) of this test's own, dropped after the test."""
    require("PostgreSQL at " + POSTGRES.rsplit("@", 1)[-1], await postgres_answers())
    name = "chaos_" + secrets.token_hex(4)
    yield name
    connection = await asyncpg.connect(POSTGRES, timeout=10)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()

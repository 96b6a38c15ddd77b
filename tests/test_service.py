"""A role's loop that dies of an error it does not handle ends the process (crash-only), instead of leaving it
serving without that role: a worker dead in a live process would keep its partitions and let accepted events sit
in the log unfanned. The bug is injected (nothing real raises an unexpected error on demand); the rest is the
real service on SQLite, on a real port."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
import structlog

from tidings.errors import RoleCrashedError
from tidings.sender import Sender
from tidings.service import Service
from tidings.settings import Settings
from tidings.sweeper import Sweeper
from tidings.worker import FanoutWorker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _serving(port: int, within: float = 20.0) -> bool:
    async with httpx.AsyncClient(trust_env=False) as http:
        for _ in range(int(within / 0.1)):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    return False


@pytest.mark.parametrize(
    ("role", "owner", "loop", "after"),
    [
        ("worker", FanoutWorker, "run", 1.0),
        ("sender", Sender, "run", 1.0),
        ("sweeper", Sweeper, "run", 1.0),
        ("worker", FanoutWorker, "run", 0.0),  # dead at once, while the HTTP server starts
    ],
    ids=["worker", "sender", "sweeper", "worker-at-start"],
)
async def test_a_role_that_dies_of_an_unexpected_error_ends_the_process_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str, owner: type, loop: str, after: float
) -> None:
    started = asyncio.Event()

    async def broken(self: object) -> None:
        started.set()
        await asyncio.sleep(after)  # 1 s: the API is up and answering by then
        raise RuntimeError(f"a bug in the {role}")

    monkeypatch.setattr(owner, loop, broken)
    port = _free_port()
    settings = Settings(data=str(tmp_path), port=port, sqlite_synchronous="NORMAL")
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(Service(settings).run())
        if after:
            assert await _serving(port), "the service never answered /healthz"
        with pytest.raises(RoleCrashedError, match=f"the {role} role stopped"):
            await asyncio.wait_for(running, 30)  # before the fix: serves on without the role, forever
    assert started.is_set()
    crashed = [entry for entry in logs if entry["event"] == "role_crashed"]
    assert [(e["role"], e["error"]) for e in crashed] == [(role, f"RuntimeError: a bug in the {role}")]
    with pytest.raises(httpx.TransportError):  # the listener is gone with the process's service
        async with httpx.AsyncClient(trust_env=False) as http:
            await http.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)


async def test_a_role_asked_to_stop_ends_quietly(tmp_path: Path) -> None:
    """The drain stops every role's loop; none of that counts as a crash."""
    port = _free_port()
    service = Service(Settings(data=str(tmp_path), port=port, sqlite_synchronous="NORMAL"))
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(service.run())
        assert await _serving(port)
        service.request_drain()
        await asyncio.wait_for(running, 30)
    assert not [entry for entry in logs if entry["event"] == "role_crashed"]

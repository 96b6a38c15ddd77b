"""Order after a crash (issue 15): one producer sends 300 events to one user, one after the other; ``tidings
serve`` is killed with -9 halfway and started again. The user's client must get all 300 in acceptance order,
none lost, none twice.

Before partitions, on NATS JetStream the 2-3 events accepted just before the kill came ~28 s later, after the
newer ones (redelivery after ``ack_wait``). Now the restarted worker takes the partition once the dead
process's lease ran out (``log_lease``, 3 s here) and reads its unacked events first. ``ack_wait`` keeps its
default of 30 s: the test would not settle in time if order depended on it.

Each broker run uses the shared server under a namespace of its own, removed afterwards.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import time
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import StartServer
from .harness import wait_until
from .scenario import Plan, Run

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

BACKENDS = Path(__file__).resolve().parents[1] / "backends"
ONE_USER = Plan(
    events=300,
    users=1,
    producers=1,
    ws_clients=1,
    sse_clients=0,
    recipients=(1, 1),
    resend_ratio=0.0,
    drop_chance=0.0,
)
SLOW = [pytest.mark.slow, pytest.mark.timeout(300)]


def provider(name: str) -> ModuleType:
    """``tests/backends/provide_<name>.py``: the shared server's URL, its reachability and cleanup."""
    spec = importlib.util.spec_from_file_location(f"provide_{name}", BACKENDS / f"provide_{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("memory", id="embedded", marks=SLOW),  # its one reader keeps order: test_crash covers it
        pytest.param("nats", id="nats"),
        pytest.param("redis", id="redis", marks=SLOW),
        pytest.param("rabbitmq", id="rabbitmq", marks=SLOW),
    ],
)
async def test_kill_9_keeps_acceptance_order_to_one_user(start_server: StartServer, broker: str) -> None:
    env: dict[str, object] = {"log_lease": 3.0}
    module = None
    namespace = "o" + secrets.token_hex(5)
    if broker != "memory":
        module = provider(broker)
        if not await module.available():
            if os.environ.get("TIDINGS_TEST_REQUIRE"):
                pytest.fail(f"{broker} is not reachable")
            pytest.skip(f"{broker} is not reachable")
        env |= {"broker": module.URL, "namespace": namespace}
    server = await start_server(env)
    try:
        async with Run(server, ONE_USER) as run:
            producing = asyncio.create_task(run.produce())
            # Killed right after #150 was accepted (polled every ms): the worker has it in hand, not yet in
            # the inbox, or is about to read it.
            reached = await wait_until(lambda: run.accepted >= ONE_USER.events // 2, 60.0, interval=0.001)
            assert reached, f"only {run.accepted} events accepted"
            started = time.monotonic()
            await server.kill()
            await server.restart()
            downtime = time.monotonic() - started
            await producing
            problems = await run.check()
        print(f"{broker}: downtime {downtime:.2f} s")
        assert server.starts == 2
        assert not problems, "\n".join(problems[:20])
    finally:
        if server.running:
            await server.kill()
        if module is not None:
            await module.cleanup(namespace)

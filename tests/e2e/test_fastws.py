"""The same guarantees with each WebSocket server: the fast listener on the one port (the default, ADR 0007),
on a port of its own (``--ws-port``, ADR 0002), and uvicorn's ASGI shell (``--ws-server uvicorn``, the fallback)."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import StartServer
from .harness import free_port
from .scenario import Plan, Run

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

SMALL = Plan(events=800, users=16, ws_clients=8, sse_clients=8)


@pytest.mark.parametrize(
    "env",
    [
        # The default server: test_crash.py and test_ledger.py run over it in the default suite.
        pytest.param({"ws_server": "fastws"}, marks=pytest.mark.slow),
        pytest.param({"ws_server": "fastws", "ws_port": "free"}, marks=pytest.mark.slow),
        pytest.param({"ws_server": "uvicorn"}, marks=pytest.mark.timeout(300)),
    ],
    ids=["fastws-one-port", "fastws-own-port", "uvicorn"],
)
async def test_ledger_and_crash_hold_over_each_websocket_server(
    start_server: StartServer, env: dict[str, str]
) -> None:
    """Through drops, resumes and a kill -9, every WS and SSE stream equals its inbox, once each, in order."""
    server = await start_server({k: free_port() if v == "free" else v for k, v in env.items()})
    async with Run(server, SMALL) as run:
        producing = asyncio.create_task(run.produce())
        await run.crash_at(0.4)
        await producing
        problems = await run.check()
        not_resumed = [c for c in run.clients if len(c.ready) <= run.ready_before_crash[c]]
    assert server.starts == 2
    assert not problems, "\n".join(problems[:40])
    assert not not_resumed, f"streams that never resumed after the crash: {not_resumed}"
    assert sum(c.drops for c in run.clients) > 0, "no client dropped its connection: resume was not exercised"

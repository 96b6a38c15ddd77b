"""The same guarantees with the gateway's fast WebSocket listener (``--ws-server fastws``, ADR 0002)."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import StartServer
from .harness import free_port
from .scenario import Plan, Run

pytestmark = pytest.mark.e2e

SMALL = Plan(events=800, users=16, ws_clients=8, sse_clients=8)


async def test_ledger_and_crash_hold_over_the_fast_listener(start_server: StartServer) -> None:
    """Through drops, resumes and a kill -9, every WS and SSE stream equals its inbox, once each, in order."""
    server = await start_server({"ws_server": "fastws", "ws_port": free_port()})
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

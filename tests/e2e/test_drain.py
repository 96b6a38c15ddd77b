"""Graceful drain: SIGTERM while clients are connected and a producer is posting.

The process exits 0 within ``drain_timeout`` and a margin; WebSocket clients are told 1012 (server
restarting), SSE streams end cleanly with a retry hint; after a restart every 2xx'd event is delivered once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from .clients import SseClient, WsClient
from .conftest import StartServer
from .harness import wait_until
from .scenario import Plan, Run

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

DRAIN_TIMEOUT = 3.0
MARGIN = 4.0  # process start-up and shutdown overhead on a loaded 2-core machine
SERVICE_RESTART = 1012
PLAN = Plan(events=600, users=12, ws_clients=6, sse_clients=6, drop_chance=0.0)


async def test_sigterm_drains_clients_and_loses_nothing(start_server: StartServer) -> None:
    """A deploy (SIGTERM) closes live clients politely, exits 0 in time; every accepted event arrives."""
    server = await start_server(env={"drain_timeout": DRAIN_TIMEOUT})
    async with Run(server, PLAN) as run:
        ws = [c for c in run.clients if isinstance(c, WsClient)]
        sse = [c for c in run.clients if isinstance(c, SseClient)]
        producing = asyncio.create_task(run.produce())
        assert await wait_until(lambda: run.accepted >= 0.4 * PLAN.events, 60.0)
        started = time.monotonic()
        code = await server.stop(within=DRAIN_TIMEOUT + MARGIN)
        took = time.monotonic() - started
        # The last frames are on the wire when the process exits; give the clients a moment to read them.
        await wait_until(lambda: all(c.close_codes for c in ws) and all(c.ends or c.errors for c in sse), 3.0)
        closes = {c: list(c.close_codes) for c in ws}
        ends = {c: list(c.ends) for c in sse}
        await server.restart()
        await producing
        problems = await run.check()
    print(f"drain took {took:.2f} s; ws closes {closes}; sse ends {ends}")
    assert code == 0, f"exit code {code}"
    assert took <= DRAIN_TIMEOUT + MARGIN
    assert all(SERVICE_RESTART in codes for codes in closes.values()), closes
    assert all(any(hint is not None for hint in hints) for hints in ends.values()), ends
    assert not problems, "\n".join(problems[:40])

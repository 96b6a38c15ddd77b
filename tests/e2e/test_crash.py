"""Crash tests: ``kill -9`` of the server in the middle of a ledger run, restart on the same data and port.

Producers retry with the same Idempotency-Keys, clients resume with their last seq; nothing accepted may be
lost, nothing may arrive twice, and each producer's order holds. The fan-out variant sends every event to
every user, so the worker is mid-batch (inbox committed, event not yet acked) when the process dies.
"""

from __future__ import annotations

import asyncio

import pytest

from .harness import ServerProcess
from .scenario import Plan, Run

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

SMALL = Plan(events=800, users=16, ws_clients=8, sse_clients=8)
FULL = Plan()
# Every event to every user; at the crash point a batch of 200 such events (10,000 inbox rows in one worker
# batch) is in flight, and the kill lands once its first rows reached a client: after a commit, before the ack.
FANOUT_SMALL = Plan(events=120, users=30, ws_clients=15, sse_clients=15, recipients=(30, 30), burst=200)
FANOUT_FULL = Plan(events=400, users=50, recipients=(50, 50), burst=200)
SLOW = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(SMALL, id="small", marks=SLOW),  # the full size below covers it in the default suite
        pytest.param(FANOUT_SMALL, id="fanout-small"),
        pytest.param(FULL, id="full", marks=[pytest.mark.timeout(300)]),  # the size, in CI too
        pytest.param(FANOUT_FULL, id="fanout-full", marks=SLOW),
    ],
)
async def test_kill_9_mid_run_loses_and_duplicates_nothing(server: ServerProcess, plan: Plan) -> None:
    """After a crash and restart every accepted event is in each inbox and stream exactly once, in order."""
    async with Run(server, plan) as run:
        producing = asyncio.create_task(run.produce())
        downtime = await run.crash_at(0.4)
        await producing
        problems = await run.check()
        rewritten = await run.rewritten_after_crash()
        not_resumed = [c for c in run.clients if len(c.ready) <= run.ready_before_crash[c]]
    retries = sum(p.retries for p in run.producers)
    print(
        f"downtime {downtime:.2f} s, producer retries {retries}, rows rewritten after the crash {rewritten}"
    )
    assert server.starts == 2
    assert not problems, "\n".join(problems[:40])
    assert not not_resumed, f"streams that never resumed after the crash: {not_resumed}"
    if plan.burst:
        assert rewritten > 0, "the crash did not fall between an inbox commit and its ack"

"""The ledger test: concurrent producers, clients that drop and resume, every guarantee checked at the end."""

from __future__ import annotations

import pytest

from .harness import ServerProcess
from .scenario import Plan, Run

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

SMALL = Plan(events=800, users=16, ws_clients=8, sse_clients=8)
FULL = Plan()  # 5,000 events, 50 users, 25 WS + 25 SSE clients


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(SMALL, id="small", marks=pytest.mark.slow),  # the full size below covers it by default
        # The full size runs in CI too (about 20-35 s on this machine).
        pytest.param(FULL, id="full", marks=[pytest.mark.timeout(300)]),
    ],
)
async def test_every_accepted_event_reaches_inbox_and_stream_exactly_once_in_order(
    server: ServerProcess, plan: Plan
) -> None:
    """Each user's inbox and stream hold exactly the events sent to them, once, in order, through resumes."""
    async with Run(server, plan) as run:
        await run.produce()
        problems = await run.check()
    assert not problems, "\n".join(problems[:40])
    assert sum(p.resends for p in run.producers) == run.planned_resends()  # each answered with the first id
    assert sum(c.drops for c in run.clients) > 0, "no client dropped its connection: resume was not exercised"

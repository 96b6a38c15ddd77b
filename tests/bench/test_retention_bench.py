"""The retention scenario at a tiny size: it loads, fans out with and without the sweep, sweeps, reports its
figures and drops its namespace. Nothing here is about speed."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest

from tidings.bench import retention
from tidings.bench.runner import POSTGRES, postgres_reachable
from tidings.settings import Settings

pytestmark = pytest.mark.timeout(120)


async def test_the_retention_scenario_sweeps_during_a_fanout_and_reports_it() -> None:
    if not postgres_reachable(POSTGRES):
        pytest.skip("PostgreSQL is not running here")
    result = await retention.run(
        url=POSTGRES, rows=4_000, users=40, fanout_rows=3_000, sweep_seconds=0.5, settings=Settings()
    )
    assert result["ok"] is True
    assert result["rows"] == 4_000
    assert result["swept_rows_per_second_during_fanout"] >= 0
    assert result["fanout_rows_per_second_alone"] > 0
    assert result["fanout_slowdown"] > 0
    conn = await asyncpg.connect(POSTGRES)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1", result["namespace"]
        )
    finally:
        await conn.close()
    assert left == 0

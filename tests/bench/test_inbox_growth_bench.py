"""The inbox-growth scenario at a tiny size: it loads, writes, reads, finds the PostgreSQL backends serving it
(so their CPU is counted), reports per-row and per-read figures and drops its namespace. Nothing here is about
speed."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest

from tidings.bench import inbox_growth
from tidings.bench.runner import POSTGRES, growth_jobs, postgres_reachable
from tidings.settings import Settings

pytestmark = pytest.mark.timeout(120)


async def test_the_inbox_growth_scenario_reports_client_and_database_cost_and_cleans_up() -> None:
    if not postgres_reachable(POSTGRES):
        pytest.skip("PostgreSQL is not running here")
    result = await inbox_growth.run_size(
        url=POSTGRES, rows=4_000, users=100, settings=Settings(), block=2_000, reads=50
    )
    assert (result["rows"], result["rows_per_user"]) == (4_000, 40)
    assert result["backends"] >= 1, "the PostgreSQL backends of the pool were not found: no database CPU"
    assert result["fanout_rows_per_second"] > 0
    assert result["fanout_db_cpu_us_per_row"] > 0
    assert result["page_client_cpu_us"] > 0
    conn = await asyncpg.connect(POSTGRES)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1", result["namespace"]
        )
    finally:
        await conn.close()
    assert left == 0


def test_the_growth_scenario_has_an_inbox_axis_only_with_postgresql() -> None:
    names = [name for name, _ in growth_jobs(True, POSTGRES)]
    assert [n for n in names if n.startswith("growth inbox=")] == ["growth inbox=2000", "growth inbox=20000"]
    assert not [n for n, _ in growth_jobs(True) if n.startswith("growth inbox=")]

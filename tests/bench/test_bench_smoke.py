"""Each benchmark scenario once at a tiny size: the harness keeps producing sane, structured results.

These tests say nothing about speed (no thresholds on rates or latencies); they fail when a scenario can no
longer start its processes, move its load, or report what it measured.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidings.bench import main, report, scenarios
from tidings.bench.fanout import FanoutSpec, run_fanout
from tidings.bench.runner import POSTGRES, available, postgres_reachable, run_all
from tidings.bench.senders import run_senders

pytestmark = pytest.mark.timeout(120)


def _sane_fanout(result: dict[str, Any], published: int) -> None:
    assert result["complete"] is True
    assert result["published"] == published
    assert result["received"] == published
    assert result["rate"] > 0
    assert result["seconds"] > 0
    assert isinstance(result["client_bound"], bool)


@pytest.mark.parametrize(
    "kind",
    [
        "tidings",
        "tidings-gc",
        "tidings-tuned",
        "raw",
        "starlette",
        "tidings-uvicorn",
        "socketio",
        "node",
        "mosquitto",
    ],
)
async def test_fanout_delivers_every_message_for_each_server_kind(kind: str) -> None:
    """Every server kind delivers all published messages and the run reports a rate and CPU shares."""
    if not available(kind) or (kind == "tidings-tuned" and shutil.which("patch") is None):
        pytest.skip(f"{kind} is not installed or not running here")
    result = await run_fanout(FanoutSpec(kind, connections=10, per_conn=5, client_procs=1))
    _sane_fanout(result, 50)
    assert result["kind"] == kind


async def test_two_gateway_processes_share_one_port() -> None:
    """Two gateway processes on one port serve every client between them."""
    result = await run_fanout(FanoutSpec("tidings", connections=10, per_conn=5, client_procs=2, servers=2))
    _sane_fanout(result, 50)
    assert result["servers"] == 2


async def test_connections_scenario_reports_memory_per_connection() -> None:
    """Idle connections are all held and a per-connection memory figure comes out."""
    result = await scenarios.run_connections("tidings", 20, 1)
    assert result["ok"] is True
    assert result["held"] == 20
    assert result["bytes_per_connection"] > 0


async def test_latency_scenario_joins_every_event_with_its_receipt() -> None:
    """Events sent through the whole process arrive, and percentiles come out in order."""
    result = await scenarios.run_latency("tidings", rate=100, batch=5, seconds=1.0, connections=10)
    assert result["events"] > 0
    assert result["delivered"] == result["events"]
    assert result["p50_ms"] <= result["p99_ms"] <= result["p999_ms"] <= result["max_ms"]


@pytest.mark.parametrize("batch", [0, 20])
async def test_ingest_scenario_counts_accepted_events(batch: int) -> None:
    """The single and the batch endpoint both report accepted events and none refused."""
    result = await scenarios.run_ingest(batch, connections=2, seconds=1.0)
    assert result["accepted"] > 0
    assert result["refused"] == 0
    assert result["rate"] > 0


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_celebrity_scenario_ends_with_a_row_per_follower(store: str) -> None:
    """A topic event reaches every follower's inbox (PostgreSQL in a schema of its own, dropped after)."""
    url = "sqlite" if store == "sqlite" else POSTGRES
    if store == "postgresql" and not postgres_reachable(url):
        pytest.skip("PostgreSQL is not running here")
    result = await scenarios.run_celebrity(url, 1500)
    assert result["rows"] == 1500
    assert result["ok"] is True
    assert result["seconds"] > 0


async def test_resume_storm_scenario_resumes_every_client() -> None:
    """Clients reconnecting at once each get their whole backlog, and the time until the last is reported."""
    result = await scenarios.run_resume("tidings", 10, 3, 1)
    assert result["resumed"] == 10
    assert result["ok"] is True
    assert result["seconds"] > 0


@pytest.mark.parametrize("channel", ["webhook", "web_push", "email"])
async def test_senders_scenario_sends_through_the_adapter_and_the_library(channel: str) -> None:
    """Every send of both paths reaches the local endpoint, and CPU per send and the ratio come out."""
    result = await run_senders(channel, sends=10, rounds=1, concurrency=4)
    assert result["ok"] is True
    assert result["failed"] == 0
    assert result["sends"] == 10
    assert result["rate"] > 0
    assert result["library_rate"] > 0
    assert result["cpu_us"] > 0
    assert result["library_cpu_us"] > 0
    assert result["own_cpu_us"] == pytest.approx(result["cpu_us"] - result["library_cpu_us"], abs=0.2)
    assert isinstance(result["goal_met"], bool)
    assert f"| senders | {channel} |" in report.markdown({"results": [result]})


def test_report_renders_a_table_ratios_and_a_plot(tmp_path: Path) -> None:
    """Saved results become a Markdown table with ratios and a PNG plot."""
    results = [
        {
            "scenario": "fanout",
            "kind": "tidings",
            "rate": 200.0,
            "server_cpu": 0.5,
            "load": 1.0,
            "complete": True,
        },
        {
            "scenario": "fanout",
            "kind": "tidings",
            "rate": 100.0,
            "server_cpu": 0.5,
            "load": 1.2,
            "complete": True,
        },
        {
            "scenario": "fanout",
            "kind": "raw",
            "rate": 100.0,
            "server_cpu": 0.4,
            "load": 1.1,
            "complete": True,
        },
        {
            "scenario": "growth",
            "axis": "payload",
            "payload": 64,
            "rate": 10.0,
            "server_cpu": 0.1,
            "kind": "t",
        },
        {
            "scenario": "growth",
            "axis": "payload",
            "payload": 512,
            "rate": 9.0,
            "server_cpu": 0.1,
            "kind": "t2",
        },
    ]
    text = report.markdown({"results": results})
    assert "| fanout | tidings | 150 |" in text
    assert "tidings / raw: 1.50x" in text
    report.plot({"results": results}, str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")


def test_cli_runs_a_tiny_scenario_and_writes_json(tmp_path: Path) -> None:
    """``tidings bench run fanout --size tiny`` writes the machine facts and one result per run."""
    out = tmp_path / "results.json"
    assert main(["run", "fanout", "--size", "tiny", "--runs", "1", "--kinds", "raw", "--out", str(out)]) == 0
    data = orjson.loads(out.read_bytes())
    assert data["machine"]["cores"] >= 1
    assert [r["kind"] for r in data["results"]] == ["raw"]


async def test_unknown_scenario_is_refused() -> None:
    """A misspelt scenario name stops the run before anything starts."""
    args = argparse.Namespace(scenarios=["fanuot"], size="tiny", kinds="", postgres="", runs=1)
    with pytest.raises(SystemExit):
        await run_all(args)

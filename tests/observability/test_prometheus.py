"""A real Prometheus scrapes a real ``tidings serve``, loads the shipped alert rules, and answers a query on
a Tidings metric through its HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .server import Server, free_port
from .tools import require

pytestmark = pytest.mark.e2e

RULES = Path(__file__).resolve().parents[2] / "deploy" / "observability" / "alerts.yml"


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, target: str) -> AsyncIterator[httpx.AsyncClient]:
    binary = require("prometheus", "prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "tidings", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5, trust_env=False) as api:
            await _until(lambda: _ready(api), "Prometheus ready", tmp_path)
            yield api
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def _ready(api: httpx.AsyncClient) -> bool:
    try:
        return (await api.get("/-/ready")).status_code == 200
    except httpx.TransportError:
        return False


async def _until(check: Any, what: str, tmp_path: Path, within: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:  # bounded by the deadline
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.2)
    log = (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]
    raise AssertionError(f"no {what} within {within} s; Prometheus log:\n{log}")


async def _query(api: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    answer = (await api.get("/api/v1/query", params={"query": expr})).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def test_prometheus_scrapes_tidings_and_answers_a_query_on_its_metrics(tmp_path: Path) -> None:
    """Three events into a running server; Prometheus, scraping every second, reports them accepted."""
    require("prometheus", "prometheus")
    server = await Server(tmp_path / "data").start()
    try:
        async with prometheus(tmp_path, f"127.0.0.1:{server.port}") as api:
            app = await server.create_app("scraped")
            producer = {"Authorization": f"Bearer {app['api_key']}"}
            async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=10) as http:
                for _ in range(3):
                    event = {"type": "t", "recipients": ["alice"]}
                    assert (await http.post("/v1/events", json=event, headers=producer)).status_code == 202

            async def accepted() -> list[dict[str, Any]]:
                found = await _query(api, 'tidings_funnel_total{job="tidings",stage="accepted"} >= 3')
                return found

            (sample,) = await _until(accepted, "accepted events in Prometheus", tmp_path)
            assert float(sample["value"][1]) == 3
            assert [r["value"][1] for r in await _query(api, 'up{job="tidings"}')] == ["1"]
            stored = await _until(
                lambda: _query(api, 'tidings_funnel_total{stage="stored"} >= 3'), "stored", tmp_path
            )
            assert float(stored[0]["value"][1]) == 3
            rules = (await api.get("/api/v1/rules")).json()["data"]["groups"]
            assert {group["name"] for group in rules} == {
                "tidings-slo",
                "tidings-pipeline",
                "tidings-saturation",
            }
            assert all(rule["health"] != "err" for group in rules for rule in group["rules"])
    finally:
        assert await server.stop() == 0, server.tail()

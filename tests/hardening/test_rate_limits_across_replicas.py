"""Issue 15 item 8: a key's rate limit holds across API replicas when they share Redis
(``TIDINGS_RATE_LIMIT_STORAGE``), and what happens when that Redis goes away.

Three real ``tidings api`` processes on one data directory (they only append to the embedded log), no proxy:
the client spreads its requests round-robin itself. A Redis server of the test's own on a free port holds the
limits, so it can be killed and restarted. The limit is 1 event/s with a burst of 30: one moving window of
30 s admitting 30, so a run of a few seconds sees exactly the window's allowance, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from e2e.harness import TIDINGS, free_port

pytestmark = pytest.mark.serial  # three API processes and a Redis killed; the windows are in real time

BURST = 30  # with a rate of 1/s: a window of 30 s admitting 30 events
EVENT = {"type": "post.liked", "actor": {"id": "bob"}, "recipients": ["alice"]}


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    if shutil.which("redis-server") is None:
        if os.environ.get("TIDINGS_TEST_REQUIRE"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _create_app(data: Path) -> str:
    out = subprocess.run(
        [str(TIDINGS), "apps", "create", "acme", "--data", str(data)],
        capture_output=True,
        text=True,
        check=True,
        env=_env({}),
    )
    api_key: str = json.loads(out.stdout)["api_key"]
    return api_key


def _env(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update({f"TIDINGS_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.asynccontextmanager
async def api_replicas(data: Path, count: int, settings: dict[str, str]) -> AsyncIterator[list[str]]:
    """``count`` ``tidings api`` processes on ``data``; yields their base URLs once each answers /readyz."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    env = _env({"rate_per_key": "1", "rate_burst": str(BURST), **settings})
    try:
        for i in range(count):
            port = free_port()
            with (data.parent / f"api-{i}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220 - returns at once; readiness is polled below
                        [
                            str(TIDINGS),
                            "api",
                            "--data",
                            str(data),
                            "--port",
                            str(port),
                            "--metrics-port",
                            "-1",
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(timeout=1.0) as http:
            for url, proc in zip(urls, procs, strict=True):

                async def ready(url: str = url) -> bool:
                    with contextlib.suppress(httpx.TransportError):
                        return (await http.get(f"{url}/readyz")).status_code == 200
                    return False

                deadline = time.monotonic() + 30
                while not await ready():
                    assert proc.poll() is None, (data.parent / "api-0.log").read_text()
                    assert time.monotonic() < deadline, "an API replica did not become ready"
                    await asyncio.sleep(0.05)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def spread(urls: list[str], api_key: str, count: int) -> tuple[int, list[httpx.Response]]:
    """``count`` events, one request each, round-robin over ``urls``: (admitted, the refusals)."""
    admitted = 0
    refused: list[httpx.Response] = []
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(timeout=10.0, headers=headers) as http:
        for i in range(count):
            response = await http.post(f"{urls[i % len(urls)]}/v1/events", json=EVENT)
            assert response.status_code in (202, 429), response.text
            if response.status_code == 202:
                admitted += 1
            else:
                refused.append(response)
    return admitted, refused


def _assert_told_when(refused: list[httpx.Response]) -> None:
    for response in refused:
        assert response.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= BURST


@pytest.mark.slow
async def test_without_shared_storage_each_replica_has_its_own_limit(tmp_path: Path) -> None:
    """The documented default: per process, so three replicas admit about three times the burst."""
    data = tmp_path / "data"
    api_key = _create_app(data)
    async with api_replicas(data, 3, {}) as urls:
        admitted, refused = await spread(urls, api_key, 4 * BURST)
    assert admitted >= 3 * BURST
    _assert_told_when(refused)


async def test_one_key_gets_its_limit_once_across_three_replicas_and_per_replica_while_redis_is_down(
    tmp_path: Path,
) -> None:
    """Shared: 3 x BURST requests round-robin over three replicas admit BURST, not 3 x BURST; the rest are 429
    with Retry-After. Redis killed: requests are neither all refused nor all admitted; each replica's own bucket
    decides (never a 5xx). Redis back: the shared window decides again."""
    data = tmp_path / "data"
    api_key = _create_app(data)
    port = free_port()
    settings = {"rate_limit_storage": f"redis://127.0.0.1:{port}/0"}
    with redis_server(port) as redis:
        async with api_replicas(data, 3, settings) as urls:
            admitted, refused = await spread(urls, api_key, 3 * BURST)
            assert admitted == BURST  # not 3 x BURST
            assert len(refused) == 2 * BURST
            _assert_told_when(refused)
            redis.kill()
            redis.wait()
            admitted, refused = await spread(urls, api_key, 4 * BURST)
            assert 3 * BURST <= admitted < 4 * BURST  # per process: bounded, not open, not closed
            _assert_told_when(refused)
            with redis_server(port):
                # Each replica tries Redis again a second after its last failure.
                await asyncio.sleep(1.5)
                admitted, refused = await spread(urls, api_key, 2 * BURST)
                assert admitted == BURST
                _assert_told_when(refused)

"""Real Chromium (Debian's, headless) against a real ``tidings serve --demo``.

Chromium comes from the system (``apt-get install chromium``; CI installs it in scripts/ensure-services.sh),
never from ``playwright install``. Without it these tests skip, except under ``TIDINGS_TEST_REQUIRE`` (CI),
where they fail. Every page a test opened is screenshot into test-artifacts/browser/ when the test ends,
pass or fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from client.server import TidingsServer

from .demo import DemoPages

CHROMIUM = Path(os.environ.get("TIDINGS_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TidingsServer]:
    running = TidingsServer(tmp_path_factory.mktemp("browser") / "data", demo=True).start()
    try:
        yield running
    finally:
        running.stop()
        print(f"--- server log tail ---\n{running.log_tail()}")


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("TIDINGS_TEST_REQUIRE"):
            pytest.fail(f"{reason}; TIDINGS_TEST_REQUIRE is set")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def demo(
    browser: Browser, demo_server: TidingsServer, artifacts: Path, request: pytest.FixtureRequest
) -> AsyncIterator[DemoPages]:
    pages = DemoPages(browser, demo_server.base_url)
    try:
        yield pages
    finally:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
        await pages.screenshot_all(artifacts, name)
        await pages.close()

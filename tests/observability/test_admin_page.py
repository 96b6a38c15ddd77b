"""The admin page in real Chromium (Debian's, headless, through Playwright) against a real server: live charts
of what the server is doing, and one notification's journey. A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from websockets.asyncio.client import ClientConnection, connect

from .server import ADMIN_TOKEN, Server

pytestmark = pytest.mark.e2e

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
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "observability"
WITHIN_MS = 10_000
SNEAKY_USER = "<img src=x onerror=window.__xss=1>"
UNKNOWN = "\u2013"  # what a tile shows before it has a value


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("TIDINGS_TEST_REQUIRE"):
            pytest.fail(f"{reason}; TIDINGS_TEST_REQUIRE is set")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    started = await Server(tmp_path / "data").start()
    try:
        yield started
    finally:
        await started.stop()


class Traffic:
    """A producer and one user connected over WebSocket, against the server under test."""

    def __init__(self, server: Server, app: dict[str, str], ws: ClientConnection) -> None:
        self.server, self.app, self.ws = server, app, ws
        self.http = httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=10)

    async def send(self, recipients: list[str]) -> str:
        headers = {"Authorization": f"Bearer {self.app['api_key']}"}
        answer = await self.http.post(
            "/v1/events", json={"type": "t", "recipients": recipients}, headers=headers
        )
        assert answer.status_code == 202, answer.text
        event_id: str = answer.json()["id"]
        return event_id

    async def received(self) -> dict[str, Any]:
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(decode=False), 10))
        return frame


def _token(app: dict[str, str], user: str) -> str:
    claims = {"iss": app["app"], "sub": user, "aud": "tidings", "exp": 4102444800}
    return jwt.encode(claims, app["jwt_secret"], algorithm="HS256")


@pytest.fixture
async def traffic(server: Server) -> AsyncIterator[Traffic]:
    app = await server.create_app("shop")
    async with connect(f"ws://127.0.0.1:{server.port}/v1/ws") as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": _token(app, "alice")}).decode())
        traffic = Traffic(server, app, ws)
        assert (await traffic.received())["type"] == "ready"
        try:
            yield traffic
        finally:
            await traffic.http.aclose()


async def _open(browser: Browser, server: Server) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 1100})
    page = await context.new_page()
    await page.goto(f"{server.base_url}/admin?interval=0.5")
    return page


async def _sign_in(page: Page, token: str = ADMIN_TOKEN) -> None:
    await page.locator("#token").fill(token)
    await page.get_by_role("button", name="Connect").click()


async def _painted_pixels(page: Page, canvas: str) -> int:
    count: int = await page.evaluate(
        """(id) => {
            const c = document.getElementById(id);
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let painted = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
            return painted;
        }""",
        canvas,
    )
    return count


async def test_the_dashboard_charts_what_the_server_does(
    browser: Browser, server: Server, traffic: Traffic
) -> None:
    """With the token entered, the tiles, legends, funnel and charts show the server's traffic as it happens."""
    page = await _open(browser, server)
    await expect(page.locator("#status")).to_have_text("enter the admin token")
    await _sign_in(page)
    await expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=WITHIN_MS)

    for _ in range(12):  # over a few polls: rates and latencies need two snapshots with traffic between
        await traffic.send(["alice"])
        assert (await traffic.received())["type"] == "notification"
        await asyncio.sleep(0.1)

    await expect(page.locator("#tile-connections .value")).to_have_text("1", timeout=WITHIN_MS)
    await expect(page.locator("#tile-lag .value")).to_have_text("0")
    await expect(page.locator('#funnel li[data-stage="accepted"] .value')).to_have_text(
        "12", timeout=WITHIN_MS
    )
    await expect(page.locator('#funnel li[data-stage="delivered_live"] .value')).to_have_text("12 (100%)")
    legend = page.locator('#panel-connections .legend li[data-key="ws"] .value')
    await expect(legend).to_have_text("1")
    await expect(page.locator("#tile-p99 .value")).to_have_text(
        re.compile(r"^[0-9.]+ (µs|ms|s)$"), timeout=WITHIN_MS
    )
    rate = page.locator('#panel-throughput .legend li[data-key="accepted"] .value')
    await expect(rate).to_have_text(re.compile(r"^[0-9.]+[kMG]? /s$"))
    assert await _painted_pixels(page, "chart-throughput") > 1000
    assert await _painted_pixels(page, "chart-latency") > 1000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)

    await page.reload()  # the token is kept for this tab: no second sign-in
    await expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=WITHIN_MS)
    await expect(page.locator('#funnel li[data-stage="accepted"] .value')).to_have_text("12")


async def test_where_is_my_notification_shows_its_journey(
    browser: Browser, server: Server, traffic: Traffic
) -> None:
    """An event to Alice (connected) and to a user with a hostile id: each row, its delivery, seen and read."""
    event_id = await traffic.send(["alice", SNEAKY_USER])
    notification = (await traffic.received())["notification"]
    user = {"Authorization": f"Bearer {_token(traffic.app, 'alice')}"}
    await traffic.http.post("/v1/me/notifications/seen", json={"up_to": notification["seq"]}, headers=user)

    page = await _open(browser, server)
    await _sign_in(page)
    await page.locator("#event-id").fill(event_id)
    await page.get_by_role("button", name="Find").click()

    steps = page.locator("#journey .steps")
    await expect(steps.locator('[data-step="accepted"]')).to_contain_text("shop · t · normal · 2 recipients")
    await expect(steps.locator('[data-step="fanned out"]')).to_contain_text("2 inbox writes")
    await expect(steps.locator('[data-step="stored"]')).to_contain_text("2 inbox rows")
    await expect(steps.locator('[data-step="delivered live"]')).to_contain_text("1 of 2")
    await expect(steps.locator('[data-step="seen"]')).to_contain_text("1 of 2")
    await expect(steps.locator('[data-step="read"]')).to_contain_text("0 of 2")
    alice = page.locator('#journey tr[data-user="alice"] td')
    await expect(alice.nth(1)).to_have_text(str(notification["seq"]))
    await expect(alice.nth(3)).to_contain_text("ws ")
    sneaky = page.locator("#journey tbody tr").filter(has_text="onerror")
    await expect(sneaky.locator("td").first).to_have_text(SNEAKY_USER)  # shown as text, never as markup
    assert await page.evaluate("window.__xss === undefined")
    await page.screenshot(path=str(ARTIFACTS / "admin-journey.png"), full_page=True)


async def test_the_offline_side_shows_a_dead_letter(
    browser: Browser, server: Server, traffic: Traffic
) -> None:
    """A webhook endpoint on a refused (private) address: the sender ends its delivery dead without sending
    anything, and the page's offline tiles and legend say so."""
    producer = {"Authorization": f"Bearer {traffic.app['api_key']}"}
    rules = await traffic.http.put("/v1/rules", json={"channels": {"webhook": True}}, headers=producer)
    assert rules.status_code == 200, rules.text
    hook = await traffic.http.post("/v1/webhooks", json={"url": "http://10.0.0.1/hook"}, headers=producer)
    assert hook.status_code == 201, hook.text
    await traffic.send(["bob"])

    page = await _open(browser, server)
    await _sign_in(page)
    await expect(page.locator("#tile-dead .value")).to_have_text("1", timeout=3 * WITHIN_MS)
    await expect(page.locator("#tile-queue .value")).to_have_text("0")
    await expect(page.locator("#tile-disabled .value")).to_have_text("0")
    await expect(page.locator("#tile-oldest .value")).to_have_text("0 s")
    await expect(page.locator('#offline-sends li[data-channel="webhook"]')).to_have_text(
        "webhook dead 1", timeout=WITHIN_MS
    )
    await page.screenshot(path=str(ARTIFACTS / "admin-offline.png"), full_page=True)


async def test_a_wrong_token_is_refused_and_the_page_says_so(browser: Browser, server: Server) -> None:
    """A wrong admin token: no data, a clear message, and the token form back."""
    page = await _open(browser, server)
    await _sign_in(page, "not-the-token")
    await expect(page.locator("#status")).to_have_attribute("data-state", "stopped", timeout=WITHIN_MS)
    await expect(page.locator("#status")).to_have_text("the admin token was refused")
    await expect(page.locator("#token")).to_be_visible()
    await expect(page.locator("#tile-accepted .value")).to_have_text(UNKNOWN)


async def test_with_admin_routes_off_the_page_says_how_to_turn_them_on(
    browser: Browser, tmp_path: Path
) -> None:
    """Without TIDINGS_ADMIN_TOKEN the page does not ask for a token: it says how to start the server."""
    server = await Server(tmp_path / "off", env={"TIDINGS_ADMIN_TOKEN": ""}).start()
    try:
        page = await _open(browser, server)
        note = page.locator("#admin-off")
        await expect(note).to_be_visible()
        await expect(note).to_contain_text("TIDINGS_ADMIN_TOKEN=")
        await expect(page.locator("#token-form")).to_be_hidden()
        await expect(page.locator("#status")).to_have_text("admin routes are off")
    finally:
        await server.stop()

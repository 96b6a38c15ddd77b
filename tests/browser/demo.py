"""The demo page as a test sees it: who is connected, what the list shows, what the SDK delivered.

The page's Content-Security-Policy forbids eval, so waits use Playwright's locator assertions (which need
none) rather than ``wait_for_function``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, BrowserContext, Page, expect

CONNECT_WITHIN_MS = 10_000


class DemoPage:
    def __init__(self, context: BrowserContext, page: Page, user: str) -> None:
        self.context = context
        self.page = page
        self.user = user

    async def connected(self) -> DemoPage:
        await expect(self.page.locator("#status")).to_have_attribute(
            "data-state", "open", timeout=CONNECT_WITHIN_MS
        )
        return self

    async def received(self) -> list[int]:
        """The seqs the SDK delivered to this page load, in order."""
        seqs: list[int] = await self.page.evaluate("window.tidingsDemo.received")
        return seqs

    async def duplicates(self) -> int:
        count: int = await self.page.evaluate("window.tidingsDemo.client.duplicates")
        return count

    async def listed(self) -> list[int]:
        """The seqs of the rows in the list, top to bottom."""
        seqs: list[str] = await self.page.locator("#list li").evaluate_all(
            "rows => rows.map(r => r.dataset.seq)"
        )
        return [int(seq) for seq in seqs]

    async def badge(self) -> int:
        badge = self.page.locator("#badge")
        return int(await badge.text_content() or 0) if await badge.is_visible() else 0

    def live_rows(self) -> Any:
        return self.page.locator("#list li[data-live]")


class DemoPages:
    """Browser contexts (one per person, like separate browsers) and their pages, closed after the test."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self._contexts: dict[str, BrowserContext] = {}
        self._pages: list[tuple[str, Page]] = []

    async def context(self, name: str) -> BrowserContext:
        if name not in self._contexts:
            self._contexts[name] = await self.browser.new_context(viewport={"width": 1200, "height": 760})
        return self._contexts[name]

    async def open(self, user: str, *, context: str | None = None, **params: str) -> DemoPage:
        """``/demo?user=…`` in the person's own context (or the named one), once it is live."""
        ctx = await self.context(context or user)
        page = await ctx.new_page()
        self._pages.append((f"{context or user}-{len(self._pages)}", page))
        query = httpx.QueryParams({"user": user, **params})
        await page.goto(f"{self.base_url}/demo?{query}")
        return await DemoPage(ctx, page, user).connected()

    async def act(self, actor: str, action: str, target: str | None = None, text: str = "") -> str:
        """What the right-hand panel does, from the test: returns the event id."""
        body = {"actor": actor, "action": action, "text": text}
        if target is not None:
            body["target"] = target
        async with httpx.AsyncClient(base_url=self.base_url, trust_env=False) as http:
            response = await http.post("/demo/api/actions", json=body)
        response.raise_for_status()
        event_id: str = response.json()["event_id"]
        return event_id

    async def inbox(self, user: str) -> list[dict[str, Any]]:
        """The user's inbox over the REST API, oldest first (the truth the page is checked against)."""
        async with httpx.AsyncClient(base_url=self.base_url, trust_env=False) as http:
            session = (await http.post("/demo/api/session", json={"user": user})).json()
            headers = {"Authorization": f"Bearer {session['token']}"}
            page = await http.get("/v1/me/notifications", params={"after": 0, "limit": 100}, headers=headers)
        items: list[dict[str, Any]] = page.json()["items"]
        return items

    async def screenshot_all(self, folder: Path, test_name: str) -> None:
        """One PNG per page still open, in ``folder`` (which exists)."""
        for label, page in self._pages:
            if not page.is_closed():
                with contextlib.suppress(Exception):  # a screenshot must not hide the test's own outcome
                    await page.screenshot(path=str(folder / f"{test_name}-{label}.png"))

    async def close(self) -> None:
        for ctx in self._contexts.values():
            await ctx.close()

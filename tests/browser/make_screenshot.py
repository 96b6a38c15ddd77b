"""Makes docs/demo.png: a demo server in a temporary directory, a few notifications, headless Chromium.

    .venv/bin/python -m tests.browser.make_screenshot   (from the repository root; needs /usr/bin/chromium)

Not a test: run it by hand when the page changes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from client.server import TidingsServer  # noqa: E402 - after the path it lives on

from .conftest import ARGS, CHROMIUM  # noqa: E402

# (who acts, what they do, the comment) — clicked on the page's right-hand panel, on Alice's post.
STORY = [
    ("bob", "follow", ""),
    ("carol", "comment", "That light is unreal!"),
    ("dave", "like", ""),
    ("bob", "like", ""),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = TidingsServer(Path(tmp) / "data", demo=True).start()
        try:
            shoot(server.base_url, ROOT / "docs" / "demo.png")
        finally:
            server.stop()


def shoot(base_url: str, path: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 720}, device_scale_factor=1)
        page.goto(f"{base_url}/demo?user=alice&on=alice")
        expect(page.locator("#status")).to_have_attribute("data-state", "open")
        for count, (actor, action, text) in enumerate(STORY, start=1):
            page.select_option("#as", actor)
            if action == "comment":
                page.fill("#comment", text)
                page.click("#comment-form button")
            else:
                page.click(f"[data-action={action}]")
            expect(page.locator("#list li")).to_have_count(count)
        page.locator("#list li").last.click()  # the oldest one: read
        expect(page.locator("#badge")).to_have_text(str(len(STORY) - 1))
        page.select_option("#as", "carol")
        page.fill("#comment", "See you at the harbour!")
        page.wait_for_timeout(1300)  # let the arrival animation finish: a still picture
        page.screenshot(path=str(path))
        browser.close()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The demo's "Enable push" button in real (headless) Chromium.

Headless Chromium has the Push API (so the button shows) but no push service and no one to grant the
notification permission, so a real subscription cannot succeed here (see docs/channels.md): what is checked
is that ``subscribePush`` fails with a clear message on the page instead of hanging or failing silently. The
subscription path itself is covered by the SDK's node tests (fakes of the browser APIs) and the Web Push
channel tests (a local push service stand-in).
"""

from __future__ import annotations

import re

from playwright.async_api import expect

from tidings.channels.webpush import generate_vapid_keys

from .demo import DemoPages

# What headless Chromium can answer: the permission is refused, or (if granted) it has no push service.
CLEAR = re.compile(
    r"push unavailable: (notifications are blocked|the browser's push service did not give a subscription)"
)


async def test_enable_push_shows_where_supported_and_fails_clearly_in_headless_chromium(
    demo: DemoPages,
) -> None:
    """The button is there; a click ends in a readable "push unavailable" message and the button comes back."""
    erin = await demo.open("bob")
    button = erin.page.locator("#push")
    await expect(button).to_be_visible()
    await expect(button).to_have_text("Enable push")

    await button.click()
    status = erin.page.locator("#push-status")
    await expect(status).to_contain_text("push unavailable:", timeout=15_000)
    await expect(status).to_have_text(CLEAR)
    await expect(button).to_be_enabled()


async def test_with_notifications_allowed_headless_chromium_has_no_push_service(demo: DemoPages) -> None:
    """Permission granted and a VAPID key served: ``pushManager.subscribe`` itself fails (no push service),
    reported as such, and nothing is posted to /v1/me/push-subscriptions."""
    context = await demo.context("push-granted")
    await context.grant_permissions(["notifications"], origin=demo.base_url)
    carol = await demo.open("carol", context="push-granted")
    posted: list[str] = []
    await carol.page.route(
        "**/v1/push/vapid-public-key",
        lambda route: route.fulfill(json={"public_key": generate_vapid_keys().public_key}),
    )
    await carol.page.route(
        "**/v1/me/push-subscriptions", lambda route: (posted.append(route.request.method), route.abort())
    )

    await carol.page.locator("#push").click()
    await expect(carol.page.locator("#push-status")).to_contain_text("push service", timeout=30_000)
    assert posted == []

"""An unlike in the demo: the producer retracts the like by its cancel_key, and the notification leaves the
other person's page live (the SDK's ``retract``), with the badge.
"""

from __future__ import annotations

from playwright.async_api import expect

from .demo import DemoPages

LIVE_WITHIN_MS = 5000


async def test_an_unlike_removes_the_like_from_the_other_persons_page_live(demo: DemoPages) -> None:
    """Alice likes Dave's post: Dave sees it; Alice unlikes it: the row leaves Dave's page and the badge drops."""
    dave = await demo.open("dave")
    alice = await demo.open("alice", **{"as": "alice", "on": "dave"})
    unread = await dave.badge()

    await alice.page.get_by_role("button", name="♥ Like").click()
    liked = dave.live_rows().filter(has_text="Alice liked your post")
    await expect(liked).to_have_count(1, timeout=LIVE_WITHIN_MS)
    await expect(dave.page.locator("#badge")).to_have_text(str(unread + 1), timeout=LIVE_WITHIN_MS)
    [seq] = await liked.evaluate_all("rows => rows.map(r => Number(r.dataset.seq))")

    await alice.page.get_by_role("button", name="♡ Unlike").click()
    await expect(liked).to_have_count(0, timeout=LIVE_WITHIN_MS)
    retracted: list[list[int]] = await dave.page.evaluate("window.tidingsDemo.retracted")
    assert any(seq in seqs for seqs in retracted), retracted
    if unread == 0:
        await expect(dave.page.locator("#badge")).to_be_hidden(timeout=LIVE_WITHIN_MS)
    else:
        await expect(dave.page.locator("#badge")).to_have_text(str(unread), timeout=LIVE_WITHIN_MS)
    assert seq not in await dave.listed()
    assert not [item for item in await demo.inbox("dave") if item["seq"] == seq]  # gone from the inbox too

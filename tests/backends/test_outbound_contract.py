"""``ports.Outbound`` over every store backend: targets, the claim/lease/finish ledger, dead letters."""

from __future__ import annotations

import asyncio
import dataclasses

from tidings.core.delivery import (
    Device,
    Finished,
    Profile,
    PushSubscription,
    WebhookEndpoint,
)
from tidings.core.models import ChannelPlan, Event, InboxWrite
from tidings.core.rules import CANCEL
from tidings.ports import Store
from tidings.testing import FakeClock


def note(
    event_id: str, user: str = "alice", channels: tuple[str, ...] = ("web_push",), low: bool = False
) -> InboxWrite:
    event = Event(
        id=event_id,
        app="app1",
        type="post.liked",
        accepted_at=0.0,
        recipients=(user,),
        priority="low" if low else "normal",
    )
    plans = tuple(ChannelPlan(ch, "test", due_at=None) for ch in channels)
    return InboxWrite("app1", user, event, 0.0, 3, plans, "recipient")


def sub(sub_id: str, user: str = "alice", endpoint: str | None = None) -> PushSubscription:
    return PushSubscription(sub_id, "app1", user, endpoint or f"https://push.example/{sub_id}", "p", "a", 1.0)


async def test_targets_round_trip(store: Store) -> None:
    out = store.outbound
    await out.set_profile(Profile("app1", "alice", "alice@example.org", "fr", "Europe/Paris", "Alice"))
    assert (await out.profile("app1", "alice")) == Profile(
        "app1", "alice", "alice@example.org", "fr", "Europe/Paris", "Alice"
    )
    assert await out.profile("app1", "bob") is None
    first = await out.add_subscription(sub("s1"))
    again = await out.add_subscription(sub("s2", user="bob", endpoint=first.endpoint))
    assert again.id == "s1"
    assert again.user == "bob"
    assert await out.subscriptions("app1", "alice") == []
    assert not await out.remove_subscription("app1", "alice", "s1")  # not hers
    assert await out.remove_subscription("app1", "bob", "s1")
    dev = await out.add_device(Device("d1", "app1", "alice", "android", "tok", 1.0))
    assert [x.id for x in await out.devices("app1", "alice")] == [dev.id]
    hook = WebhookEndpoint("h1", "app1", "https://hooks.example/x", (), ("whsec_a",), 1.0)
    await out.add_webhook(hook)
    rotated = await out.rotate_secret("app1", "h1", "whsec_b", overlap_until=100.0)
    assert rotated is not None
    assert rotated.secrets == ("whsec_b", "whsec_a")
    assert rotated.active_secrets(50.0) == ("whsec_b", "whsec_a")
    assert rotated.active_secrets(100.0) == ("whsec_b",)
    assert await out.rotate_secret("other", "h1", "whsec_c", 1.0) is None
    assert await out.remove_webhook("app1", "h1")
    assert await out.webhooks("app1") == []


async def test_vapid_keys_are_made_once(store: Store) -> None:
    made = await asyncio.gather(
        *[store.outbound.vapid("app1", lambda: ("priv", "pub"), 1.0) for _ in range(3)]
    )
    assert set(made) == {("priv", "pub")}
    assert await store.outbound.vapid("app1", lambda: ("x", "y"), 2.0) == ("priv", "pub")


async def test_a_due_row_is_claimed_once_per_target_and_finished(store: Store, clock: FakeClock) -> None:
    out = store.outbound
    await out.add_subscription(sub("s1"))
    await out.add_subscription(sub("s2"))
    await store.inbox.write([note("e1")])
    now = clock.time()
    first = await out.claim("a", now, 30.0, 10)
    assert sorted(c.target for c in first) == ["push:s1", "push:s2"]
    assert all(c.attempts == 1 and c.seq == 1 for c in first)
    assert await out.claim("b", now, 30.0, 10) == []  # leased to a
    assert await store.decisions.pending("app1", "alice") == []  # the deferred row became deliveries
    one, two = first
    assert (
        await out.finish("a", [Finished(one.id, "sent"), Finished(two.id, "pending", next_at=now + 5)], now)
        == 2
    )
    assert await out.finish("b", [Finished(one.id, "dead")], now) == 0  # not b's
    assert await out.claim("b", now + 1, 30.0, 10) == []
    retaken = await out.claim("b", now + 5, 30.0, 10)
    assert [(c.id, c.attempts) for c in retaken] == [(two.id, 2)]
    # b dies; its lease ends; c takes the row again
    assert await out.claim("c", now + 20, 30.0, 10) == []
    [again] = await out.claim("c", now + 36, 30.0, 10)
    assert (again.id, again.attempts) == (two.id, 3)
    assert await out.finish("b", [Finished(two.id, "sent")], now + 37) == 0  # b's lease is gone
    await out.finish("c", [Finished(two.id, "dead", error="HTTP 400")], now + 37)
    records = {r.target: r for r in await out.for_event("app1", "e1", 100)}
    assert (records["push:s1"].status, records["push:s2"].status) == ("sent", "dead")
    dead, events = await out.dead("app1", 10)
    assert [(r.id, r.last_error) for r in dead] == [(two.id, "HTTP 400")]
    assert events == []
    assert await out.retry_dead([two.id], now + 40) == 1
    [revived] = await out.claim("d", now + 40, 30.0, 10)
    assert (revived.id, revived.attempts) == (two.id, 1)


async def test_read_before_the_claim_cancels(store: Store, clock: FakeClock) -> None:
    out = store.outbound
    await out.add_subscription(sub("s1"))
    await store.inbox.write([note("e1")])
    await out.claim("a", clock.time(), 30.0, 0)  # nothing leased: limit 0
    await store.inbox.write([note("e2")])
    claimed = await out.claim("a", clock.time(), 1.0, 10)
    await out.finish(
        "a", [Finished(c.id, "pending", next_at=clock.time() + 5) for c in claimed], clock.time()
    )
    await store.inbox.mark("app1", "alice", "read", seqs=[1, 2], up_to=None, at=clock.time())
    assert await out.claim("a", clock.time() + 10, 30.0, 10) == []
    statuses = {(r.seq, r.status) for r in await out.for_event("app1", "e1", 10)}
    statuses |= {(r.seq, r.status) for r in await out.for_event("app1", "e2", 10)}
    assert statuses == {(1, "cancelled"), (2, "cancelled")}
    kinds = [d.kind for d in await store.decisions.for_event("app1", "e2", user=None, after=None, limit=10)]
    assert CANCEL in kinds


async def test_no_target_records_a_cancel_and_gone_removes_the_target(store: Store, clock: FakeClock) -> None:
    out = store.outbound
    await store.inbox.write([note("e1", channels=("web_push", "email"))])
    await out.set_profile(Profile("app1", "alice", "alice@example.org"))
    claimed = await out.claim("a", clock.time(), 30.0, 10)
    assert [c.target for c in claimed] == ["email"]
    found = await out.targets(claimed)
    assert isinstance(found[("app1", "alice", "email")], Profile)
    await out.finish("a", [Finished(claimed[0].id, "failed", error="550", remove_target=True)], clock.time())
    profile = await out.profile("app1", "alice")
    assert profile is not None
    assert profile.email is None
    decisions = await store.decisions.for_event("app1", "e1", user=None, after=None, limit=10)
    assert ("cancel", "web_push") in {(d.kind, d.channel) for d in decisions}


async def test_a_webhook_failing_for_a_day_is_disabled(store: Store, clock: FakeClock) -> None:
    out = store.outbound
    await out.add_webhook(WebhookEndpoint("h1", "app1", "https://hooks.example/x", (), ("whsec_a",), 1.0))
    t = clock.time()
    for n in range(3):
        await store.inbox.write([note(f"e{n}", channels=("webhook",))])
        [c] = await out.claim("a", t, 30.0, 10)
        await out.finish("a", [Finished(c.id, "dead", ok=False)], t)
        t += 50_000
    [hook] = await out.webhooks("app1")
    assert hook.disabled
    assert hook.failing_since is not None
    assert [h.id for h in await out.disabled_webhooks(10)] == ["h1"]
    assert await out.disabled_webhooks(0) == []
    await store.inbox.write([note("e9", channels=("webhook",))])
    assert await out.claim("a", t, 30.0, 10) == []


async def test_dead_events_and_depth(store: Store, clock: FakeClock) -> None:
    out = store.outbound
    await out.record_dead_event("app1", "e1", "poison: bad", clock.time())
    _, events = await out.dead(None, 10)
    assert [(e.event_id, e.error) for e in events] == [("e1", "poison: bad")]
    await out.add_subscription(sub("s1"))
    await store.inbox.write([note("e2")])
    backlog = await out.depth(clock.time() + 1)
    assert (backlog.due, backlog.dead, backlog.disabled_webhooks) == (1, 1, 0)
    assert backlog.oldest_due is not None


async def test_prune_forgets_ended_deliveries_but_keeps_dead_ones(store: Store, clock: FakeClock) -> None:
    out = store.outbound
    await out.add_subscription(sub("s1"))
    await store.inbox.write([note("e1"), note("e2")])
    one, two = await out.claim("a", clock.time(), 30.0, 10)
    await out.finish("a", [Finished(one.id, "sent"), Finished(two.id, "dead", error="x")], clock.time())
    assert await store.decisions.prune(clock.time() + 1) >= 1
    assert await out.for_event("app1", "e1", 10) == []
    assert [r.status for r in await out.for_event("app1", "e2", 10)] == ["dead"]


async def test_a_webhook_gets_only_the_types_it_asked_for(store: Store, clock: FakeClock) -> None:
    out = store.outbound
    await out.add_webhook(
        WebhookEndpoint("h1", "app1", "https://a.example/", ("post.liked",), ("whsec_a",), 1.0)
    )
    await out.add_webhook(
        WebhookEndpoint("h2", "app1", "https://b.example/", ("comment",), ("whsec_b",), 1.0)
    )
    await out.add_webhook(WebhookEndpoint("h3", "app1", "https://c.example/", (), ("whsec_c",), 1.0))
    await store.inbox.write([note("e1", channels=("webhook",))])
    claimed = await out.claim("a", clock.time(), 30.0, 10)
    assert sorted(c.target for c in claimed) == ["webhook:h1", "webhook:h3"]
    found = await out.targets(claimed)
    hook = found[("app1", "alice", "webhook:h1")]
    assert isinstance(hook, WebhookEndpoint)
    assert hook.secrets == ("whsec_a",)


async def test_a_traced_rows_context_reaches_its_deliveries(store: Store, clock: FakeClock) -> None:
    """The worker's W3C context of a sampled trace goes from the deferred row to each delivery's claim."""
    out = store.outbound
    await out.add_subscription(sub("s1"))
    await out.add_subscription(sub("s2"))
    carrier = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01", "tracestate": "k=v"}
    await store.inbox.write([dataclasses.replace(note("e1"), trace=carrier), note("e2")])
    [pending] = [d for d in await store.decisions.pending("app1", "alice") if d.event_id == "e1"]
    assert (pending.traceparent, pending.tracestate) == (carrier["traceparent"], "k=v")
    claimed = await out.claim("a", clock.time(), 30.0, 10)
    traces = sorted((c.event_id, c.traceparent, c.tracestate) for c in claimed)
    assert traces == [("e1", carrier["traceparent"], "k=v")] * 2 + [("e2", None, None)] * 2


async def test_a_retraction_cancels_the_claimed_deliveries_not_yet_sent(
    store: Store, clock: FakeClock
) -> None:
    """Web Push rows already expanded (one waiting for a retry, one leased): retracting the event cancels both;
    no sender takes them again, and each cancellation is in the decision log."""
    out = store.outbound
    await out.add_subscription(sub("s1"))
    await out.add_subscription(sub("s2"))
    await store.inbox.write([note("e1"), note("e2")])
    now = clock.time()
    claimed = await out.claim("a", now, 30.0, 10)
    retrying = next(c for c in claimed if c.event_id == "e1")
    await out.finish("a", [Finished(retrying.id, "pending", next_at=now + 5)], now)
    await store.inbox.retract("app1", event_ids=["e1"], cancel_keys=[])
    records = await out.for_event("app1", "e1", 10)
    assert {r.status for r in records} == {"cancelled"}
    assert {r.status for r in await out.for_event("app1", "e2", 10)} == {"pending"}  # leased, untouched
    assert [c.event_id for c in await out.claim("b", now + 60, 30.0, 10)] == ["e2", "e2"]
    decisions = await store.decisions.for_event("app1", "e1", user="alice", after=None, limit=10)
    assert ("cancel", "web_push") in {(d.kind, d.channel) for d in decisions}

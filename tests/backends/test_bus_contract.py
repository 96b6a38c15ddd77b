"""The ``ports.Bus`` contract (live messages addressed by app and user), over every bus backend.

One subscription per (app, user) per process: the gateway's hub is the bus's only subscriber, and it fans a
user's messages out to that user's connections. So the tests of several connections of one user go through a
``Hub`` over each bus, and the bus itself is held to refusing a second subscription of the same (app, user).
"""

from __future__ import annotations

import asyncio

import pytest

from tidings.core.models import LiveMessage
from tidings.errors import ConflictError
from tidings.gateway.hub import Hub
from tidings.ports import Bus


class Inbox:
    """Collects what a handler receives; ``wait_for`` waits (2 s at most) until ``n`` messages arrived."""

    def __init__(self) -> None:
        self.messages: list[LiveMessage] = []
        self._arrived = asyncio.Event()

    def __call__(self, message: LiveMessage) -> None:
        self.messages.append(message)
        self._arrived.set()

    async def wait_for(self, n: int) -> list[LiveMessage]:
        async with asyncio.timeout(2.0):
            while len(self.messages) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages


def message(seq: int, user: str = "alice", app: str = "app1") -> LiveMessage:
    return LiveMessage(app, user, seq, b'{"seq": %d, "data": "\xc3\xa9"}' % seq)


async def test_a_message_reaches_its_user_unaltered(bus: Bus) -> None:
    """A published notification arrives at the subscribed user's handler byte for byte."""
    got = Inbox()
    await bus.subscribe("app1", "alice", got)
    await bus.publish([message(1), message(2)])
    assert await got.wait_for(2) == [message(1), message(2)]


async def test_messages_reach_only_their_addressee(bus: Bus) -> None:
    """Other users, and the same user id in another app, receive nothing."""
    alice, bob, other_app = Inbox(), Inbox(), Inbox()
    await bus.subscribe("app1", "alice", alice)
    await bus.subscribe("app1", "bob", bob)
    await bus.subscribe("app2", "alice", other_app)
    await bus.publish([message(1), message(7, user="bob")])
    await bus.publish([message(3, app="app2")])
    assert await alice.wait_for(1) == [message(1)]
    assert await bob.wait_for(1) == [message(7, user="bob")]
    assert await other_app.wait_for(1) == [message(3, app="app2")]
    await asyncio.sleep(0.05)  # give a misrouted message the time to show up
    assert (len(alice.messages), len(bob.messages), len(other_app.messages)) == (1, 1, 1)


async def test_a_closed_subscription_receives_nothing_more(bus: Bus) -> None:
    """After its subscription closes, a handler is handed nothing; closing twice is harmless."""
    gone = Inbox()
    subscription = await bus.subscribe("app1", "alice", gone)
    await bus.publish([message(1)])
    await gone.wait_for(1)
    await subscription.close()
    await subscription.close()
    await bus.publish([message(2)])
    await asyncio.sleep(0.05)  # give a late delivery the time to show up
    assert gone.messages == [message(1)]


async def test_messages_before_subscribing_are_not_delivered(bus: Bus) -> None:
    """A subscription sees only what is published after it is in place (the store fills in the past)."""
    await bus.publish([message(1)])
    got = Inbox()
    await bus.subscribe("app1", "alice", got)
    await bus.publish([message(2)])
    assert await got.wait_for(1) == [message(2)]


async def test_a_failing_handler_is_logged_and_the_bus_carries_on(
    bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handler that raises is logged; it still gets the next message, and other users get theirs."""

    class Broken(Inbox):
        def __call__(self, message: LiveMessage) -> None:
            super().__call__(message)
            raise RuntimeError("handler bug")

    alice, bob = Broken(), Inbox()
    await bus.subscribe("app1", "alice", alice)
    await bus.subscribe("app1", "bob", bob)
    await bus.publish([message(1), message(2, user="bob"), message(3), message(4, user="bob")])
    assert await bob.wait_for(2) == [message(2, user="bob"), message(4, user="bob")]
    assert await alice.wait_for(2) == [message(1), message(3)]
    assert "live_handler_failed" in capsys.readouterr().out + capsys.readouterr().err


# --- one subscription per (app, user) -------------------------------------------------------------------


async def test_a_second_subscription_of_the_same_user_is_refused(bus: Bus) -> None:
    """While alice's subscription is open, another one for her is a ``ConflictError``; the first is unharmed,
    and the same id in another app, or another user, is a different subscription."""
    first = Inbox()
    await bus.subscribe("app1", "alice", first)
    with pytest.raises(ConflictError):
        await bus.subscribe("app1", "alice", Inbox())
    await bus.subscribe("app2", "alice", Inbox())
    await bus.subscribe("app1", "bob", Inbox())
    await bus.publish([message(1)])
    assert await first.wait_for(1) == [message(1)]


async def test_concurrent_subscriptions_of_the_same_user_let_one_through(bus: Bus) -> None:
    """Two subscribes of one (app, user) racing each other: one is in place, the other refused, and the one in
    place gets the messages."""
    inboxes = [Inbox(), Inbox()]
    outcomes = await asyncio.gather(
        *(bus.subscribe("app1", "alice", inbox) for inbox in inboxes), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1
    assert isinstance(refused[0], ConflictError)
    await bus.publish([message(1)])
    winner = inboxes[outcomes.index(next(o for o in outcomes if not isinstance(o, BaseException)))]
    assert await winner.wait_for(1) == [message(1)]


async def test_a_user_can_subscribe_again_as_soon_as_closing_began(bus: Bus) -> None:
    """``close`` frees the (app, user) before it first awaits: a user who reconnects at once is not refused,
    and the new subscription gets what is published next, the old one nothing more."""
    old, new = Inbox(), Inbox()
    subscription = await bus.subscribe("app1", "alice", old)
    closing = asyncio.ensure_future(subscription.close())
    await asyncio.sleep(0)  # the close has started and is waiting on the broker
    await bus.subscribe("app1", "alice", new)
    await closing
    await bus.publish([message(1)])
    assert await new.wait_for(1) == [message(1)]
    await asyncio.sleep(0.05)
    assert old.messages == []


# --- several connections of one user: the hub over each bus ---------------------------------------------


async def test_every_connection_of_a_user_gets_the_message(bus: Bus) -> None:
    """A user with two open devices gets each notification on both."""
    hub = Hub(bus)
    phone, laptop = Inbox(), Inbox()
    await hub.attach("app1", "alice", phone)
    await hub.attach("app1", "alice", laptop)
    await bus.publish([message(1)])
    assert await phone.wait_for(1) == await laptop.wait_for(1) == [message(1)]


async def test_a_detached_connection_receives_nothing_more(bus: Bus) -> None:
    """After a connection leaves, later messages are not handed to it; its user's other connection still
    gets them; detaching twice is harmless."""
    hub = Hub(bus)
    gone, staying = Inbox(), Inbox()
    detach = await hub.attach("app1", "alice", gone)
    await hub.attach("app1", "alice", staying)
    await bus.publish([message(1)])
    await gone.wait_for(1)
    await detach()
    await detach()
    await bus.publish([message(2)])
    await staying.wait_for(2)
    assert gone.messages == [message(1)]


async def test_a_failing_connection_does_not_break_the_others(
    bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    """One broken connection handler is logged; the other connections still get every message."""

    def broken(_: LiveMessage) -> None:
        raise RuntimeError("handler bug")

    hub = Hub(bus)
    first, last = Inbox(), Inbox()
    await hub.attach("app1", "alice", first)
    await hub.attach("app1", "alice", broken)
    await hub.attach("app1", "alice", last)
    await bus.publish([message(1), message(2)])
    assert await first.wait_for(2) == await last.wait_for(2) == [message(1), message(2)]
    assert "listener_failed" in capsys.readouterr().out + capsys.readouterr().err


async def test_the_last_connection_of_a_user_frees_the_subscription(bus: Bus) -> None:
    """Once every connection of a user here has left, the hub's subscription is closed: the bus takes a new
    one for that user, and reconnecting through the hub works at once."""
    hub = Hub(bus)
    phone, laptop = Inbox(), Inbox()
    detach_phone = await hub.attach("app1", "alice", phone)
    detach_laptop = await hub.attach("app1", "alice", laptop)
    await detach_phone()
    with pytest.raises(ConflictError):
        await bus.subscribe("app1", "alice", Inbox())  # the laptop still holds it
    await detach_laptop()
    assert len(hub) == 0
    again = Inbox()
    await hub.attach("app1", "alice", again)
    await bus.publish([message(1)])
    assert await again.wait_for(1) == [message(1)]

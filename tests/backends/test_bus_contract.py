"""The ``ports.Bus`` contract (live messages addressed by app and user), over every bus backend."""

from __future__ import annotations

import asyncio

import pytest

from tidings.core.models import LiveMessage
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


async def test_every_connection_of_a_user_gets_the_message(bus: Bus) -> None:
    """A user with two open devices gets each notification on both."""
    phone, laptop = Inbox(), Inbox()
    await bus.subscribe("app1", "alice", phone)
    await bus.subscribe("app1", "alice", laptop)
    await bus.publish([message(1)])
    assert await phone.wait_for(1) == await laptop.wait_for(1) == [message(1)]


async def test_closed_subscription_receives_nothing_more(bus: Bus) -> None:
    """After a connection unsubscribes, later messages are not handed to it; closing twice is harmless."""
    gone, staying = Inbox(), Inbox()
    subscription = await bus.subscribe("app1", "alice", gone)
    await bus.subscribe("app1", "alice", staying)
    await bus.publish([message(1)])
    await gone.wait_for(1)
    await subscription.close()
    await subscription.close()
    await bus.publish([message(2)])
    await staying.wait_for(2)
    assert gone.messages == [message(1)]


async def test_messages_before_subscribing_are_not_delivered(bus: Bus) -> None:
    """A subscription sees only what is published after it is in place (the store fills in the past)."""
    await bus.publish([message(1)])
    got = Inbox()
    await bus.subscribe("app1", "alice", got)
    await bus.publish([message(2)])
    assert await got.wait_for(1) == [message(2)]


async def test_a_failing_handler_does_not_break_the_others(
    bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    """One broken connection handler is logged; the other connections still get every message."""

    def broken(_: LiveMessage) -> None:
        raise RuntimeError("handler bug")

    first, last = Inbox(), Inbox()
    await bus.subscribe("app1", "alice", first)
    await bus.subscribe("app1", "alice", broken)
    await bus.subscribe("app1", "alice", last)
    await bus.publish([message(1), message(2)])
    assert await first.wait_for(2) == await last.wait_for(2) == [message(1), message(2)]
    assert "live_handler_failed" in capsys.readouterr().out + capsys.readouterr().err

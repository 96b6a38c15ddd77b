"""The SDKs' side of a notification's life and of token lifetime: retract and state frames (WebSocket and SSE),
the new user and producer calls (their request shapes against a recording HTTP server), and a token that expires
on an open stream, against a real ``tidings serve``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tidings.client import ProducerClient, SyncProducerClient, UserClient

from .recorder import RecordingServer, Seen, json_answer
from .server import AppKeys, TidingsServer
from .support import like

WITHIN = 10.0


def _notification(seq: int) -> dict[str, Any]:
    return {"seq": seq, "id": f"n{seq}", "type": "post.liked", "data": {}}


RETRACT = {"type": "retract", "seqs": [1], "unread": 1, "unseen": 2}
STATE = {"type": "state", "action": "archive", "seqs": [2], "unread": 0, "unseen": 1}


async def test_ws_retract_and_state_frames_reach_the_handlers_with_the_counts() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(json.dumps({"type": "ready", "user": "alice", "last_seq": 0, "epoch": "e"}))
        for seq in (1, 2):
            await ws.send(json.dumps({"type": "notification", "notification": _notification(seq)}))
        await ws.send(json.dumps(RETRACT))
        await ws.send(json.dumps(STATE))
        await ws.send(json.dumps({"type": "notification", "notification": _notification(3)}))
        await ws.wait_closed()

    retracted: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    async with serve(handler, "127.0.0.1", 0) as fake:
        port = fake.sockets[0].getsockname()[1]
        alice = UserClient(f"http://127.0.0.1:{port}", "token", trust_env=False)
        stream = alice.stream("ws", after=0, on_retract=retracted.append, on_state=states.append)
        async with alice, stream:
            seqs = [(await asyncio.wait_for(anext(stream), WITHIN))["seq"] for _ in range(3)]
    assert seqs == [1, 2, 3]
    assert retracted == [RETRACT]
    assert states == [STATE]
    assert (stream.unread, stream.unseen) == (0, 1)


async def test_sse_retract_and_state_events_reach_the_handlers_and_the_retraction_moves_the_cursor() -> None:
    body = (
        b'event: ready\ndata: {"user":"alice","last_seq":0,"epoch":"e"}\n\n'
        + b"id: 1\nevent: notification\ndata: "
        + json.dumps(_notification(1)).encode()
        + b"\n\n"
        + b"id: 2\nevent: retract\ndata: "
        + json.dumps(RETRACT).encode()
        + b"\n\n"
        + b"event: state\ndata: "
        + json.dumps(STATE).encode()
        + b"\n\n"
        + b"id: 3\nevent: notification\ndata: "
        + json.dumps(_notification(3)).encode()
        + b"\n\n"
    )
    retracted: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    async with RecordingServer(lambda _: (200, "text/event-stream", body)) as fake:
        alice = UserClient(fake.base_url, "token", trust_env=False)
        stream = alice.stream("sse", after=0, on_retract=retracted.append, on_state=states.append)
        async with alice, stream:
            first = await asyncio.wait_for(anext(stream), WITHIN)
            assert stream.last_seq == 1
            second = await asyncio.wait_for(anext(stream), WITHIN)
    assert [first["seq"], second["seq"]] == [1, 3]
    assert retracted == [{**RETRACT, "seq": 2}]  # the marker row's seq, from the event id
    assert states == [STATE]
    assert (stream.unread, stream.unseen) == (0, 1)


async def test_user_state_calls_and_list_filters_have_the_contracts_shapes() -> None:
    page = {"items": [], "next": None}
    async with (
        RecordingServer(lambda s: json_answer(200, page)) as fake,
        UserClient(fake.base_url, "token", trust_env=False) as alice,
    ):
        await alice.archive([1, 2])
        await alice.unarchive([2])
        await alice.mark_unread([3])
        await alice.delete([4])
        await alice.notifications(status="archived", category="social", type="post.liked")
        with pytest.raises(ValueError, match="seqs"):
            await alice.archive([])
    assert fake.seen == [
        Seen("POST", "/v1/me/notifications/archive", {"seqs": [1, 2]}),
        Seen("POST", "/v1/me/notifications/unarchive", {"seqs": [2]}),
        Seen("POST", "/v1/me/notifications/unread", {"seqs": [3]}),
        Seen("POST", "/v1/me/notifications/delete", {"seqs": [4]}),
        Seen("GET", "/v1/me/notifications?limit=50&status=archived&category=social&type=post.liked", None),
    ]


async def test_producer_lifecycle_calls_have_the_contracts_shapes() -> None:
    def script(seen: Seen) -> tuple[int, str, bytes]:
        return json_answer(202, {"id": "ev1", "status": "accepted"} if seen.path == "/v1/events" else {})

    async with RecordingServer(script) as fake:
        async with ProducerClient(fake.base_url, "key", trust_env=False) as tidings:
            await tidings.send(like("alice"), cancel_key="like:bob:1", ordering_key="post:1")
            await tidings.cancel(["like:bob:1", "like:bob:2"])
            await tidings.retract("ev/1")
            await tidings.erase_user("alice")
            await tidings.export_user("alice")
            with pytest.raises(TypeError, match="cancel_keys"):
                await tidings.cancel("like:bob:1")

        def blocking() -> None:
            with SyncProducerClient(fake.base_url, "key", trust_env=False) as sync:
                sync.cancel(["k"])
                sync.retract("ev1")

        await asyncio.to_thread(blocking)  # the recording server answers on this loop meanwhile
    sent = fake.seen[0]
    assert (sent.method, sent.path) == ("POST", "/v1/events")
    assert (sent.body["cancel_key"], sent.body["ordering_key"]) == ("like:bob:1", "post:1")
    assert fake.seen[1:] == [
        Seen("POST", "/v1/events/cancel", {"cancel_keys": ["like:bob:1", "like:bob:2"]}),
        Seen("DELETE", "/v1/events/ev%2F1", None),
        Seen("DELETE", "/v1/users/alice", None),
        Seen("GET", "/v1/users/alice/export", None),
        Seen("POST", "/v1/events/cancel", {"cancel_keys": ["k"]}),
        Seen("DELETE", "/v1/events/ev1", None),
    ]


class Tokens:
    """A token function: the first token lives ``first_ttl`` seconds, later ones ten minutes."""

    def __init__(self, tenant: AppKeys, user: str, first_ttl: float) -> None:
        self.tenant, self.user, self.first_ttl, self.handed = tenant, user, first_ttl, 0

    def __call__(self) -> str:
        self.handed += 1
        return self.tenant.token(self.user, ttl=self.first_ttl if self.handed == 1 else 600)


async def test_ws_token_expiry_is_answered_in_band_and_the_connection_stays(
    server: TidingsServer, tenant: AppKeys
) -> None:
    tokens = Tokens(tenant, "alice", first_ttl=2)
    async with ProducerClient(server.base_url, tenant.api_key, trust_env=False) as tidings:
        alice = UserClient(server.base_url, tokens, trust_env=False)
        async with alice, alice.stream("ws", after=0) as stream:
            await tidings.send(like("alice", 1))
            assert (await asyncio.wait_for(anext(stream), WITHIN))["seq"] == 1
            pending = asyncio.ensure_future(anext(stream))
            async with asyncio.timeout(WITHIN):
                while stream.expires_at is None:  # noqa: ASYNC110 (the stream reports it as state)
                    await asyncio.sleep(0.05)
            await tidings.send(like("alice", 2))
            assert (await asyncio.wait_for(pending, WITHIN))["seq"] == 2
    assert stream.reauths == 1
    assert stream.connects == 1
    assert tokens.handed == 2


async def test_sse_token_expiry_reconnects_with_a_fresh_token_losing_nothing(
    server: TidingsServer, tenant: AppKeys
) -> None:
    tokens = Tokens(tenant, "bob", first_ttl=2)
    async with ProducerClient(server.base_url, tenant.api_key, trust_env=False) as tidings:
        bob = UserClient(server.base_url, tokens, trust_env=False, random=lambda: 0.0)
        async with bob, bob.stream("sse", after=0) as stream:
            await tidings.send(like("bob", 1))
            assert (await asyncio.wait_for(anext(stream), WITHIN))["seq"] == 1
            pending = asyncio.ensure_future(anext(stream))
            async with asyncio.timeout(WITHIN):
                while stream.connects < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await tidings.send(like("bob", 2))
            assert (await asyncio.wait_for(pending, WITHIN))["seq"] == 2
    assert tokens.handed >= 2


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_a_cancelled_event_is_retracted_live_and_a_state_change_reaches_another_stream(
    server: TidingsServer, tenant: AppKeys, transport: str
) -> None:
    """Against the real server: the producer cancels a like by its
    cancel_key and the live stream gets the retraction with the counts; an archive made by the user reaches
    the stream as a state frame."""
    retracted: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    async with ProducerClient(server.base_url, tenant.api_key, trust_env=False) as tidings:
        alice = UserClient(server.base_url, tenant.token("alice"), trust_env=False)
        stream = alice.stream(transport, after=0, on_retract=retracted.append, on_state=states.append)  # type: ignore[arg-type]
        async with alice, stream:
            await tidings.send(like("alice", 1), cancel_key="like:bob:1")
            await tidings.send(like("alice", 2))
            first = await asyncio.wait_for(anext(stream), WITHIN)
            second = await asyncio.wait_for(anext(stream), WITHIN)
            pending = asyncio.ensure_future(anext(stream))
            await tidings.cancel(["like:bob:1"])
            async with asyncio.timeout(WITHIN):
                while not retracted:  # noqa: ASYNC110 (handlers report as state)
                    await asyncio.sleep(0.02)
            await alice.archive([second["seq"]])
            async with asyncio.timeout(WITHIN):
                while not states:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            pending.cancel()  # and wait for it: the stream cannot close while a read is running
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            listed = await alice.notifications(status="all")
    assert retracted[0]["seqs"] == [first["seq"]]
    assert (retracted[0]["unread"], retracted[0]["unseen"]) == (1, 1)
    assert states[0]["action"] == "archive"
    assert states[0]["seqs"] == [second["seq"]]
    assert (stream.unread, stream.unseen) == (0, 0)
    assert first["seq"] not in [item["seq"] for item in listed["items"]]

"""Retraction at every stage of a 10,000-follower topic fan-out, with a ``kill -9`` of the server (its embedded
worker) in the middle, then a restart on the same data.

Retracted: one event before its fan-out could finish (cancelled at once), one while the server is down and
restarting (cancelled right after the restart, while its fan-out is read again), one long after delivery.
The ledger: no retracted event survives in any of the 10,000 inboxes, no user's counters differ from a COUNT
of their rows, no resumed stream shows one, and no live client keeps showing one; every other event reached
every inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from .clients import WsClient
from .harness import ServerProcess, http_client, wait_until

# In the default suite: the one ledger of retraction across a crash (13 s on a quiet machine, about a minute
# on a loaded one).
pytestmark = [pytest.mark.e2e, pytest.mark.serial, pytest.mark.timeout(240)]

FOLLOWERS = 10_000
WATCHED = 4  # followers with a live WebSocket connection through the whole run


class RetractAwareWs(WsClient):
    """A WebSocket client that also applies ``retract`` frames, as an SDK does: what it shows is what it
    received minus what was retracted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retracted: set[int] = set()

    async def _read_one(self, ws: ClientConnection) -> bool:
        await self.reading.wait()
        raw = await ws.recv()
        frame = json.loads(raw)
        if frame.get("type") == "retract":
            self.retracted.update(frame["seqs"])
            return True
        return await self._dispatch(ws, frame)

    async def _dispatch(self, ws: ClientConnection, frame: dict[str, Any]) -> bool:
        kind = frame.get("type")
        if kind == "notification":
            self._accept(frame["notification"])
        elif kind == "ready":
            self._on_ready(frame)
        elif kind == "ping":
            await ws.send(json.dumps({"type": "pong"}))
        return True

    def showing(self) -> set[str]:
        """The event ids of the notifications this client shows now."""
        return {n["event_id"] for n in self.received if n["seq"] not in self.retracted}


def _db(server: ServerProcess) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{server.data_dir / 'tidings.db'}?mode=ro", uri=True, timeout=30)


def _rows_of(server: ServerProcess, event_id: str) -> int:
    with contextlib.closing(_db(server)) as db:
        query = "SELECT count(*) FROM inbox WHERE event_id = ? AND removed_at IS NULL"
        count: int = db.execute(query, (event_id,)).fetchone()[0]
        return count


def _counter_mismatches(server: ServerProcess) -> list[Any]:
    """Users whose counters differ from a COUNT of their shown notifications."""
    query = """
        SELECT s.user_id, s.unread, s.unseen, coalesce(c.unread, 0), coalesce(c.unseen, 0)
        FROM user_seqs AS s LEFT JOIN (
            SELECT app, user_id, sum(read_at IS NULL AND archived_at IS NULL) AS unread,
                   sum(seen_at IS NULL AND archived_at IS NULL) AS unseen
            FROM inbox WHERE replaced_by IS NULL AND removed_at IS NULL AND kind = 'notification'
            GROUP BY app, user_id
        ) AS c ON c.app = s.app AND c.user_id = s.user_id
        WHERE s.unread != coalesce(c.unread, 0) OR s.unseen != coalesce(c.unseen, 0)
    """
    with contextlib.closing(_db(server)) as db:
        return db.execute(query).fetchall()


async def test_retraction_at_every_stage_of_a_fan_out_with_a_kill_9(server: ServerProcess) -> None:
    app = await server.create_app("acme")
    followers = [f"f{n:05d}" for n in range(FOLLOWERS)]
    async with http_client(server.base_url, token=app.api_key) as producer:
        subscribed = await producer.put("/v1/topics/bob/subscribers", json=followers)
        assert subscribed.status_code == 200, subscribed.text
    clients = [
        RetractAwareWs(server.ws_url, user, app.token(user), seed=n)
        for n, user in enumerate(followers[:WATCHED])
    ]
    for client in clients:
        client.start()
    assert await wait_until(lambda: all(c.ready for c in clients), 10)

    async def send(key: str | None) -> str:
        body: dict[str, Any] = {"type": "post.created", "topic": "bob", "actor": {"id": "bob"}}
        if key is not None:
            body["cancel_key"] = key
        async with http_client(server.base_url, token=app.api_key) as http:
            answer = await http.post("/v1/events", json=body)
            assert answer.status_code == 202, answer.text
            return str(answer.json()["id"])

    async def cancel(*keys: str) -> None:
        # Retracting 10,000 inboxes takes seconds on a loaded CI machine: a patient client.
        async with http_client(server.base_url, token=app.api_key, timeout=120) as http:
            answer = await http.post("/v1/events/cancel", json={"cancel_keys": list(keys)})
            assert answer.status_code == 202, answer.text

    kept = [await send(None)]
    early, during, late = await send("early"), await send("during"), await send("late")
    kept.append(await send(None))
    await cancel("early")  # the fan-out of "early" has not finished (it is behind the first event)
    # kill -9 mid fan-out: once the first event reached some inboxes, polled (its 10,000 rows take ten chunk
    # commits), not after a fixed 0.3 s that a fast machine outruns or a slow one does not reach.
    assert await wait_until(lambda: _rows_of(server, kept[0]) > 0, 60.0, interval=0.01)
    await server.kill()
    await server.restart()
    await cancel("during")  # the restarted worker reads the unacked fan-out again
    fanned_out = await asyncio.to_thread(
        lambda: wait_for_rows(server, [kept[-1], late], FOLLOWERS, within=120)
    )
    assert fanned_out, "the fan-out did not finish after the restart"
    await cancel("late")  # long after delivery
    retracted = {early, during, late}
    assert await wait_until(lambda: all(not (c.showing() & retracted) for c in clients), 20), [
        sorted(c.showing() & retracted) for c in clients
    ]
    assert await wait_until(lambda: all(set(kept) <= c.showing() for c in clients), 20)
    for event_id in retracted:
        assert _rows_of(server, event_id) == 0, f"{event_id} survives in some inbox"
    for event_id in kept:
        assert _rows_of(server, event_id) == FOLLOWERS
    assert _counter_mismatches(server) == []
    # A resumed stream, from the very start, shows every kept event and no retracted one.
    fresh = RetractAwareWs(server.ws_url, followers[-1], app.token(followers[-1]))
    fresh.start()
    assert await wait_until(lambda: set(kept) <= fresh.showing(), 20)
    assert not fresh.showing() & retracted
    for client in [*clients, fresh]:
        await client.stop()
        assert not client.violations, client.violations


def wait_for_rows(server: ServerProcess, event_ids: list[str], rows: int, within: float) -> bool:
    """Polls the database file (read-only, beside the running server) until each event reached ``rows``
    inboxes or was removed from them; bounded by ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.closing(_db(server)) as db:
            done = all(
                db.execute("SELECT count(*) FROM inbox WHERE event_id = ?", (e,)).fetchone()[0] >= rows
                for e in event_ids
            )
        if done:
            return True
        time.sleep(0.2)
    return False

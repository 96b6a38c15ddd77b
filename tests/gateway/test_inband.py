"""What an authenticated WebSocket client may still do (``gateway.inband``), through the one serve loop over a
recording transport, on a fake clock: the token's lifetime, in-band re-auth, the flood budget."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidings.api import errors
from tidings.auth import create_app_record, mint_user_token
from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import App
from tidings.gateway import admission, serve
from tidings.gateway.hub import Hub
from tidings.gateway.inband import InBand
from tidings.gateway.stream import EndReason, LiveStream
from tidings.runtime import Runtime
from tidings.settings import Settings
from tidings.testing import FakeClock

from .test_serve import Recorder, _NoLog, _notify

GRACE = 30.0


class Gateway:
    """A runtime on a fake clock with two apps, and the pieces of one WebSocket connection at a time."""

    def __init__(self, runtime: Runtime, clock: FakeClock, apps: dict[str, App]) -> None:
        self.runtime, self.clock, self.apps = runtime, clock, apps

    def token(self, user: str, ttl: float = 60.0, app: str = "a") -> str:
        return mint_user_token(self.apps[app], user, ttl, self.clock.time())

    async def connect(self, token: str) -> tuple[InBand, LiveStream, Recorder, asyncio.Task[None]]:
        auth = orjson.dumps({"type": "auth", "token": token})
        app, user, after, expires_at = await admission.admit(self.runtime, auth, None, "")
        stream = LiveStream(self.runtime, app.name, user, transport="ws", record=app)
        inband = InBand(self.runtime, stream, expires_at)
        transport = Recorder()
        task = asyncio.create_task(
            serve.serve(self.runtime, stream, after, serve.websocket_ready, transport, inband)
        )
        await transport.until(lambda: len(transport.sent) >= 1)  # ready
        return inband, stream, transport, task


@pytest.fixture
async def gateway(tmp_path: Path) -> Any:
    clock = FakeClock()
    s = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL", heartbeat_interval=0.02).replace(
        token_grace=GRACE, ws_client_rate=5.0, ws_client_burst=10.0, token_check_interval=0.02
    )
    store = await SqliteStore.open(s.store_url, s)
    runtime = Runtime(settings=s, store=store, log=_NoLog(), bus=MemoryBus(), clock=clock)  # type: ignore[arg-type]
    runtime.hub = Hub(runtime.bus)
    apps = {}
    for name in ("a", "b"):
        await create_app_record(store, name, [], clock.time())
        record = await store.apps.get(name)
        assert record is not None
        apps[name] = record
    yield Gateway(runtime, clock, apps)
    await store.close()


def _types(transport: Recorder) -> list[str]:
    return [orjson.loads(frame)["type"] for batch in transport.sent for frame in batch]


def _frames(transport: Recorder, kind: str) -> list[dict[str, Any]]:
    objs = [orjson.loads(frame) for batch in transport.sent for frame in batch]
    return [obj for obj in objs if obj["type"] == kind]


async def test_expiry_is_told_then_the_connection_closes_1008_after_the_grace(gateway: Gateway) -> None:
    _, stream, transport, task = await gateway.connect(gateway.token("alice", ttl=60))
    gateway.clock.advance(59)
    await asyncio.sleep(0.1)
    assert "token_expired" not in _types(transport)
    gateway.clock.advance(1)
    await transport.until(lambda: "token_expired" in _types(transport))
    assert _frames(transport, "token_expired") == [{"type": "token_expired", "grace": GRACE}]
    gateway.clock.advance(GRACE - 1)
    await asyncio.sleep(0.1)
    assert not task.done()  # within the grace, still served
    gateway.clock.advance(1)
    await asyncio.wait_for(task, 5)
    [refused] = transport.closed
    assert refused is not None
    assert (refused.code, refused.close_code) == ("token_expired", errors.WS_POLICY)
    assert stream.end_reason is EndReason.TOKEN_EXPIRED


async def test_a_fresh_token_in_band_keeps_the_connection_and_its_stream(gateway: Gateway) -> None:
    """Re-auth within the grace: reauthed with the new expiry, nothing resent, still delivering past the old
    deadline; the new token is warned about at its own expiry."""
    await _notify(gateway.runtime, 2)  # seqs 1, 2 before the connection: not resent
    inband, _, transport, task = await gateway.connect(gateway.token("alice", ttl=60))
    gateway.clock.advance(60)
    await transport.until(lambda: "token_expired" in _types(transport))
    fresh = gateway.token("alice", ttl=600)
    assert inband.receive(orjson.dumps({"type": "auth", "token": fresh})) is None
    await transport.until(lambda: "reauthed" in _types(transport))
    assert _frames(transport, "reauthed") == [{"type": "reauthed", "expires_at": gateway.clock.time() + 600}]
    gateway.clock.advance(GRACE + 10)
    await _notify(gateway.runtime, 1, start=2)
    await transport.until(lambda: transport.seqs() == [3])
    assert not task.done()
    gateway.clock.advance(600 - GRACE - 10)
    await transport.until(lambda: len(_frames(transport, "token_expired")) == 2)
    gateway.clock.advance(GRACE)
    await asyncio.wait_for(task, 5)
    assert [r.code if r else None for r in transport.closed] == ["token_expired"]


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("other-user", "user_mismatch"),
        ("other-app", "user_mismatch"),
        ("bad", "unauthorized"),
        ("expired", "token_expired"),
    ],
)
async def test_a_refused_re_auth_closes_1008(gateway: Gateway, case: str, code: str) -> None:
    inband, _, transport, task = await gateway.connect(gateway.token("alice"))
    token = {
        "other-user": gateway.token("mallory"),
        "other-app": gateway.token("alice", app="b"),
        "bad": gateway.token("alice")[:-4] + "AAAA",
        "expired": gateway.token("alice", ttl=-1),
    }[case]
    assert inband.receive(orjson.dumps({"type": "auth", "token": token})) is None
    await asyncio.wait_for(task, 5)
    [refused] = transport.closed
    assert refused is not None
    assert (refused.code, refused.close_code) == (code, errors.WS_POLICY)
    assert "reauthed" not in _types(transport)


async def test_a_flooding_client_is_closed_1008_and_another_client_gets_everything(gateway: Gateway) -> None:
    """One client pings in a loop, one only reads: the flooder is closed (rate_limited, 1008) after its burst,
    the reader receives every notification."""
    flooder, _, flooded, flood_task = await gateway.connect(gateway.token("mallory"))
    _, _, reader, reader_task = await gateway.connect(gateway.token("alice"))
    sent = 0
    for i in range(100):  # bounded: far more than the burst of 10 with no time passing
        if flood_task.done():
            break
        assert flooder.receive(b'{"type":"ping"}') is None
        sent += 1
        if i % 5 == 0:
            await _notify(gateway.runtime, 1, start=i)
        await asyncio.sleep(0)
    await asyncio.wait_for(flood_task, 5)
    [refused] = flooded.closed
    assert refused is not None
    assert (refused.code, refused.close_code) == ("rate_limited", errors.WS_POLICY)
    assert 10 < sent < 100
    assert len(_frames(flooded, "pong")) <= 10  # the burst, answered; nothing after it
    await _notify(gateway.runtime, 5, start=1000)
    total = len(range(0, sent, 5)) + 5
    await reader.until(lambda: reader.seqs() == list(range(1, total + 1)))
    assert not reader_task.done()
    reader_task.cancel()


async def test_a_client_within_its_rate_is_never_limited(gateway: Gateway) -> None:
    """Five pings a second for a minute (the sustained rate) never close the connection."""
    inband, stream, transport, task = await gateway.connect(gateway.token("alice", ttl=3600))
    for _ in range(300):
        assert inband.receive(b'{"type":"ping"}') is None
        gateway.clock.advance(0.2)
    await transport.until(lambda: len(_frames(transport, "pong")) == 300)
    assert stream.end_reason is None
    assert not task.done()
    task.cancel()


async def test_a_malformed_frame_is_refused_by_the_shell_as_before(gateway: Gateway) -> None:
    inband, _, _, task = await gateway.connect(gateway.token("alice"))
    refused = inband.receive(b'{"type":"subscribe"}')
    assert refused is not None
    assert (refused.code, refused.close_code) == ("invalid_frame", errors.WS_INVALID_FRAME)
    task.cancel()

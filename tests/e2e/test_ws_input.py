"""Bad WebSocket input over a real socket: each is refused with the documented error frame and close code,
and afterwards the server is healthy and nothing was written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import pytest

from .clients import auth_frame, open_ws, ws_ready, ws_until_close
from .conftest import module_server
from .harness import AppCredentials, ServerProcess, http_client
from .ledger import fetch_inbox

pytestmark = pytest.mark.e2e

AUTH_TIMEOUT = 1.0
MAX_FRAME = 4096
INVALID, POLICY, TOO_BIG = 1007, 1008, 1009


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, AppCredentials]]:
    """One server with a 4 KiB frame limit (and the default auth timeout), and one app."""
    with module_server(tmp_path_factory, {"max_frame_bytes": MAX_FRAME}) as server:
        yield server, asyncio.run(server.create_app("input"))


@pytest.fixture
def served_timing_out(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, AppCredentials]]:
    """A server with a 1 s auth timeout, for the test of that timeout only: beside other workers, a stall of
    the server's loop past 1 s between a connect and its auth frame would close any other test's connection."""
    with module_server(tmp_path_factory, {"auth_timeout": AUTH_TIMEOUT}) as server:
        yield server, asyncio.run(server.create_app("input"))


async def _assert_healthy(server: ServerProcess, creds: AppCredentials, user: str) -> None:
    """Ready, still serving WebSockets, and the user's inbox untouched (nothing written)."""
    async with http_client(server.base_url) as http:
        assert (await http.get("/readyz")).status_code == 200
    ready = await ws_ready(server.ws_url, creds.token(user))
    assert ready == {"type": "ready", "user": user, "last_seq": 0, "epoch": ready.get("epoch")}, ready
    assert isinstance(ready["epoch"], str), ready
    assert ready["epoch"], ready
    assert await fetch_inbox(server.base_url, creds.token(user)) == []


@pytest.mark.serial  # the close must come within 2 s of the auth timeout
async def test_no_auth_frame_in_time_closes_1008(
    served_timing_out: tuple[ServerProcess, AppCredentials],
) -> None:
    """A connection that never authenticates is closed 1008 once the auth timeout passes, not before."""
    server, creds = served_timing_out
    started = time.monotonic()
    frames, code = await ws_until_close(server.ws_url, within=AUTH_TIMEOUT + 4)
    elapsed = time.monotonic() - started
    assert code == POLICY, f"close code {code}, frames {frames}"
    assert [(f.get("type"), f.get("code")) for f in frames] == [("error", "auth_timeout")], frames
    assert AUTH_TIMEOUT * 0.9 <= elapsed <= AUTH_TIMEOUT + 2, f"closed after {elapsed:.2f} s"
    await _assert_healthy(server, creds, "timeout-user")


# (case, frame, close code, error code or None where the protocol layer closes without one)
BEFORE_AUTH: list[tuple[str, str | bytes, int, str | None]] = [
    ("too-big-text", "x" * (MAX_FRAME * 2), TOO_BIG, None),
    ("too-big-binary", b"x" * (MAX_FRAME * 2), TOO_BIG, None),
    ("invalid-json", "{not json", INVALID, "invalid_frame"),
    ("non-utf8-binary", b"\xff\xfe\xfd{}", INVALID, "invalid_frame"),
    ("unknown-type", '{"type": "subscribe", "topic": "x"}', INVALID, "invalid_frame"),
    ("not-an-object", "[1, 2, 3]", INVALID, "invalid_frame"),
    ("auth-without-token", '{"type": "auth"}', INVALID, "invalid_frame"),
    ("after-not-a-number", '{"type": "auth", "token": "t", "after": "ten"}', INVALID, "invalid_frame"),
    ("ping-before-auth", '{"type": "ping"}', POLICY, "auth_required"),
]


@pytest.mark.parametrize(("case", "frame", "close", "error"), BEFORE_AUTH, ids=[c[0] for c in BEFORE_AUTH])
async def test_bad_first_frame_is_refused(
    served: tuple[ServerProcess, AppCredentials], case: str, frame: str | bytes, close: int, error: str | None
) -> None:
    """A bad first frame gets the documented close code (and error frame), and harms nothing else."""
    server, creds = served
    frames, code = await ws_until_close(server.ws_url, frame)
    assert code == close, f"{case}: close code {code}, frames {frames}"
    assert [f.get("code") for f in frames] == ([error] if error else []), f"{case}: frames {frames}"
    await _assert_healthy(server, creds, f"u-{case}")


AFTER_AUTH: list[tuple[str, str | bytes, int, str | None]] = [
    ("too-big-text", "x" * (MAX_FRAME * 2), TOO_BIG, None),
    ("invalid-json", "{not json", INVALID, "invalid_frame"),
    ("non-utf8-binary", b"\xff\xfe\xfd{}", INVALID, "invalid_frame"),
    ("unknown-type", '{"type": "publish", "data": {}}', INVALID, "invalid_frame"),
    # A second auth frame is an in-band re-auth (docs/protocol.md): one for another user is refused.
    ("second-auth-other-user", "AUTH_OTHER", POLICY, "user_mismatch"),
]


@pytest.mark.parametrize(("case", "frame", "close", "error"), AFTER_AUTH, ids=[c[0] for c in AFTER_AUTH])
async def test_bad_frame_after_auth_is_refused(
    served: tuple[ServerProcess, AppCredentials], case: str, frame: str | bytes, close: int, error: str | None
) -> None:
    """An authenticated client that sends a bad frame gets the documented close; the server stays healthy."""
    server, creds = served
    user = f"a-{case}"
    token = creds.token(user)
    frames, code = await ws_until_close(
        server.ws_url,
        auth_frame(creds.token(user + "-other")) if frame == "AUTH_OTHER" else frame,
        token=token,
    )
    assert code == close, f"{case}: close code {code}, frames {frames}"
    assert [f.get("type") for f in frames][:1] == ["ready"], f"{case}: frames {frames}"
    assert [f.get("code") for f in frames[1:]] == ([error] if error else []), f"{case}: frames {frames}"
    await _assert_healthy(server, creds, user)


async def test_ping_frame_is_answered_with_pong(served: tuple[ServerProcess, AppCredentials]) -> None:
    """An authenticated client's ping frame gets a pong, and the connection stays open."""
    server, creds = served
    async with open_ws(server.ws_url) as ws:
        await ws.send(auth_frame(creds.token("pinger")))
        # Bounds on a hang, not measurements: the answers may be slow on a loaded machine.
        async with asyncio.timeout(10.0):
            ready = json.loads(await ws.recv())
        await ws.send('{"type": "ping"}')
        async with asyncio.timeout(10.0):
            pong = json.loads(await ws.recv())
        with contextlib.suppress(TimeoutError):  # still open a second later: nothing more, no close
            async with asyncio.timeout(1.0):
                late = json.loads(await ws.recv())
                raise AssertionError(f"after the pong: {late}")
        assert ws.close_code is None, f"closed with {ws.close_code}"
    assert [ready.get("type"), pong.get("type")] == ["ready", "pong"], (ready, pong)

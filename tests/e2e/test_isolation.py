"""Isolation and authentication over the wire: apps and users never see each other's notifications, and every
kind of bad credential is refused the way the contract says (WS: error frame, close 1008; SSE: 401 JSON)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import jwt
import pytest

from .clients import SseClient, StreamClient, WsClient, auth_frame, stream_ticket, ws_ready, ws_until_close
from .conftest import module_server
from .harness import AppCredentials, ServerProcess, http_client, unsigned_token, wait_until
from .ledger import fetch_inbox
from .producer import Producer

pytestmark = pytest.mark.e2e

ORIGIN = "https://a.example"
POLICY_VIOLATION = 1008


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, AppCredentials, AppCredentials]]:
    """One server with two apps: A (allows the browser origin ``ORIGIN``) and B."""
    with module_server(tmp_path_factory) as server:
        a = asyncio.run(server.create_app("app-a", origins=(ORIGIN,)))
        b = asyncio.run(server.create_app("app-b"))
        yield server, a, b


def _clients(server: ServerProcess, creds: AppCredentials, user: str) -> list[StreamClient]:
    token = creds.token(user)
    return [WsClient(server.ws_url, user, token), SseClient(server.base_url, user, token)]


async def test_a_user_receives_only_their_own_apps_and_own_notifications(
    served: tuple[ServerProcess, AppCredentials, AppCredentials],
) -> None:
    """Alice of app A sees her own notifications, never bob's nor anything of app B's alice or bob."""
    server, a, b = served
    creds = {a.app: a, b.app: b}
    streams = {(app, user): _clients(server, creds[app], user) for app in creds for user in ("alice", "bob")}
    producers = {app: Producer(app, server.base_url, creds[app].api_key) for app in creds}

    def sent_to(app: str, user: str) -> list[str]:
        return [x.event_id for x in producers[app].accepted if user in x.recipients]

    async def delivered() -> None:
        """Until every client has as many notifications as were sent to its user (a leak fails the check)."""
        assert await wait_until(
            lambda: all(len(c.received) >= len(sent_to(*key)) for key, cs in streams.items() for c in cs),
            15.0,
        ), f"not delivered: {[(c, len(c.received)) for cs in streams.values() for c in cs]}"

    everyone = [client for clients in streams.values() for client in clients]
    for client in everyone:
        client.start()
    pa, pb = producers[a.app], producers[b.app]
    try:
        assert await wait_until(lambda: all(c.ready for c in everyone), 10.0), "a client never got ready"
        # Everyone but A's alice first, delivered; then hers; then a last one to each of the four.
        for producer, recipients in ((pb, ["alice"]), (pb, ["bob"]), (pb, ["alice", "bob"]), (pa, ["bob"])):
            await producer.send(recipients)
        await delivered()
        hers = await pa.send(["alice"])
        for producer in (pa, pb):
            await producer.send(["alice", "bob"])
        await delivered()
    finally:
        await asyncio.gather(*(client.stop() for client in everyone), pa.aclose(), pb.aclose())
    assert sent_to(a.app, "alice") == [hers.event_id, pa.accepted[-1].event_id]
    for (app, user), clients in streams.items():
        want = sent_to(app, user)
        for client in clients:
            got = [n["event_id"] for n in client.received]
            assert got == want, f"{app}/{user} over {client!r}: got {got}, want {want}"
            assert not client.violations, client.violations
        inbox = await fetch_inbox(server.base_url, creds[app].token(user))
        assert [n["event_id"] for n in inbox] == want, f"{app}/{user}: the inbox differs"


def _bad_tokens(a: AppCredentials, b: AppCredentials) -> dict[str, str]:
    """Tokens that must all be refused, each one rule of the contract."""
    now = int(time.time())
    claims = {"iss": a.app, "sub": "alice", "aud": "tidings"}
    return {
        "garbage": "not-a-jwt",
        "wrong-secret": jwt.encode(
            {**claims, "exp": now + 3600}, "not-the-secret-of-app-a-0123456789", "HS256"
        ),
        "expired": a.token("alice", ttl=-60),
        "alg-none": unsigned_token(a.app, "alice"),
        "other-app": jwt.encode({**claims, "exp": now + 3600}, b.jwt_secret, "HS256"),
        "no-exp": jwt.encode(claims, a.jwt_secret, "HS256"),
        "wrong-aud": a.token("alice", aud="someone-else"),
        "hs512": jwt.encode({**claims, "exp": now + 3600}, a.jwt_secret, "HS512"),
        "unknown-app": jwt.encode({**claims, "iss": "no-such-app", "exp": now + 3600}, a.jwt_secret, "HS256"),
    }


BAD_TOKENS = [
    "garbage",
    "wrong-secret",
    "expired",
    "alg-none",
    "other-app",
    "no-exp",
    "wrong-aud",
    "hs512",
    "unknown-app",
]


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_ws_refuses_a_bad_token_with_an_error_frame_and_1008(
    served: tuple[ServerProcess, AppCredentials, AppCredentials], kind: str
) -> None:
    """A WebSocket authenticated with a bad token gets an error frame and is closed 1008, never ``ready``."""
    server, a, b = served
    frames, code = await ws_until_close(server.ws_url, auth_frame(_bad_tokens(a, b)[kind]))
    assert code == POLICY_VIOLATION, f"close code {code}, frames {frames}"
    assert [f.get("type") for f in frames] == ["error"], frames
    # Expired is told apart (refresh and reconnect); every other refusal says no more than "unauthorized".
    assert frames[0].get("code") == ("token_expired" if kind == "expired" else "unauthorized"), frames


@pytest.mark.parametrize("kind", [*BAD_TOKENS, "missing"])
async def test_sse_refuses_a_bad_token_with_401_json_before_any_stream(
    served: tuple[ServerProcess, AppCredentials, AppCredentials], kind: str
) -> None:
    """An SSE request with bad or missing credentials is answered 401 with a JSON error, not a stream."""
    server, a, b = served
    token = None if kind == "missing" else _bad_tokens(a, b)[kind]
    async with http_client(server.base_url, token=token) as http:
        response = await http.get("/v1/stream", params={"after": 0})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.json()["error"]["code"], response.text


async def test_a_stream_ticket_works_once(
    served: tuple[ServerProcess, AppCredentials, AppCredentials],
) -> None:
    """A browser's stream ticket opens one SSE stream; the same ticket a second time is refused with 401."""
    server, a, _ = served
    issued = await stream_ticket(server.base_url, a.token("alice"))
    assert issued.is_success, issued.text
    ticket = issued.json()["ticket"]
    async with http_client(server.base_url) as http:
        async with http.stream("GET", "/v1/stream", params={"ticket": ticket}) as first:
            assert first.status_code == 200
            assert first.headers["content-type"].startswith("text/event-stream")
            lines = first.aiter_lines()
            assert await asyncio.wait_for(_first_event(lines), 5.0) == "ready"
        second = await http.get("/v1/stream", params={"ticket": ticket})
    assert second.status_code == 401, second.text


async def _first_event(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("event:"):
            return str(line.partition(":")[2].strip())
    return ""


async def test_ws_refuses_a_disallowed_origin(
    served: tuple[ServerProcess, AppCredentials, AppCredentials],
) -> None:
    """A page from a site the app does not allow cannot open a WebSocket with a user's token (1008)."""
    server, a, _ = served
    frames, code = await ws_until_close(
        server.ws_url, auth_frame(a.token("alice")), origin="https://evil.example"
    )
    assert code == POLICY_VIOLATION, f"close code {code}, frames {frames}"
    assert "ready" not in [f.get("type") for f in frames], frames


@pytest.mark.parametrize("origin", [ORIGIN, None], ids=["allowed-origin", "no-origin"])
async def test_ws_accepts_an_allowed_origin_or_none(
    served: tuple[ServerProcess, AppCredentials, AppCredentials], origin: str | None
) -> None:
    """The app's own site, and a non-browser client that sends no Origin, both get ``ready``."""
    server, a, _ = served
    ready = await ws_ready(server.ws_url, a.token("carol"), origin=origin)
    assert ready.get("type") == "ready", ready
    assert ready.get("user") == "carol", ready

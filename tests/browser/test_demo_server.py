"""The demo's HTTP side, without a browser: off by default, its endpoints, and the SDK file it serves."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from client.server import TidingsServer


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TidingsServer]:
    """A server without --demo."""
    running = TidingsServer(tmp_path_factory.mktemp("no-demo") / "data").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def http(demo_server: TidingsServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo_server.base_url, trust_env=False, timeout=10.0) as client:
        yield client


def test_without_demo_mode_the_page_says_how_to_turn_it_on(plain_server: TidingsServer) -> None:
    """/demo explains `tidings serve --demo`; every demo endpoint answers 404; the SDK is still served."""
    with httpx.Client(base_url=plain_server.base_url, trust_env=False) as client:
        page = client.get("/demo")
        people = client.get("/demo/api/people")
        session = client.post("/demo/api/session", json={"user": "alice"})
        sdk = client.get("/sdk/tidings.js")
    assert page.status_code == 200
    assert "tidings serve --demo" in page.text
    assert "TIDINGS_DEMO=1" in page.text
    assert (people.status_code, session.status_code) == (404, 404)
    assert session.json()["error"]["code"] == "not_found"
    assert sdk.status_code == 200
    assert "export class TidingsClient" in sdk.text


def test_the_sdk_is_served_as_javascript_and_revalidated(http: httpx.Client) -> None:
    """/sdk/tidings.js is a JS module any origin may import, with an ETag so browsers revalidate cheaply."""
    first = http.get("/sdk/tidings.js", headers={"Origin": "https://app.example"})
    assert first.headers["content-type"].startswith("text/javascript")
    assert first.headers["access-control-allow-origin"] == "*"  # module scripts from other origins load it
    again = http.get("/sdk/tidings.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_the_service_worker_and_push_module_are_served(http: httpx.Client) -> None:
    """/sdk/sw.js (a classic script, registered by subscribePush) may take a wider scope than /sdk/."""
    worker = http.get("/sdk/sw.js")
    assert worker.status_code == 200
    assert worker.headers["content-type"].startswith("text/javascript")
    assert worker.headers["service-worker-allowed"] == "/"
    assert 'addEventListener("push"' in worker.text
    push = http.get("/sdk/push.js")
    assert push.status_code == 200
    assert "export async function subscribe" in push.text


def test_the_page_loads_only_its_own_files(http: httpx.Client) -> None:
    """No CDN or external asset: a Content-Security-Policy of 'self', and no http(s) URL in the page."""
    page = http.get("/demo")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text
    assert "https://" not in page.text
    assert http.get("/demo/static/demo.js").status_code == 200


def test_a_session_token_works_on_the_user_api(http: httpx.Client) -> None:
    """The page's short-lived token is a real user token of app "demo"."""
    session = http.post("/demo/api/session", json={"user": "alice"}).json()
    assert (session["app"], session["user"], session["expires_in"]) == ("demo", "alice", 600)
    counts = http.get("/v1/me/unread-count", headers={"Authorization": f"Bearer {session['token']}"})
    assert counts.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"actor": "bob", "action": "like", "target": "bob"},
        {"actor": "bob", "action": "unlike", "target": "bob"},
        {"actor": "bob", "action": "like"},
        {"actor": "eve", "action": "like", "target": "alice"},
        {"actor": "bob", "action": "poke", "target": "alice"},
        {"actor": "bob", "action": "post", "text": "x" * 281},
    ],
)
def test_an_action_that_makes_no_sense_is_refused(http: httpx.Client, body: dict[str, str]) -> None:
    """Liking oneself, an unknown person or action, an overlong text: 422, nothing sent."""
    response = http.post("/demo/api/actions", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"


def test_unknown_people_get_no_token(http: httpx.Client) -> None:
    """Only the demo's own people can sign in."""
    assert http.post("/demo/api/session", json={"user": "root"}).status_code == 422


def test_a_demo_app_created_beforehand_is_used(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`tidings apps create demo` (as the README does) before the first demo use: the demo works with it."""
    server = TidingsServer(tmp_path_factory.mktemp("demo-existing") / "data", demo=True).start()
    try:
        keys = server.create_app("demo")
        with httpx.Client(base_url=server.base_url, trust_env=False, timeout=10.0) as client:
            assert (
                client.post(
                    "/demo/api/actions", json={"actor": "bob", "action": "follow", "target": "alice"}
                ).status_code
                == 202
            )
            sent = client.post("/demo/api/actions", json={"actor": "alice", "action": "post", "text": "hi"})
            followers = client.get(
                "/v1/topics/followers:alice/subscribers", headers={"Authorization": f"Bearer {keys.api_key}"}
            )
    finally:
        server.stop()
    assert sent.json()["to"] == "followers:alice"
    assert followers.json()["items"] == ["bob"]

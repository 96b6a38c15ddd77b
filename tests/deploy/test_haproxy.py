"""deploy/haproxy.cfg: read statically, checked by ``haproxy -c``, and run for real in front of local processes.

The live test starts the shipped config with only its addresses rewritten (compose service names and ports ->
loopback ports of processes this test starts), so the routing, health checks, WebSocket upgrade and drain
close that go through it are the ones a deployment gets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from e2e.harness import role_port

from . import live
from .support import HAPROXY_CFG, compose, env_file, haproxy_sections, served

LIVE_PATHS = {"/v1/ws", "/v1/stream"}


def test_backends_point_at_compose_services_on_the_tidings_port() -> None:
    """Each haproxy backend's servers are a compose service's replicas, on the port Tidings listens on."""
    services = compose()["services"]
    port = env_file()["TIDINGS_PORT"]
    for section, lines in haproxy_sections().items():
        if not section.startswith("backend "):
            continue
        servers = [words for words in lines if words[0] in ("server", "server-template")]
        assert servers, section
        for words in servers:
            host, _, server_port = words[-1].rpartition(":")
            assert host in services, (section, words)
            assert "build" in services[host], (section, words)
            assert server_port == port, (section, words)


async def test_health_checks_and_routes_use_paths_the_app_serves() -> None:
    """Backends are checked on /readyz (200 on both roles); live paths go to gateways, the rest to the API."""
    sections = haproxy_sections()
    checks = {s: w for s, lines in sections.items() for w in lines if w[:2] == ["http-check", "send"]}
    assert set(checks) == {"backend api", "backend gateways"}
    uris = [words[words.index("uri") + 1] for words in checks.values()]
    answers = await served([*uris, "/v1/events"])
    for words in checks.values():
        uri = words[words.index("uri") + 1]
        assert uri == "/readyz"
        assert all(answers[role].statuses[uri] == 200 for role in answers)
    (acl,) = [w for w in sections["frontend public"] if w[:2] == ["acl", "live_path"]]
    assert set(acl[3:]) == LIVE_PATHS
    assert ["use_backend", "gateways", "if", "live_path"] in sections["frontend public"]
    assert answers["gateway"].routes >= LIVE_PATHS
    assert not LIVE_PATHS & answers["api"].routes
    # Everything else goes to the API replicas, the only ones that serve the API.
    assert ["default_backend", "api"] in sections["frontend public"]
    assert answers["api"].statuses["/v1/events"] != 404
    assert answers["gateway"].statuses["/v1/events"] == 404


def test_live_connections_get_long_timeouts() -> None:
    """WebSocket tunnels may idle an hour, and SSE outlives several heartbeats; API requests do not."""
    sections = haproxy_sections()
    timeouts = {w[1]: w[2] for w in sections["backend gateways"] if w[0] == "timeout"}
    defaults = {w[1]: w[2] for w in sections["defaults"] if w[0] == "timeout"}
    heartbeat = 15.0  # Settings.heartbeat_interval
    assert _seconds(timeouts["tunnel"]) >= 3600
    assert _seconds(timeouts["server"]) > 4 * heartbeat
    assert _seconds(defaults["client"]) > 4 * heartbeat
    assert _seconds(defaults["server"]) < _seconds(timeouts["server"])


def test_haproxy_accepts_the_config() -> None:
    """`haproxy -c` finds the config valid (skipped without haproxy, unless TIDINGS_TEST_REQUIRE is set)."""
    live.require_haproxy()
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


async def test_routes_websocket_sse_and_api_through_the_shipped_config(tmp_path: Path) -> None:
    """Through haproxy: events go to the API, a WebSocket to a gateway gets them live, and a drain closes 1012."""
    live.require_haproxy()
    env = live.tidings_env(data=tmp_path / "data", drain_timeout=3)
    credentials = _create_app(env)
    taken: set[int] = set()
    api_port, gateway_port, public = role_port(taken), role_port(taken), role_port(taken)
    with live.processes(tmp_path) as running:
        api = running.start("api", live.tidings_command("api", api_port), env)
        # The embedded bus reaches only its own process, so the gateway here is `tidings serve` (it runs the
        # worker too); tests/deploy/test_topology.py runs the real role split on shared engines.
        gateway = running.start("gateway", live.tidings_command("serve", gateway_port), env)
        await live.ready(api_port, api)
        await live.ready(gateway_port, gateway)
        config = live.haproxy_config(tmp_path, {"api": [api_port], "gateway": [gateway_port]}, public)
        proxy = running.start("haproxy", ["haproxy", "-db", "-f", str(config)], env)
        async with live.client(f"http://127.0.0.1:{public}") as http:
            await live.poll(lambda: http.get("/readyz"), proxy)
            # Only a gateway serves /v1/stream (the API role answers 404): the request was routed to one.
            await live.poll(lambda: http.get("/v1/stream"), proxy, want=401)
            # Monitoring data is not public: haproxy answers /metrics itself (the gateway here, `tidings
            # serve`, does serve it on its port; the API role only on its metrics port).
            for path in ("/metrics", "/metrics/", "/metrics?x=1"):
                hidden = await http.get(path)
                assert hidden.status_code == 404, path
                assert "tidings_" not in hidden.text
            async with live.websocket(public, live.user_token(credentials, "alice")) as ws:
                sent = await http.post(
                    "/v1/events", json=live.event("alice"), headers=live.bearer(credentials["api_key"])
                )
                assert sent.status_code == 202, sent.text
                assert await live.notification_seqs(ws, 1) == [1]
                assert await live.metric(api_port, "tidings_events_accepted_total") == 1.0  # the API took it
                os.killpg(gateway.pid, signal.SIGTERM)
                last, code = await live.until_closed(ws)
                assert (last.get("code"), code) == ("draining", 1012)
            # With no gateway left, haproxy answers like a replica would: JSON error and Retry-After.
            await live.poll(lambda: http.get("/v1/stream"), gateway, want=503, exited=True)
            refused = await http.get("/v1/stream")
            assert refused.json()["error"]["code"] == "unavailable"
            assert int(refused.headers["retry-after"]) >= 1


def _create_app(env: dict[str, str]) -> dict[str, str]:
    command = [str(live.TIDINGS), "apps", "create", "acme"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    created: dict[str, str] = json.loads(result.stdout)
    return created


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 0.001}[unit]

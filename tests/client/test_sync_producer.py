"""SyncProducerClient (blocking code) against a real ``tidings serve``."""

from __future__ import annotations

import httpx
import pytest

from tidings.client import AuthFailedError, SyncProducerClient

from .server import AppKeys, TidingsServer
from .support import like


def inbox(server: TidingsServer, tenant: AppKeys, user: str) -> list[str]:
    headers = {"Authorization": f"Bearer {tenant.token(user)}"}
    with httpx.Client(base_url=server.base_url, headers=headers, trust_env=False) as http:
        items = http.get("/v1/me/notifications", params={"after": 0}).json()["items"]
    return [item["event_id"] for item in items]


def test_send_batch_and_topics_from_blocking_code(server: TidingsServer, tenant: AppKeys) -> None:
    """The same calls as the async client, with the same answers."""
    with SyncProducerClient(server.base_url, tenant.api_key, trust_env=False) as tidings:
        first = tidings.send(like("alice", 1), idempotency_key="sync-1")
        assert tidings.send(like("alice", 1), idempotency_key="sync-1") == first
        results = tidings.send_batch([like("alice", 2), like("alice", 3)])
        assert tidings.subscribe("followers:dave", "alice") is True
        assert list(tidings.subscribers("followers:dave")) == ["alice"]
        assert tidings.unsubscribe("followers:dave", "alice") is True
    assert [result["status"] for result in results] == ["accepted", "accepted"]
    assert all(isinstance(result["id"], str) for result in results)


def test_a_wrong_key_raises_at_once(server: TidingsServer) -> None:
    """401 is not retried by the blocking client either."""
    slept: list[float] = []
    tidings = SyncProducerClient(server.base_url, "tdk_nope", trust_env=False, sleep=slept.append)
    with tidings, pytest.raises(AuthFailedError):
        tidings.send(like("alice"))
    assert slept == []

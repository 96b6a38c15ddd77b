"""What API tests share: tenants made through the real code path, a valid event, the error-shape check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tidings.auth import create_app_record, mint_user_token
from tidings.core.models import App, Event, InboxWrite
from tidings.runtime import Runtime
from tidings.testing import FakeClock

ADMIN_TOKEN = "admin-token-for-tests"


@dataclass
class Tenant:
    """An app created through the real code path, with its one-time credentials."""

    app: App
    api_key: str
    jwt_secret: str

    @property
    def name(self) -> str:
        return self.app.name

    @property
    def producer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class Api:
    runtime: Runtime
    client: httpx.AsyncClient
    clock: FakeClock

    async def tenant(self, name: str = "acme", origins: list[str] | None = None) -> Tenant:
        record = await create_app_record(self.runtime.store, name, origins or [], self.clock.time())
        app = await self.runtime.store.apps.get(name)
        assert app is not None
        return Tenant(app, record["api_key"], record["jwt_secret"])

    def user(self, tenant: Tenant, user: str, ttl: float = 3600.0) -> dict[str, str]:
        token = mint_user_token(tenant.app, user, ttl, self.clock.time())
        return {"Authorization": f"Bearer {token}"}

    async def lag(self) -> int:
        return await self.runtime.log.lag()


def event(**fields: Any) -> dict[str, Any]:
    """A valid event body, with ``fields`` replacing or adding keys."""
    body: dict[str, Any] = {
        "type": "post.liked",
        "actor": {"id": "bob", "name": "Bob"},
        "recipients": ["alice"],
        "object": {"id": "post:42"},
        "data": {"text": "Bob liked your post"},
        "group_key": "post:42:like",
    }
    body.update(fields)
    return body


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The answer has ``status`` and the common error shape; returns the ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code, error
    return error


async def write_inbox(api: Api, app: str, user: str, count: int, *, prefix: str = "E") -> list[int]:
    """Commits ``count`` notifications to a user's inbox the way the worker does; returns their seqs."""
    now = api.clock.time()
    writes = [
        InboxWrite(
            app, user, Event(id=f"{prefix}{app}{user}{i}", app=app, type="post.liked", accepted_at=now)
        )
        for i in range(count)
    ]
    return [stored.seq for stored in await api.runtime.store.inbox.write(writes)]

"""Small tools the SDK tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tidings.client import UserClient

from .server import AppKeys


class Sleeps:
    """An injected ``sleep``: records each delay, runs ``on_sleep(n)`` (n = how many so far), waits ``real``."""

    def __init__(self, real: float = 0.0, on_sleep: Callable[[int], object] | None = None) -> None:
        self.delays: list[float] = []
        self._real = real
        self._on_sleep = on_sleep

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self._on_sleep is not None:
            result = self._on_sleep(len(self.delays))
            if isinstance(result, Awaitable):
                await result
        await asyncio.sleep(self._real)


def user_client(base_url: str, tenant: AppKeys, user: str, **options: Any) -> UserClient:
    return UserClient(base_url, tenant.token(user), trust_env=False, **options)


def like(recipient: str, n: int = 1) -> dict[str, Any]:
    """The event "bob liked your post" for ``recipient``; ``n`` tells them apart."""
    return {
        "type": "post.liked",
        "actor": {"id": "bob", "name": "Bob"},
        "recipients": [recipient],
        "object": {"id": f"post:{n}"},
        "data": {"text": f"like {n}"},
    }


async def inbox_seqs(user: UserClient, *, within: float = 5.0, expect: int) -> list[int]:
    """The user's seqs (oldest first) once the inbox holds ``expect`` of them (fan-out is asynchronous)."""
    deadline = time.monotonic() + within
    while True:  # bounded by the deadline
        items = (await user.notifications(after=0, limit=100))["items"]
        if len(items) >= expect or time.monotonic() > deadline:
            return [item["seq"] for item in items]
        await asyncio.sleep(0.02)

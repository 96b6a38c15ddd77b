"""ProducerClient against a server whose per-key rate limit is tiny: 429 with Retry-After is honoured."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tidings.client import ApiError, Backoff, ProducerClient

from .server import AppKeys, TidingsServer
from .support import Sleeps, like

RATE = 5.0  # events per second per key: a token comes back every 0.2 s


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TidingsServer]:
    running = TidingsServer(
        tmp_path_factory.mktemp("overload") / "data", env={"rate_per_key": RATE, "rate_burst": 1}
    ).start()
    try:
        yield running
    finally:
        running.stop()


async def test_429_waits_as_long_as_retry_after_says(server: TidingsServer, tenant: AppKeys) -> None:
    """Over the rate, the client sleeps the server's Retry-After (not its own shorter backoff), then succeeds."""
    sleeps = Sleeps(real=1.5 / RATE)  # the test waits just long enough for a token; the client asked for 1 s
    async with ProducerClient(
        server.base_url, tenant.api_key, trust_env=False, sleep=sleeps, random=lambda: 0.0
    ) as tidings:
        await tidings.send(like("alice", 1))
        await tidings.send(like("alice", 2))
    assert sleeps.delays == [1.0]


async def test_a_retry_after_longer_than_max_wait_is_raised(server: TidingsServer, tenant: AppKeys) -> None:
    """A caller that will not wait that long gets the 429 at once, with the server's hint on it."""
    sleeps = Sleeps()
    backoff = Backoff(max_wait=0.5)
    async with ProducerClient(
        server.base_url, tenant.api_key, trust_env=False, sleep=sleeps, backoff=backoff
    ) as tidings:
        await tidings.send(like("alice", 1))
        with pytest.raises(ApiError) as raised:
            await tidings.send(like("alice", 2))
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (429, "rate_limited", 1.0)
    assert sleeps.delays == []

"""The wired-up parts of one process, handed to the API routes, the gateway and the worker.

``hub`` is typed by what its users need (``LiveHub``), not by ``tidings.gateway.hub.Hub``: the runtime sits
below the gateway and must not import it. The service constructs the real hub with the runtime; a runtime
built without one (a worker-only process, a test of the API) carries ``NO_HUB``, which refuses live streams
and has nothing to drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tidings.core.clock import Clock, SystemClock
from tidings.observability.funnel import Funnel
from tidings.ports import Bus, EventLog, LiveHandler, Store
from tidings.settings import Settings

Detach = Callable[[], Awaitable[None]]

# The broker's lag is read at most this often per process, however often /metrics or the admin stats are
# scraped: a scrape must not turn into a broker query each time (issue 17). The worker samples it on its own.
LAG_INTERVAL = 1.0
LAG_TIMEOUT = 2.0


class EndableStream(Protocol):
    """A live stream the hub can ask to end (on drain), whatever its transport."""

    def end(self, reason: Any) -> None: ...


class LiveHub(Protocol):
    """The live side of a gateway process, as the gateway shells and the service's drain use it.

    - ``attach`` routes the user's live messages to ``listener`` from the moment it returns, until the
      returned ``Detach`` is awaited (one bus subscription per user, shared by their connections).
    - ``register``/``unregister`` track the open streams; ``drain`` asks every one of them to end with
      ``reason`` (graceful shutdown: clients resume elsewhere).
    """

    def register(self, stream: EndableStream) -> None: ...

    def unregister(self, stream: EndableStream) -> None: ...

    def drain(self, reason: Any) -> None: ...

    async def attach(self, app: str, user: str, listener: LiveHandler) -> Detach: ...


class NoHub:
    """The hub of a runtime that serves no live streams: opening one is a wiring error, draining is a no-op."""

    def register(self, stream: EndableStream) -> None:
        raise RuntimeError("this runtime has no live hub: construct it with hub=Hub(bus) to serve streams")

    def unregister(self, stream: EndableStream) -> None:
        return None

    def drain(self, reason: Any) -> None:
        return None

    async def attach(self, app: str, user: str, listener: LiveHandler) -> Detach:
        raise RuntimeError("this runtime has no live hub: construct it with hub=Hub(bus) to serve streams")


NO_HUB: LiveHub = NoHub()


@dataclass
class Runtime:
    settings: Settings
    store: Store
    log: EventLog
    bus: Bus
    clock: Clock = field(default_factory=SystemClock)
    draining: bool = False
    # tidings.gateway.hub.Hub when this process serves live streams (the service always constructs one).
    hub: LiveHub = field(default=NO_HUB, kw_only=True)
    # Every stage of the funnel is reported through this one observer (metrics, journal, spans), on this clock.
    funnel: Funnel = field(init=False)
    _lag_read_at: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.funnel = Funnel(self.clock)

    async def refresh_lag(self) -> None:
        """Reads the log's lag into the funnel unless it was read less than ``LAG_INTERVAL`` ago (on this
        runtime's clock). The time is taken before the read, so concurrent scrapes share one query and a
        failing log is asked again only after the interval; a failure is raised to the caller."""
        now = self.clock.monotonic()
        if self._lag_read_at is not None and now - self._lag_read_at < LAG_INTERVAL:
            return
        self._lag_read_at = now
        self.funnel.lag(await asyncio.wait_for(self.log.lag(), LAG_TIMEOUT))

"""The wired-up parts of one process, handed to the API routes, the gateway and the worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidings.core.clock import Clock, SystemClock
from tidings.ports import Bus, EventLog, Store
from tidings.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    store: Store
    log: EventLog
    bus: Bus
    clock: Clock = field(default_factory=SystemClock)
    draining: bool = False
    # Set by the service when the gateway runs in this process (tidings.gateway.hub.Hub).
    hub: Any = None

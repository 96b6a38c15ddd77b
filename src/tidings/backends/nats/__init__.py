"""The NATS broker (``nats://``, extra ``nats``): the event log on JetStream (``log.py``), the live bus on core
NATS subjects (``bus.py``), both over one ``Link`` each (``link.py``: URL, connection, reconnects)."""

from __future__ import annotations

from tidings.backends.nats.bus import NatsBus
from tidings.backends.nats.log import NatsEventLog

__all__ = ["NatsBus", "NatsEventLog"]

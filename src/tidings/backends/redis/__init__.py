"""The Redis broker (``redis://``, extra ``redis``): the event log on Redis Streams (``log.py``), the live bus
on pub/sub (``bus.py``), each with a client of its own (``client.py``: timeouts, retries, error translation)."""

from __future__ import annotations

from tidings.backends.redis.bus import RedisBus
from tidings.backends.redis.log import RedisEventLog

__all__ = ["RedisBus", "RedisEventLog"]

"""The Kafka broker (``kafka://``, extra ``kafka``): the event log on a partitioned topic per lane (``log.py``),
the live bus on one topic every gateway reads (``bus.py``); ``client.py`` holds the URL, topic creation and
error translation."""

from __future__ import annotations

from tidings.backends.kafka.bus import KafkaBus
from tidings.backends.kafka.log import KafkaEventLog

__all__ = ["KafkaBus", "KafkaEventLog"]

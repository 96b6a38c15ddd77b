"""The RabbitMQ broker (``amqp://``, extra ``rabbitmq``): the event log on quorum queues (``log.py``), the live
bus on a topic exchange (``bus.py``); ``connection.py`` holds the robust connection and the names both use."""

from __future__ import annotations

from tidings.backends.rabbitmq.bus import RabbitBus
from tidings.backends.rabbitmq.log import RabbitEventLog

__all__ = ["RabbitBus", "RabbitEventLog"]

"""Python SDK for Tidings: ``ProducerClient`` / ``SyncProducerClient`` for your backend, ``UserClient`` for one
user's inbox and live stream. Only httpx and websockets are needed (both are Tidings dependencies).
"""

from __future__ import annotations

from tidings.client.errors import (
    ApiError,
    AuthFailedError,
    ClientError,
    ConnectionFailedError,
    StreamProtocolError,
)
from tidings.client.producer import ProducerClient, SyncProducerClient, new_idempotency_key
from tidings.client.retry import Backoff
from tidings.client.user import NotificationStream, UserClient

__all__ = [
    "ApiError",
    "AuthFailedError",
    "Backoff",
    "ClientError",
    "ConnectionFailedError",
    "NotificationStream",
    "ProducerClient",
    "StreamProtocolError",
    "SyncProducerClient",
    "UserClient",
    "new_idempotency_key",
]

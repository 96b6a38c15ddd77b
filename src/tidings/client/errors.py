"""What the client SDK raises; every one is a ``tidings.errors.TidingsError``.

ClientError
├── ApiError                 the server answered with an error (``status``, ``code``, ``message``)
│   └── AuthFailedError      401/403, or a WebSocket closed with 1008: a new token or key is needed
├── ConnectionFailedError    no answer after every allowed attempt (refused, reset, timed out)
└── StreamProtocolError      the server closed a stream for a client bug (1007, 1009): retrying won't help
"""

from __future__ import annotations

from typing import Any

import httpx

from tidings.errors import TidingsError

# Statuses worth another attempt: over capacity, draining, or a proxy that lost the server.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ClientError(TidingsError):
    code = "client_error"


class ApiError(ClientError):
    """An error answer. ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later: overload, drain, or the same key still in flight."""
        if self.status == 409:
            return self.code == "idempotency_key_in_flight"
        return self.status in RETRY_STATUSES


class AuthFailedError(ApiError):
    """The credentials were refused (or the browser origin was): retrying with them cannot succeed."""


class ConnectionFailedError(ClientError):
    code = "connection_failed"


class StreamProtocolError(ClientError):
    code = "protocol_error"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header in delta-seconds form; None when absent or not a number.

    (Tidings always sends whole seconds; an HTTP-date from some proxy in between is treated as absent, so
    the client falls back to its own backoff.)
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds else None  # NaN != NaN


def error_from_response(status: int, body: Any, retry_after: str | None) -> ApiError:
    """The ``ApiError`` for an error answer with the common ``{"error": {"code", "message"}}`` body."""
    detail = body.get("error") if isinstance(body, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    code = str(detail.get("code") or f"http_{status}")
    message = str(detail.get("message") or "request failed")
    kind = AuthFailedError if status in (401, 403) else ApiError
    return kind(status, code, message, parse_retry_after(retry_after))


def api_error(response: httpx.Response) -> ApiError:
    """The ``ApiError`` for an httpx response that is not a success (its body already read)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_response(response.status_code, body, response.headers.get("retry-after"))

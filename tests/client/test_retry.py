"""The retry policy as pure functions: which failures are retried, and after how long."""

from __future__ import annotations

import httpx
import pytest

from tidings.client.errors import ApiError, AuthFailedError, error_from_response, parse_retry_after
from tidings.client.retry import Backoff, retry_delay

BACKOFF = Backoff(max_attempts=4, base=0.2, cap=1.0, max_wait=30.0)


def answer(status: int, code: str = "x", retry_after: str | None = None) -> ApiError:
    return error_from_response(status, {"error": {"code": code, "message": "m"}}, retry_after)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_overload_and_proxy_errors_are_retried_with_jitter(status: int) -> None:
    """Without a hint, the wait is full jitter: rand * min(cap, base * 2**attempt)."""
    assert retry_delay(BACKOFF, 0, answer(status), 0.5) == pytest.approx(0.1)
    assert retry_delay(BACKOFF, 2, answer(status), 0.5) == pytest.approx(0.4)
    assert retry_delay(BACKOFF, 2, answer(status), 0.999) < 0.8


def test_retry_after_is_honoured_never_sooner() -> None:
    """A Retry-After of 3 s waits 3 s plus at most `base` of spread."""
    assert retry_delay(BACKOFF, 0, answer(503, retry_after="3"), 0.0) == 3.0
    assert retry_delay(BACKOFF, 0, answer(503, retry_after="3"), 0.5) == pytest.approx(3.1)


def test_a_hint_beyond_max_wait_gives_up() -> None:
    """The caller is told (the error keeps retry_after) rather than blocked for minutes."""
    assert retry_delay(BACKOFF, 0, answer(429, retry_after="120"), 0.5) is None


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "malformed_body"),
        (404, "not_found"),
        (409, "app_exists"),
        (422, "validation_failed"),
        (500, "internal"),
    ],
)
def test_client_errors_are_not_retried(status: int, code: str) -> None:
    """Sending the same bad request again cannot help."""
    assert retry_delay(BACKOFF, 0, answer(status, code), 0.5) is None


def test_a_key_still_in_flight_is_retried() -> None:
    """409 idempotency_key_in_flight: the first attempt is still being appended; asking again is safe."""
    assert retry_delay(BACKOFF, 0, answer(409, "idempotency_key_in_flight"), 0.5) is not None


def test_connection_errors_are_retried_and_attempts_are_bounded() -> None:
    """Refused or reset connections are retried until max_attempts attempts in all."""
    refused = httpx.ConnectError("refused")
    assert [retry_delay(BACKOFF, attempt, refused, 0.5) is not None for attempt in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_auth_errors_are_their_own_kind() -> None:
    """401 and 403 raise AuthFailedError, which callers can catch to refresh credentials."""
    assert isinstance(answer(401), AuthFailedError)
    assert isinstance(answer(403), AuthFailedError)
    assert not isinstance(answer(429), AuthFailedError)


def test_an_error_body_that_is_not_ours_still_gives_an_error() -> None:
    """A proxy's HTML 502 page becomes ApiError(502, "http_502")."""
    error = error_from_response(502, None, None)
    assert (error.status, error.code, error.retryable) == (502, "http_502", True)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        (" 2 ", 2.0),
        ("0.5", 0.5),
        (None, None),
        ("soon", None),
        ("-1", None),
        ("nan", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
    ],
)
def test_retry_after_parsing(header: str | None, seconds: float | None) -> None:
    """Delta-seconds are read; anything else counts as no hint."""
    assert parse_retry_after(header) == seconds


def test_backoff_needs_one_attempt() -> None:
    """Zero attempts would never send anything."""
    with pytest.raises(ValueError, match="max_attempts"):
        Backoff(max_attempts=0)

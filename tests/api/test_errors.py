"""The one mapping of errors to HTTP statuses and WebSocket close codes, and the shared helpers around it."""

from __future__ import annotations

import pytest

from tidings.api.errors import (
    WS_DRAINING,
    WS_INTERNAL,
    WS_INVALID_FRAME,
    WS_POLICY,
    WS_TOO_BIG,
    WS_TRY_AGAIN,
    BodyTooLargeError,
    close_code_for,
    retry_after,
    status_for,
    tidings_error_response,
)
from tidings.auth import create_app_record
from tidings.errors import (
    AppExistsError,
    AuthError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    FrameError,
    IdempotencyInFlightError,
    IdempotencyMismatchError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    RateLimitedError,
    TidingsError,
    UnavailableError,
)

from .support import Api


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInputError(), 400),
        (FrameError(), 400),
        (BodyTooLargeError(), 413),
        (LimitExceededError(), 422),
        (AuthError(), 401),
        (ForbiddenError(), 403),
        (NotFoundError(), 404),
        (ConflictError(), 409),
        (AppExistsError(), 409),
        (IdempotencyInFlightError(), 409),
        (IdempotencyMismatchError(), 422),
        (RateLimitedError(), 429),
        (UnavailableError(), 503),
        (ConfigError(), 500),
        (TidingsError(), 500),
    ],
)
def test_each_error_has_its_status(error: TidingsError, status: int) -> None:
    """Every error class answers the status the contract documents."""
    assert status_for(error) == status


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (AuthError(), WS_POLICY),
        (ForbiddenError(), WS_POLICY),
        (LimitExceededError(), WS_TOO_BIG),
        (FrameError(), WS_INVALID_FRAME),
        (InvalidInputError(), WS_INVALID_FRAME),
        (RateLimitedError(), WS_TRY_AGAIN),
        (UnavailableError(), WS_DRAINING),
        (ConfigError(), WS_INTERNAL),
    ],
)
def test_each_error_has_its_close_code(error: TidingsError, code: int) -> None:
    """A WebSocket closes with the RFC 6455 code that fits the error."""
    assert close_code_for(error) == code
    assert (WS_POLICY, WS_TOO_BIG, WS_INVALID_FRAME, WS_INTERNAL, WS_DRAINING, WS_TRY_AGAIN) == (
        1008,
        1009,
        1007,
        1011,
        1012,
        1013,
    )


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (30.5, "31")]
)
def test_retry_after_is_whole_seconds_at_least_one(seconds: float, header: str) -> None:
    """Retry-After is rounded up so a client that obeys it is not refused again."""
    assert retry_after(seconds) == header
    assert tidings_error_response(RateLimitedError(retry_after=seconds)).headers["Retry-After"] == header


def test_an_unexpected_error_reveals_nothing() -> None:
    """A Tidings error that input cannot cause answers a generic 500."""
    response = tidings_error_response(ConfigError("database password is hunter2"))
    assert response.status_code == 500
    assert b"hunter2" not in bytes(response.body)


@pytest.mark.parametrize(
    ("name", "origins"),
    [("Bad", []), ("", []), ("ok", ["https://x.example/"]), ("ok", ["javascript:alert(1)"])],
)
async def test_create_app_record_refuses_bad_names_and_origins(
    api: Api, name: str, origins: list[str]
) -> None:
    """The CLI path validates like the HTTP path: nothing is created for a bad name or origin."""
    with pytest.raises(InvalidInputError):
        await create_app_record(api.runtime.store, name, origins, api.clock.time())
    assert await api.runtime.store.apps.get("ok") is None


async def test_create_app_record_returns_credentials_once(api: Api) -> None:
    """A new app's record carries its name and fresh secrets; a second create with that name conflicts."""
    record = await create_app_record(api.runtime.store, "fresh", ["HTTPS://Fresh.Example:8443"], 0.0)
    assert record["app"] == "fresh"
    assert record["api_key"].startswith("tdk_")
    assert len(record["jwt_secret"]) >= 32
    app = await api.runtime.store.apps.get("fresh")
    assert app is not None
    assert app.origins == ("https://fresh.example:8443",)
    with pytest.raises(AppExistsError):
        await create_app_record(api.runtime.store, "fresh", [], 0.0)

"""Every error Tidings raises on purpose derives from one root.

    TidingsError
    ├── InvalidInputError          bad input from the network: never a 5xx (api/errors.py maps it)
    │   ├── FrameError             a WebSocket frame that is not a valid client frame
    │   └── LimitExceededError     a size or count limit (body, frame, recipients)
    ├── AuthError                  missing or invalid credentials (401 / close 1008)
    │   └── ForbiddenError         valid credentials without the right (403)
    ├── NotFoundError              (404)
    ├── ConflictError              (409)
    │   ├── AppExistsError
    │   └── IdempotencyInFlightError
    ├── IdempotencyMismatchError   same Idempotency-Key, different body (422)
    ├── RateLimitedError           (429 with Retry-After)
    ├── UnavailableError           a backend is down or the service drains (503 with Retry-After)
    └── ConfigError                bad settings or a missing optional dependency
Statuses and close codes are chosen in one place only: ``tidings.api.errors``.
"""

from __future__ import annotations


class TidingsError(Exception):
    """Root of all Tidings errors. ``code`` is the stable, machine-readable name."""

    code = "error"

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details


class InvalidInputError(TidingsError):
    code = "invalid_input"


class FrameError(InvalidInputError):
    code = "invalid_frame"


class LimitExceededError(InvalidInputError):
    code = "limit_exceeded"


class AuthError(TidingsError):
    code = "unauthorized"


class ForbiddenError(AuthError):
    code = "forbidden"


class NotFoundError(TidingsError):
    code = "not_found"


class ConflictError(TidingsError):
    code = "conflict"


class AppExistsError(ConflictError):
    code = "app_exists"


class IdempotencyInFlightError(ConflictError):
    code = "idempotency_key_in_flight"


class IdempotencyMismatchError(TidingsError):
    code = "idempotency_key_reused"


class RateLimitedError(TidingsError):
    code = "rate_limited"

    def __init__(self, message: str = "", *, retry_after: float = 1.0) -> None:
        super().__init__(message or "rate limit exceeded", retry_after=retry_after)
        self.retry_after = retry_after


class UnavailableError(TidingsError):
    code = "unavailable"

    def __init__(self, message: str = "", *, retry_after: float = 1.0) -> None:
        super().__init__(message or "service unavailable", retry_after=retry_after)
        self.retry_after = retry_after


class ConfigError(TidingsError):
    code = "config_error"

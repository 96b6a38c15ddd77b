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
    """Refused credentials. ``code`` stays ``unauthorized`` (the WebSocket error frame's code); ``reason`` names
    the check that failed (one of ``AUTH_REASONS``, or the class's code), and is the ``code`` of the HTTP 401
    body, so a developer sees what to fix. Neither ever holds the credential."""

    code = "unauthorized"

    def __init__(self, message: str = "", *, reason: str = "", **details: object) -> None:
        super().__init__(message, **details)
        self.reason = reason or self.code


# Why a credential was refused (``AuthError.reason``): what the HTTP 401 body's ``code`` says, and what the
# gateway may put in its error frames. ``bad_signature`` also covers an ``iss`` that names no app, so app
# names cannot be probed; ``unknown_issuer`` is an ``iss`` that cannot be an app name at all.
TOKEN_EXPIRED = "token_expired"
TOKEN_NOT_YET_VALID = "token_not_yet_valid"
WRONG_AUDIENCE = "wrong_audience"
UNKNOWN_ISSUER = "unknown_issuer"
MISSING_CLAIM = "missing_claim"
INVALID_CLAIM = "invalid_claim"
BAD_SIGNATURE = "bad_signature"
ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
MALFORMED_TOKEN = "malformed_token"
WRONG_CREDENTIAL_KIND = (
    "wrong_credential_kind"  # an API key on a user route, or a user token on a producer one
)
AUTH_REASONS = frozenset(
    {
        TOKEN_EXPIRED,
        TOKEN_NOT_YET_VALID,
        WRONG_AUDIENCE,
        UNKNOWN_ISSUER,
        MISSING_CLAIM,
        INVALID_CLAIM,
        BAD_SIGNATURE,
        ALGORITHM_NOT_ALLOWED,
        MALFORMED_TOKEN,
        WRONG_CREDENTIAL_KIND,
    }
)


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


class RoleCrashedError(TidingsError):
    """A role's loop (worker, sender, sweeper) died of an error it does not handle: the process exits."""

    code = "role_crashed"

"""The one place that turns errors into HTTP statuses and WebSocket close codes.

Every error answer has the body ``{"error": {"code": "...", "message": "..."}}`` (validation errors add
``"details": [{"loc", "msg"}]``; input values are never echoed). The mapping:

    InvalidInputError          400  (an unparseable body: ``malformed_body``; a bad cursor or header value)
      BodyTooLargeError        413  the request body is over ``max_body_bytes``
      LimitExceededError       422  a count or size limit inside a well-formed body (recipients, batch items,
                                    ``data`` bytes): the body parsed, its content breaks the schema
    schema violations          422  ``validation_failed`` (pydantic; unknown fields included)
    AuthError                  401  with ``WWW-Authenticate: Bearer``; the code names the failed check
                                    (``token_expired``, ``bad_signature``...: ``tidings.errors.AUTH_REASONS``)
      ForbiddenError           403
    NotFoundError              404  (also unknown routes: ``not_found``; 405 ``method_not_allowed``)
    ConflictError              409  (``app_exists``, ``idempotency_key_in_flight``)
    IdempotencyMismatchError   422
    RateLimitedError           429  with ``Retry-After`` (whole seconds, at least 1)
    UnavailableError           503  with ``Retry-After``
    anything else              500  ``internal_error``, no detail; the exception is logged

WebSocket close codes follow RFC 6455: 1008 policy (auth failed or timed out, origin not allowed), 1009 a
frame too big, 1007 an invalid frame, 1011 internal error, 1012 restarting (drain) or unavailable (a backend
failed or is overloaded: resume later), 1013 try again later (slow consumer, rate limited). An SSE stream that
fails once its 200 is sent ends with ``event: error`` and the error's code (``gateway/sse.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from tidings.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    FrameError,
    IdempotencyMismatchError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    RateLimitedError,
    TidingsError,
    UnavailableError,
)

log = structlog.get_logger("tidings.api")

WS_POLICY = 1008
WS_TOO_BIG = 1009
WS_INVALID_FRAME = 1007
WS_INTERNAL = 1011
WS_DRAINING = 1012
WS_TRY_AGAIN = 1013

WWW_AUTHENTICATE = 'Bearer realm="tidings"'


class MalformedBodyError(InvalidInputError):
    """The body is not JSON, not UTF-8, or not declared as JSON."""

    code = "malformed_body"


class UnsupportedMediaTypeError(InvalidInputError):
    code = "unsupported_media_type"


class BodyTooLargeError(LimitExceededError):
    code = "body_too_large"


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


# Most specific first: the first class an error is an instance of decides.
_STATUSES: tuple[tuple[type[TidingsError], int], ...] = (
    (BodyTooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (LimitExceededError, 422),
    (InvalidInputError, 400),
    (ForbiddenError, 403),
    (AuthError, 401),
    (NotFoundError, 404),
    (ConflictError, 409),
    (IdempotencyMismatchError, 422),
    (RateLimitedError, 429),
    (UnavailableError, 503),
)

_CLOSE_CODES: tuple[tuple[type[TidingsError], int], ...] = (
    (LimitExceededError, WS_TOO_BIG),
    (FrameError, WS_INVALID_FRAME),
    (InvalidInputError, WS_INVALID_FRAME),
    (AuthError, WS_POLICY),
    (RateLimitedError, WS_TRY_AGAIN),
    (UnavailableError, WS_DRAINING),
)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}

# Routes whose refusals count in ``tidings_events_rejected_total``.
EVENT_ROUTES = frozenset({"/v1/events", "/v1/events/batch"})


def status_for(exc: TidingsError) -> int:
    """The HTTP status of a Tidings error (500 for one that bad input cannot cause)."""
    for cls, status in _STATUSES:
        if isinstance(exc, cls):
            return status
    return 500


def close_code_for(exc: TidingsError) -> int:
    """The WebSocket close code of a Tidings error (1011 for anything unexpected)."""
    for cls, code in _CLOSE_CODES:
        if isinstance(exc, cls):
            return code
    return WS_INTERNAL


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def error_payload(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_payload(code, message, **extra), status_code=status, headers=headers)


def headers_for(exc: TidingsError) -> dict[str, str]:
    if isinstance(exc, AuthError) and not isinstance(exc, ForbiddenError):
        return {"WWW-Authenticate": WWW_AUTHENTICATE}
    if isinstance(exc, RateLimitedError | UnavailableError):
        return {"Retry-After": retry_after(exc.retry_after)}
    return {}


def tidings_error_response(exc: TidingsError) -> JSONResponse:
    """The answer to a Tidings error raised while serving a request."""
    status = status_for(exc)
    if status == 500:
        return internal_error_response()
    return error_response(status, public_code(exc), exc.message, headers_for(exc))


def public_code(exc: TidingsError) -> str:
    """The ``code`` of an error body: a refused credential names the failed check (``token_expired``...)."""
    return exc.reason if isinstance(exc, AuthError) else exc.code


def internal_error_response() -> JSONResponse:
    return error_response(500, "internal_error", "internal error")


_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def validation_details(errors: Sequence[Any]) -> list[dict[str, str]]:
    """``loc``/``msg`` of pydantic errors, without the offending input (it may be large or secret).

    ``loc`` is never empty: a check on a whole object names the field it is about (``FieldError``), and a
    body that is not an object at all is ``body``. ``msg`` is the check's own words, without pydantic's
    "Value error, " prefix."""
    details = []
    for err in errors[:20]:
        loc = [str(part) for part in err.get("loc", ())]
        if loc[:1] == ["body"]:
            loc = loc[1:]  # the body is what the client sent; "query.limit" and "header.x" stay explicit
        field = getattr((err.get("ctx") or {}).get("error"), "field", None)
        if isinstance(field, str):
            loc.append(field)
        msg = str(err.get("msg", "invalid"))
        for prefix in _PYDANTIC_PREFIXES:
            msg = msg.removeprefix(prefix)
        details.append({"loc": ".".join(loc) or "body", "msg": msg})
    return details


def validation_message(details: Sequence[dict[str, str]]) -> str:
    """The first few problems in one line, e.g. ``recipients: List should have at least 1 item``."""
    message = "; ".join(f"{d['loc']}: {d['msg']}" for d in details[:3])
    return message or "invalid request"


def validation_response(errors: Sequence[Any]) -> JSONResponse:
    details = validation_details(errors)
    return error_response(422, "validation_failed", validation_message(details), details=details)


def _count_rejection(request: Request, code: str) -> None:
    if getattr(request.scope.get("route"), "path", None) in EVENT_ROUTES:
        request.app.state.runtime.funnel.rejected(code)


async def on_tidings_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TidingsError)
    if status_for(exc) == 500:
        return await on_unexpected(request, exc)
    _count_rejection(request, exc.code)
    return tidings_error_response(exc)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    _count_rejection(request, "validation_failed")
    return validation_response(exc.errors())


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Routing's 404/405 (and Starlette's own HTTP errors) in the common shape."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else code.replace("_", " ")
    return error_response(exc.status_code, code, message, exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: answer 500 without detail; the traceback goes to the log (bodies and tokens never do)."""
    log.error("unhandled error", method=request.method, path=request.url.path, exc_info=exc)
    return internal_error_response()


def install(app: FastAPI) -> None:
    app.add_exception_handler(TidingsError, on_tidings_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can answer."""
    descriptions = {
        400: "Unparseable body (not JSON, not UTF-8) or a malformed parameter",
        401: "Missing or invalid credentials",
        403: "Valid credentials without the right",
        404: "Not found",
        409: "Conflict (name taken, or the same Idempotency-Key still in flight)",
        413: "Body over the size limit",
        415: "Body not sent as application/json",
        422: (
            "Well-formed body that breaks the schema (`validation_failed`, with `details`: `loc`/`msg` per"
            " problem), a count over a limit (`limit_exceeded`), or an Idempotency-Key reused with another"
            " body"
        ),
        429: "Rate limited; see Retry-After",
        503: "Unavailable or draining; see Retry-After",
    }
    return {status: {"model": ErrorBody, "description": descriptions[status]} for status in statuses}

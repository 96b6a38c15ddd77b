"""The HTTP API as one FastAPI app; ``tidings.service`` adds the live routes (``/v1/ws``, ``/v1/stream``).

Request path, outside in: one layer for metrics (every answer is counted, refusals included), CORS, and the
body limit and drain gate (``api.middleware``) -> error handlers -> routes. Errors become answers only in
``tidings.api.errors``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI

from tidings import __version__
from tidings.api import docs, errors
from tidings.api.deps import ApiState
from tidings.api.middleware import ApiMiddleware, Cors
from tidings.api.routes import ROUTERS
from tidings.api.routing import include_routers
from tidings.runtime import Runtime

DESCRIPTION = """\
Tidings turns your backend's events into each user's inbox and pushes them live (WebSocket, SSE).

* **Producers** (your backend) authenticate with `Authorization: Bearer <api_key>`.
* **Users** authenticate with a JWT your backend signs with the app's `jwt_secret`
  (HS256, `iss` = app name, `sub` = user id, `aud` = `tidings`, `exp` required).
* **Live delivery** (`GET /v1/ws` WebSocket, `GET /v1/stream` SSE) is described in the
  [AsyncAPI 3 document](/asyncapi.json): every frame, in both directions, and the close codes.
* **Admin** routes take `Authorization: Bearer $TIDINGS_ADMIN_TOKEN` and answer 404 when it is unset.

**Events.** `202 {"id", "status": "accepted"}` means durable. Repeating an `Idempotency-Key` with the same
body answers 202 with the first id and the header `Idempotent-Replayed: true`; with another body 422
(`idempotency_key_reused`); while the first request is still being appended, 409. A batch answers 200 with
one result per item, in order; each item succeeds or fails alone. `actor` and `object` are objects with an
`id` plus any fields you want shown (4 KiB each); `data` is an object of at most 16 KiB, nested at most 32
levels deep.

**Errors** always answer `{"error": {"code": "...", "message": "..."}}`: 400 unparseable body (not JSON,
not UTF-8) or a bad cursor, 401, 403, 404, 409, 413 body over the byte limit, 415 body not JSON, 422 a body
that breaks the schema (`validation_failed`, with `details`; unknown fields included) or a count over a
limit (`limit_exceeded`: recipients per event, events per batch), 429 over the per-key rate (a batch costs
one token per event) and 503 unavailable or draining, both with `Retry-After` in whole seconds.
"""


def create_app(runtime: Runtime, routers: Sequence[APIRouter] = ROUTERS) -> FastAPI:
    """The API app over ``runtime`` (kept in ``app.state.runtime``), with ``routers`` (all by default)."""
    app = FastAPI(
        title="Tidings",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        strict_content_type=False,
    )
    app.state.runtime = runtime
    app.state.api = ApiState.build(runtime)
    errors.install(app)
    include_routers(app, routers)
    docs.install(app)
    # One layer, outside in: metrics (every answer is counted, refusals included), CORS, body limit and drain.
    # Any origin may call the API from a browser: credentials are bearer headers, never cookies, so a foreign
    # page gains nothing it could not do with a plain HTTP client. (The WebSocket Origin check is separate.)
    cors = Cors(
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        expose_headers=["Retry-After", "Idempotent-Replayed"],
    )
    app.add_middleware(ApiMiddleware, routes=lambda: app.router.routes, runtime=runtime, cors=cors)
    return app

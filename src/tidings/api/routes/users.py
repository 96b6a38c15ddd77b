"""A user's data on request, for the producer: ``DELETE /v1/users/{id}`` erases everything held about the user
in the app, ``GET /v1/users/{id}/export`` returns it as JSON (``ports.UserData``). Both are idempotent and both
leave an entry in the decision log (kind ``erase`` / ``export``, under the ``request`` id they answer with:
``GET /v1/events/{request}/decisions``) saying which app's key asked; that entry is what remains of an erased
user (it names the user, so the erasure can be shown to have happened; it goes with the decision log's
retention, ``TIDINGS_DECISION_RETENTION``).

The user as an *actor* in other users' aggregates ("Ann and 2 others") is taken out by the inbox's
``scrub_actor`` (re-rendered rows with new seqs, published live like a fan-out's).
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tidings.api import errors
from tidings.api.deps import Producer, State
from tidings.api.routing import json_router
from tidings.api.schemas import NO_CONTROL_CHARS
from tidings.core.clock import isoformat
from tidings.core.ids import new_id
from tidings.core.models import LiveMessage
from tidings.core.rules import Decision
from tidings.errors import TidingsError
from tidings.runtime import Runtime

router = json_router(tags=["users"])
log = structlog.get_logger("tidings.api.users")

UserPath = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_CONTROL_CHARS)]

ERASE_HELP = """\
Erases everything held about the user in your app, in every store: the inbox (with read/seen state), seq
counter, preferences, profile (email, locale, time zone, name), Web Push subscriptions, devices, topic
memberships, pending and recorded offline deliveries, and the decisions made for them; and takes them out of
other users' aggregates as an actor (those re-render as new notifications that `replace` the old ones). Stop
sending events to the user first: an event fanned out after the erasure starts a new inbox. Idempotent: a
second call erases nothing more and answers the same way. Recorded in the decision log under `request`.
"""

EXPORT_HELP = """\
Everything held about the user in your app, as one JSON document: profile, preferences, the inbox (each
notification with its read/seen state; newest first, at most 100 000, `truncated` says if more), Web Push
subscriptions and devices (secrets left out: only the push service's origin, no keys or tokens), topic
memberships, pending and recorded offline deliveries, decisions. Recorded in the decision log under `request`.
"""


class ErasureOut(BaseModel):
    user: str
    request: str = Field(
        description="the decision log entry of this erasure: GET /v1/events/{request}/decisions"
    )
    erased: dict[str, int] = Field(
        description="rows deleted per kind of data (0 everywhere on a second call)"
    )
    actors_scrubbed: int = Field(description="other users' notifications re-rendered without this actor")


@router.delete(
    "/v1/users/{user_id}",
    status_code=202,
    responses=errors.responses(400, 401, 422, 503),
    summary="Erase everything held about a user (right to erasure)",
    description=ERASE_HELP,
)
async def erase_user(user_id: UserPath, app: Producer, state: State) -> ErasureOut:
    runtime = state.runtime
    erased = await runtime.store.user_data.erase(app.name, user_id)
    scrubbed = await _scrub_actor(runtime, app.name, user_id)
    request = await _audit(
        runtime, app.name, user_id, "erase", {"erased": erased, "actors_scrubbed": scrubbed}
    )
    return ErasureOut(user=user_id, request=request, erased=erased, actors_scrubbed=scrubbed)


@router.get(
    "/v1/users/{user_id}/export",
    response_class=JSONResponse,
    responses={200: {"content": {"application/json": {}}}, **errors.responses(400, 401, 422, 503)},
    summary="Everything held about a user, as JSON (right of access)",
    description=EXPORT_HELP,
)
async def export_user(user_id: UserPath, app: Producer, state: State) -> JSONResponse:
    runtime = state.runtime
    data = await runtime.store.user_data.export(app.name, user_id)
    request = await _audit(runtime, app.name, user_id, "export", {"truncated": bool(data.get("truncated"))})
    body: dict[str, Any] = {"request": request, "exported_at": isoformat(runtime.clock.time()), **data}
    return JSONResponse(body)


async def _scrub_actor(runtime: Runtime, app: str, user: str) -> int:
    """Takes the user out of other users' aggregates (``Inbox.scrub_actor``); the re-rendered rows and the
    retraction markers of aggregates left empty are published live, as the worker publishes a fan-out's."""
    rows = await runtime.store.inbox.scrub_actor(app, user)
    messages = [LiveMessage(r.app, r.user, r.seq, r.payload, kind=r.kind) for r in rows if r.kind != "gone"]
    if messages:
        try:
            await runtime.bus.publish(messages)
        except TidingsError as exc:  # at most once: live clients gap-fill from the inbox
            log.warning("publish_failed", error=exc.code, messages=len(messages))
    return len({(r.user, r.seq) for r in rows if r.kind != "gone"})


async def _audit(runtime: Runtime, app: str, user: str, kind: str, detail: dict[str, Any]) -> str:
    """Records who asked in the decision log; returns the entry's id (the request id)."""
    now = runtime.clock.time()
    request = new_id(now)
    reason = f"requested with the API key of app {app}"
    decision = Decision(app, request, user, kind, reason, at=now, detail={"by": {"app": app}, **detail})
    await runtime.store.decisions.record([decision])
    return request

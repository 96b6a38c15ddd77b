"""The life of a notification after it was sent: the producer retracts it, the user archives, unarchives,
marks unread or deletes it.

Retraction (``POST /v1/events/cancel``, ``DELETE /v1/events/{id}``) answers 202 once the store committed it:
a retraction recorded before the event's fan-out wins over it (the inbox write checks it), and rows already
written are removed (or taken out of their aggregate) in every inbox, their pending pushes, emails and
webhooks cancelled. The rows it returns are published on the live bus: a ``retract`` marker (a seq of the
user's stream) and re-rendered aggregates (notifications that replace the old ones).

State changes reach the user's other live connections as a ``state`` frame with the counts after it; like
read-sync, best effort (the bus is at most once): the counts are also at ``GET /v1/me/counts``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import Path

from tidings.api import errors
from tidings.api.deps import Producer, State, User
from tidings.api.routing import json_router
from tidings.api.schemas import NO_CONTROL_CHARS, CancelIn, Changed, Counts, Retracted, SeqsIn
from tidings.core import frames
from tidings.core.models import App, LiveMessage, StoredNotification
from tidings.errors import TidingsError

router = json_router(tags=["lifecycle"])


async def _publish(state: State, rows: Sequence[StoredNotification]) -> None:
    messages = [LiveMessage(r.app, r.user, r.seq, r.payload, kind=r.kind) for r in rows if r.kind != "gone"]
    # Committed whatever the bus does: gateways gap-fill the markers and re-rendered rows from the inbox.
    with contextlib.suppress(TidingsError):
        if messages:
            await state.runtime.bus.publish(messages)


async def _retract(state: State, app: str, event_ids: list[str], cancel_keys: list[str]) -> Retracted:
    rows = await state.runtime.store.inbox.retract(app, event_ids=event_ids, cancel_keys=cancel_keys)
    await _publish(state, rows)
    return Retracted(retracted=len({(r.user, r.app) for r in rows}))


@router.post(
    "/v1/events/cancel",
    status_code=202,
    responses=errors.responses(400, 401, 413, 415, 422, 429, 503),
    summary="Retract events by their cancel keys (and/or ids): removed from every inbox, live stream and "
    "pending send",
)
async def cancel_events(body: CancelIn, state: State, app: Producer) -> Retracted:
    await state.limiter.charge(app.api_key_hash, len(body.cancel_keys) + len(body.event_ids))
    return await _retract(state, app.name, body.event_ids, body.cancel_keys)


@router.delete(
    "/v1/events/{event_id}",
    status_code=202,
    responses=errors.responses(400, 401, 422, 429, 503),
    summary="Retract one event by its id",
)
async def delete_event(
    event_id: Annotated[str, Path(min_length=1, max_length=32, pattern=NO_CONTROL_CHARS)],
    state: State,
    app: Producer,
) -> Retracted:
    await state.limiter.charge(app.api_key_hash, 1)
    return await _retract(state, app.name, [event_id], [])


@router.get("/v1/me/counts", responses=errors.responses(401, 503), summary="My counts per status")
async def counts(caller: User, state: State) -> Counts:
    unread, unseen, archived = await state.runtime.store.inbox.tallies(caller[0].name, caller[1])
    return Counts(unread=unread, unseen=unseen, archived=archived)


Action = Literal["archive", "unarchive", "unread", "delete"]


async def _change(caller: tuple[App, str], state: State, body: SeqsIn, action: Action) -> Changed:
    app, user = caller
    name = app.name
    changed, (unread, unseen, archived) = await state.runtime.store.inbox.change(
        name, user, action, body.seqs
    )
    if changed:
        frame = frames.encode_state(action, seqs=changed, unread=unread, unseen=unseen)
        with contextlib.suppress(TidingsError):
            await state.runtime.bus.publish([LiveMessage(name, user, 0, frame, kind="state")])
    return Changed(updated=len(changed), unread=unread, unseen=unseen, archived=archived)


_RESPONSES = errors.responses(400, 401, 413, 415, 422, 503)


@router.post("/v1/me/notifications/archive", responses=_RESPONSES, summary="Archive notifications")
async def archive(body: SeqsIn, caller: User, state: State) -> Changed:
    return await _change(caller, state, body, "archive")


@router.post("/v1/me/notifications/unarchive", responses=_RESPONSES, summary="Unarchive notifications")
async def unarchive(body: SeqsIn, caller: User, state: State) -> Changed:
    return await _change(caller, state, body, "unarchive")


@router.post("/v1/me/notifications/unread", responses=_RESPONSES, summary="Mark notifications unread")
async def unread(body: SeqsIn, caller: User, state: State) -> Changed:
    return await _change(caller, state, body, "unread")


@router.post(
    "/v1/me/notifications/delete",
    responses=_RESPONSES,
    summary="Delete notifications for me (gone from my inbox, counts and streams; pending sends cancelled)",
)
async def delete(body: SeqsIn, caller: User, state: State) -> Changed:
    return await _change(caller, state, body, "delete")

"""A user's own inbox: list, counts, read/seen marks, and stream tickets for browsers' SSE.

Every query is scoped to the (app, user) of the caller's token: there is no way to name another user.

Read-sync: a read or seen mark is published on the live bus (kind ``read``/``seen``) with the counts after it,
so every live connection of the user (any device) learns it at once; the store also cancels the marked
notifications' pending pushes and emails. The bus is at most once: a client that misses one still has the
counts from ``/v1/me/unread-count``.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Annotated, Literal

import orjson
from fastapi import Query, Response

from tidings.api import cursors, errors
from tidings.api.deps import State, User
from tidings.api.routing import json_router
from tidings.api.schemas import MAX_SEQ, Marked, MarkIn, NotificationsPage, StreamTicket, UnreadCount
from tidings.auth import hash_key
from tidings.core import frames
from tidings.core.models import App, LiveMessage
from tidings.core.rules import AppRules
from tidings.errors import InvalidInputError, TidingsError

router = json_router(tags=["me"])


@router.get(
    "/v1/me/notifications",
    response_class=Response,
    responses={200: {"model": NotificationsPage}, **errors.responses(400, 401, 422, 503)},
    summary="List my notifications: newest first, or oldest first with `after`",
)
async def notifications(
    caller: User,
    state: State,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="only seq > after, oldest first")
    ] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQ, description="only seq < before")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    unread: Annotated[bool, Query(description="only notifications not yet read")] = False,
    cursor: Annotated[
        str | None, Query(description="`next` of the previous page (replaces after/before)")
    ] = None,
    status: Annotated[
        Literal["unread", "unseen", "archived", "all"] | None,
        Query(description="default: the notifications not archived"),
    ] = None,
    category: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    event_type: Annotated[str | None, Query(alias="type", min_length=1, max_length=100)] = None,
) -> Response:
    app, user = caller
    if cursor is not None:
        if after is not None or before is not None:
            raise InvalidInputError("cursor replaces after and before: send one or the other")
        position = cursors.decode(cursor)
        after, before = cursors.seq_field(position, "after"), cursors.seq_field(position, "before")
        if after is None and before is None:
            raise InvalidInputError("invalid cursor")
    types = await _types(state, app.name, category, event_type)
    which = status or ("unread" if unread else "inbox")
    items = (
        await state.runtime.store.inbox.page(
            app.name,
            user,
            after=after,
            before=before,
            limit=limit + 1,
            unread_only=False,
            status=which,
            types=types,
        )
        if types != []
        else []
    )
    page, more = items[:limit], len(items) > limit
    following = None
    if more:
        # Oldest first continues after the last seq; newest first continues below it.
        last = page[-1].seq
        following = cursors.encode(
            {"after": last, "before": before} if after is not None else {"before": last}
        )
    unread_n, unseen_n, archived_n = await state.runtime.store.inbox.tallies(app.name, user)
    counts = {"unread": unread_n, "unseen": unseen_n, "archived": archived_n}
    body = {"items": [item.to_json() for item in page], "next": following, "counts": counts}
    return Response(orjson.dumps(body), media_type="application/json")


async def _types(state: State, app: str, category: str | None, type_: str | None) -> list[str] | None:
    """The types a ``category`` / ``type`` filter keeps (None: any; [] none): a category is what the app's
    rules say of each type, and a type the rules do not name is its own category."""
    if category is None:
        return None if type_ is None else [type_]
    rules = await state.runtime.store.preferences.rules(app) or AppRules()
    named = [t for t in rules.types if rules.category_of(t) == category]
    if category not in rules.types:
        named.append(category)  # a type the rules do not name is its own category
    return [t for t in named if type_ is None or t == type_]


@router.get("/v1/me/unread-count", responses=errors.responses(401, 503), summary="How many unread / unseen")
async def unread_count(caller: User, state: State) -> UnreadCount:
    unread, unseen = await state.runtime.store.inbox.counts(caller[0].name, caller[1])
    return UnreadCount(unread=unread, unseen=unseen)


async def _mark(
    caller: tuple[App, str], state: State, body: MarkIn, field: Literal["read", "seen"]
) -> Marked:
    app, user = caller
    at = state.runtime.clock.time()
    updated = await state.runtime.store.inbox.mark(
        app.name, user, field, seqs=body.seqs, up_to=body.up_to, at=at
    )
    await _sync(state, app.name, user, field, body)
    state.runtime.funnel.marked(field, updated)  # rows marked now: a repeated mark counts nothing twice
    return Marked(updated=updated)


async def _sync(state: State, app: str, user: str, field: Literal["read", "seen"], body: MarkIn) -> None:
    """Tell the user's live connections (read-sync); best effort, like every live message."""
    unread, unseen = await state.runtime.store.inbox.counts(app, user)
    frame = frames.encode_read(field, seqs=body.seqs, up_to=body.up_to, unread=unread, unseen=unseen)
    # The mark is committed whatever the bus does: a client that missed the frame can ask for the counts.
    with contextlib.suppress(TidingsError):
        await state.runtime.bus.publish([LiveMessage(app, user, 0, frame, kind=field)])


@router.post(
    "/v1/me/notifications/read",
    responses=errors.responses(400, 401, 413, 415, 422, 503),
    summary="Mark notifications read: `seqs` or everything `up_to` a seq",
)
async def mark_read(body: MarkIn, caller: User, state: State) -> Marked:
    return await _mark(caller, state, body, "read")


@router.post(
    "/v1/me/notifications/seen",
    responses=errors.responses(400, 401, 413, 415, 422, 503),
    summary="Mark notifications seen: `seqs` or everything `up_to` a seq",
)
async def mark_seen(body: MarkIn, caller: User, state: State) -> Marked:
    return await _mark(caller, state, body, "seen")


@router.post(
    "/v1/me/stream-tickets",
    responses=errors.responses(401, 503),
    summary="A one-use, short-lived ticket for GET /v1/stream?ticket= (browsers cannot set headers on SSE)",
)
async def stream_ticket(caller: User, state: State) -> StreamTicket:
    app, user = caller
    ticket, ttl = secrets.token_urlsafe(32), state.runtime.settings.ticket_ttl
    # Stored as its hash, like API keys: a copy of the database does not hold usable tickets.
    await state.runtime.store.apps.issue_ticket(
        hash_key(ticket), app.name, user, state.runtime.clock.time() + ttl
    )
    return StreamTicket(ticket=ticket, expires_in=ttl)

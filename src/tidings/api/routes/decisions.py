"""The decision log of one event, for its producer: ``GET /v1/events/{id}/decisions``.

Scoped to the caller's app: another app's event id answers an empty list, like an unknown one (the log does
not tell which ids exist elsewhere).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from tidings.api import cursors, errors
from tidings.api.deps import Producer, State
from tidings.api.routing import json_router
from tidings.api.schemas import NO_CONTROL_CHARS, DecisionOut, DecisionsPage
from tidings.core.clock import isoformat
from tidings.core.rules import Decision

router = json_router(tags=["events"])

DECISIONS_HELP = """\
What Tidings decided for this event and why, one entry per (user, kind, channel), ordered by user:
`drop` (the whole event: processed after its type's TTL), `suppress` (a mute, or `in_app` off),
`deliver` (a channel chosen, due at once), `defer` (a channel chosen for later: quiet hours, a cap's digest,
low priority; `detail.due_at`), `aggregate` (joined the user's aggregate of its `group_key`: `detail.replaces`,
`detail.count`), `cancel` (a pending push or email dropped because the user read or saw it, or nothing is
registered to send it to). What the senders then did: `GET /v1/events/{id}/deliveries`.
Entries are kept 7 days by default (`TIDINGS_DECISION_RETENTION`).
"""


@router.get(
    "/v1/events/{event_id}/decisions",
    responses=errors.responses(400, 401, 422, 503),
    summary="Why each recipient did or did not get this event, and by which channel",
    description=DECISIONS_HELP,
)
async def decisions(
    event_id: Annotated[str, Path(min_length=1, max_length=32, pattern=NO_CONTROL_CHARS)],
    app: Producer,
    state: State,
    user: Annotated[str | None, Query(min_length=1, max_length=255, pattern=NO_CONTROL_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="`next` of the previous page")] = None,
) -> DecisionsPage:
    after = _position(cursor) if cursor is not None else None
    found = await state.runtime.store.decisions.for_event(
        app.name, event_id, user=user, after=after, limit=limit + 1
    )
    page, more = found[:limit], len(found) > limit
    following = None
    if more:
        last = page[-1]
        following = cursors.encode({"user": last.user, "kind": last.kind, "channel": last.channel})
    return DecisionsPage(items=[_out(d) for d in page], next=following)


def _position(cursor: str) -> tuple[str, str, str]:
    position = cursors.decode(cursor)
    user, kind, channel = (cursors.string_field(position, key) for key in ("user", "kind", "channel"))
    return user, kind, channel


def _out(decision: Decision) -> DecisionOut:
    return DecisionOut(
        user=decision.user or None,
        kind=decision.kind,
        channel=decision.channel or None,
        reason=decision.reason,
        seq=decision.seq,
        at=isoformat(decision.at),
        detail=decision.detail,
    )

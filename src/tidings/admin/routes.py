"""The admin page's data: ``GET /admin/api/stats`` (this process's metrics) and ``GET /admin/api/events/{id}``
(one event's journey). Both take ``Authorization: Bearer $TIDINGS_ADMIN_TOKEN`` and answer 404 while it is
unset, like every admin route; the page itself (``/admin``) is static and holds no data."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Path, Query, Response

from tidings import __version__
from tidings.admin.journey import journey
from tidings.api import errors
from tidings.api.deps import Admin, State
from tidings.api.schemas import NO_CONTROL_CHARS
from tidings.errors import NotFoundError
from tidings.observability.snapshot import snapshot
from tidings.runtime import Runtime

router = APIRouter(prefix="/admin/api", dependencies=[Admin], include_in_schema=False)

OFFLINE_TIMEOUT = 2.0  # seconds a stats call waits for the ledger's sample
DISABLED_SHOWN = 20  # disabled webhook endpoints listed on the page (the count covers them all)
EventId = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROL_CHARS)]
Filter = Annotated[str | None, Query(min_length=1, max_length=255, pattern=NO_CONTROL_CHARS)]
NO_STORE = {"Cache-Control": "no-store"}


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=NO_STORE)


@router.get("/stats", responses=errors.responses(401, 404))
async def stats(state: State) -> Response:
    """Cumulative counters and histograms of this process, and its gauges now."""
    runtime = state.runtime
    # The lag as of this call (read at most once a second, as for /metrics); a slow or unreachable log keeps
    # the last value: a stats read must not fail because of it (/readyz reports that).
    with contextlib.suppress(Exception):
        await runtime.refresh_lag()
    disabled: list[dict[str, Any]] = []
    with contextlib.suppress(Exception):  # likewise the ledger: the gauges keep the sender's last sample
        disabled = await asyncio.wait_for(_offline(runtime), OFFLINE_TIMEOUT)
    body: dict[str, Any] = {"at": runtime.clock.time(), "version": __version__, **snapshot()}
    body["offline"]["disabled"] = disabled
    return _json(body)


async def _offline(runtime: Runtime) -> list[dict[str, Any]]:
    """Samples the shared ledger into the offline gauges (as a sender does) and lists the first disabled
    webhook endpoints: their app and URL host only (a URL's path or query may carry a token)."""
    outbound = runtime.store.outbound
    now = runtime.clock.time()
    backlog = await outbound.depth(now)
    oldest = backlog.oldest_due
    age = now - oldest if oldest is not None else 0.0
    runtime.funnel.offline_queue(backlog.due, age, backlog.dead, backlog.disabled_webhooks)
    hooks = await outbound.disabled_webhooks(DISABLED_SHOWN)
    return [
        {"id": h.id, "app": h.app, "host": urlsplit(h.url).hostname or "", "failing_since": h.failing_since}
        for h in hooks
    ]


@router.get("/events/{event_id}", responses=errors.responses(401, 404, 422))
async def event_journey(state: State, event_id: EventId, app: Filter = None, user: Filter = None) -> Response:
    """Where is my notification: accepted, fanned out, each inbox row with its live deliveries, seen, read."""
    found = await journey(state.runtime.store, event_id, app, user)
    if found is None:
        raise NotFoundError("no such event in the store, and this process has not seen it")
    return _json(found)

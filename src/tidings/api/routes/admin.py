"""Admin routes, behind ``$TIDINGS_ADMIN_TOKEN``; with the token unset they answer 404 as if absent."""

from __future__ import annotations

from tidings.api import errors
from tidings.api.deps import Admin, State
from tidings.api.routing import json_router
from tidings.api.schemas import AppCreated, AppIn
from tidings.auth import create_app_record

router = json_router(tags=["admin"], dependencies=[Admin])


@router.post(
    "/v1/apps",
    status_code=201,
    responses=errors.responses(400, 401, 404, 409, 413, 415, 422, 503),
    summary="Create an app (tenant); the API key is shown only in this answer",
)
async def create_app(body: AppIn, state: State) -> AppCreated:
    runtime = state.runtime
    record = await create_app_record(runtime.store, body.name, body.origins, runtime.clock.time())
    return AppCreated(**record)

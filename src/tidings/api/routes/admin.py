"""Admin routes, behind ``$TIDINGS_ADMIN_TOKEN``; with the token unset they answer 404 as if absent.

The credential routes do what ``tidings apps list|rotate-key|rotate-secret|delete`` do (``tidings.auth``): a
new key or secret is shown only in its answer, a listing never shows one, and a deletion removes the app's
credentials but not its data.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import BaseModel, Field

from tidings import auth
from tidings.api import errors
from tidings.api.deps import Admin, State
from tidings.api.routing import json_router
from tidings.api.schemas import AppCreated, AppIn
from tidings.auth import create_app_record
from tidings.errors import NotFoundError

router = json_router(tags=["admin"], dependencies=[Admin])

NamePath = Annotated[str, Path(pattern=auth.APP_NAME_RE.pattern)]
GraceQuery = Annotated[
    float,
    Query(ge=0, le=365 * 86400, description="seconds the replaced credential stays valid (0: none)"),
]


class AppSummary(BaseModel):
    app: str
    origins: list[str]
    created_at: float
    previous_key_until: float | None = Field(description="the replaced API key is accepted until then")
    previous_secret_until: float | None = Field(description="tokens of the replaced secret: until then")


class AppList(BaseModel):
    apps: list[AppSummary]


class KeyRotated(BaseModel):
    app: str
    api_key: str = Field(description="shown once; stored only as its SHA-256")
    previous_key_until: float


class SecretRotated(BaseModel):
    app: str
    jwt_secret: str = Field(description="signs the app's user tokens (HS256) from now on")
    previous_secret_until: float


class AppDeleted(BaseModel):
    app: str
    deleted: bool


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


@router.get("/v1/apps", responses=errors.responses(401, 404, 503), summary="Every app (never a secret)")
async def list_apps(state: State) -> AppList:
    now = state.runtime.clock.time()
    apps = await state.runtime.store.apps.all()
    return AppList(apps=[AppSummary.model_validate(auth.app_summary(app, now)) for app in apps])


@router.post(
    "/v1/apps/{name}/rotate-key",
    responses=errors.responses(401, 404, 422, 503),
    summary="A new API key; the old one works for grace_seconds more",
)
async def rotate_key(name: NamePath, state: State, grace_seconds: GraceQuery = 86400.0) -> KeyRotated:
    runtime = state.runtime
    record = await auth.rotate_key(runtime.store, name, grace_seconds, runtime.clock.time())
    return KeyRotated.model_validate(record)


@router.post(
    "/v1/apps/{name}/rotate-secret",
    responses=errors.responses(401, 404, 422, 503),
    summary="A new JWT secret; tokens of the old one are accepted for grace_seconds more",
)
async def rotate_secret(name: NamePath, state: State, grace_seconds: GraceQuery = 86400.0) -> SecretRotated:
    runtime = state.runtime
    record = await auth.rotate_secret(runtime.store, name, grace_seconds, runtime.clock.time())
    return SecretRotated.model_validate(record)


@router.delete(
    "/v1/apps/{name}",
    responses=errors.responses(401, 404, 422, 503),
    summary="Delete an app's credentials (key, secrets, stream tickets); its data is kept",
)
async def delete_app(name: NamePath, state: State) -> AppDeleted:
    if not await state.runtime.store.apps.delete(name):
        raise NotFoundError(f"no app named {name!r}")
    return AppDeleted(app=name, deleted=True)

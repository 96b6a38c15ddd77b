"""The demo-only endpoints under ``/demo/api``, installed only when ``settings.demo`` is on (404 otherwise).

They stand in for a social app's backend: they mint short-lived user tokens for the page (as an app's backend
signs its users' JWTs) and turn a click into an event of the app ``demo``, created at first use.

Events are validated by the producer API's own schema and appended to the event log in-process as app
``demo``, rather than posted with its API key: API keys are stored hashed, so a server cannot recover the key
of a ``demo`` app created earlier (by a previous run, or by ``tidings apps create demo`` as in the README).
Everything after the append (fan-out, inbox, live delivery) is the path every producer's events take.

An unlike retracts the like by its ``cancel_key`` through the inbox's retraction, as ``POST /v1/events/cancel``
does, and publishes what it returns (the ``retract`` marker, re-rendered aggregates) on the live bus.

Anyone who reaches a server in demo mode can act as any demo person: never turn it on in production. Other
apps are untouched: tokens are minted for the ``demo`` app only.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidings.api import errors
from tidings.api.routing import json_router
from tidings.api.schemas import EventIn
from tidings.auth import create_app_record, mint_user_token
from tidings.core.ids import new_id
from tidings.core.models import App, LiveMessage
from tidings.demo.actions import DEMO_APP, PEOPLE, Action, name_of, plan
from tidings.errors import AppExistsError, TidingsError, UnavailableError
from tidings.ports import Append
from tidings.runtime import Runtime

TOKEN_TTL = 600  # seconds: the page asks for a new token before this runs out
PersonId = Annotated[str, Field(pattern="^(" + "|".join(PEOPLE) + ")$")]

router = json_router(prefix="/demo/api", tags=["demo"])


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    user: PersonId


class Session(BaseModel):
    app: str
    user: str
    token: str
    expires_in: int


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    actor: PersonId
    action: Action
    target: PersonId | None = Field(None, description="whose post / whom; not used by `post`")
    text: Annotated[str, Field(max_length=280)] = ""

    @model_validator(mode="after")
    def _someone_else(self) -> ActionIn:
        if self.action != "post" and self.target in (None, self.actor):
            raise ValueError(f"{name_of(self.actor)} needs someone else to {self.action}")
        return self


class ActionOut(BaseModel):
    event_id: str = Field(description="the event sent; empty for an unlike, which sends none")
    type: str
    to: list[str] | str = Field(description="the recipients, or the topic a post went to")
    cancelled: str | None = Field(None, description="the cancel_key an unlike retracted")


class DemoApp:
    """The ``demo`` app record, created at first use; one lookup per process."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._app: App | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> App:
        if self._app is None:
            async with self._lock:
                if self._app is None:
                    self._app = await self._load_or_create()
        return self._app

    async def _load_or_create(self) -> App:
        apps = self._runtime.store.apps
        app = await apps.get(DEMO_APP)
        if app is None:
            # Another process may create it first: then use theirs.
            with contextlib.suppress(AppExistsError):
                await create_app_record(self._runtime.store, DEMO_APP, [], self._runtime.clock.time())
            app = await apps.get(DEMO_APP)
        if app is None:
            raise UnavailableError("the demo app could not be created", retry_after=1)
        return app


def demo_app(request: Request) -> DemoApp:
    holder: DemoApp = request.app.state.demo
    return holder


Demo = Annotated[DemoApp, Depends(demo_app)]


@router.get("/people", summary="The demo's people (user ids of app `demo`)")
async def people() -> dict[str, Any]:
    listed = [{"id": user, "name": name, "color": color} for user, (name, color) in PEOPLE.items()]
    return {"app": DEMO_APP, "people": listed}


@router.post(
    "/session",
    responses=errors.responses(400, 422, 503),
    summary="A short-lived user token for the page (what an app's backend gives its signed-in user)",
)
async def session(body: SessionIn, demo: Demo, request: Request) -> Session:
    runtime: Runtime = request.app.state.runtime
    app = await demo.get()
    token = mint_user_token(app, body.user, TOKEN_TTL, runtime.clock.time())
    return Session(app=app.name, user=body.user, token=token, expires_in=TOKEN_TTL)


@router.post(
    "/actions",
    status_code=202,
    responses=errors.responses(400, 422, 503),
    summary="Do something as one person to another (like, unlike, comment, follow) or to one's followers (post)",
)
async def act(body: ActionIn, demo: Demo, request: Request) -> ActionOut:
    runtime: Runtime = request.app.state.runtime
    app = await demo.get()
    target = body.target or body.actor
    planned = plan(body.action, body.actor, target, body.text.strip())
    if planned.cancel is not None:
        await _cancel(runtime, app, planned.cancel)
        return ActionOut(event_id="", type="post.liked", to=[target], cancelled=planned.cancel)
    assert planned.event is not None
    if planned.subscribe is not None:
        topic, user = planned.subscribe
        await runtime.store.topics.subscribe(app.name, topic, user)
    event_id = await _append(runtime, app, planned.event)
    event = planned.event
    return ActionOut(event_id=event_id, type=event["type"], to=event.get("recipients") or event["topic"])


async def _cancel(runtime: Runtime, app: App, cancel_key: str) -> None:
    """Retract the events sent with ``cancel_key``, as ``POST /v1/events/cancel`` does for a producer."""
    rows = await runtime.store.inbox.retract(app.name, event_ids=[], cancel_keys=[cancel_key])
    messages = [LiveMessage(r.app, r.user, r.seq, r.payload, kind=r.kind) for r in rows if r.kind != "gone"]
    # Committed whatever the bus does: gateways gap-fill the marker and re-rendered rows from the inbox.
    with contextlib.suppress(TidingsError):
        if messages:
            await runtime.bus.publish(messages)


async def _append(runtime: Runtime, app: App, body: dict[str, Any]) -> str:
    """Append as the app's backend would through ``POST /v1/events``: durable once this returns."""
    event = EventIn.model_validate(body)  # the producer API's schema: the demo sends nothing it would refuse
    now = runtime.clock.time()
    accepted = event.to_event(event_id=new_id(now), app=app.name, accepted_at=now, idempotency_key=None)
    (result,) = await runtime.log.append([Append(accepted)])
    if isinstance(result, Exception):
        raise result
    runtime.funnel.accepted([accepted], trace_id=None)
    return result.event_id

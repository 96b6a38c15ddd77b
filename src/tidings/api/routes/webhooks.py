"""The producer's side of the offline channels: webhook endpoints (and their secret rotation), user profiles
(the email channel's address, locale, time zone, name) and an event's deliveries.

A webhook's signing secret is shown once, when it is made (create, rotate); a rotation keeps the previous
secret signing for ``ROTATION_OVERLAP`` seconds, so receivers can switch without losing a message. URLs must
be https in production mode; the SSRF guard (``channels.egress``) checks addresses at send time.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Response

from tidings.api import errors
from tidings.api.channel_schemas import (
    DeliveriesPage,
    DeliveryOut,
    ProfileIn,
    ProfileOut,
    SecretRotated,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    Webhooks,
)
from tidings.api.deps import Producer, State
from tidings.api.routing import json_router
from tidings.api.schemas import NO_CONTROL_CHARS
from tidings.channels.webhook import new_secret
from tidings.core.delivery import Profile, WebhookEndpoint
from tidings.core.ids import new_id
from tidings.errors import InvalidInputError, LimitExceededError, NotFoundError

router = json_router(tags=["webhooks"])

ROTATION_OVERLAP = 24 * 3600.0
MAX_WEBHOOKS = 20  # per app
IdPath = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z]+$")]
UserPath = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_CONTROL_CHARS)]
EventPath = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z]+$")]


def _out(h: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=h.id,
        url=h.url,
        events=list(h.events),
        disabled=h.disabled,
        failing_since=h.failing_since,
        created_at=h.created_at,
    )


@router.post(
    "/v1/webhooks",
    status_code=201,
    responses=errors.responses(400, 401, 413, 415, 422, 503),
    summary="Add a webhook endpoint",
)
async def add_webhook(body: WebhookIn, app: Producer, state: State) -> WebhookCreated:
    runtime = state.runtime
    if runtime.settings.production and not body.url.startswith("https://"):
        raise InvalidInputError("url must be an https URL")
    if len(await runtime.store.outbound.webhooks(app.name)) >= MAX_WEBHOOKS:
        raise LimitExceededError(f"an app has at most {MAX_WEBHOOKS} webhook endpoints")
    now = runtime.clock.time()
    secret = new_secret()
    hook = WebhookEndpoint(new_id(now), app.name, body.url, tuple(dict.fromkeys(body.events)), (secret,), now)
    await runtime.store.outbound.add_webhook(hook)
    return WebhookCreated(**_out(hook).model_dump(), secret=secret)


@router.get("/v1/webhooks", responses=errors.responses(401, 503), summary="The app's webhook endpoints")
async def list_webhooks(app: Producer, state: State) -> Webhooks:
    return Webhooks(items=[_out(h) for h in await state.runtime.store.outbound.webhooks(app.name)])


@router.delete(
    "/v1/webhooks/{hook_id}",
    status_code=204,
    responses=errors.responses(401, 404, 422, 503),
    summary="Remove a webhook endpoint",
)
async def remove_webhook(hook_id: IdPath, app: Producer, state: State) -> Response:
    if not await state.runtime.store.outbound.remove_webhook(app.name, hook_id):
        raise NotFoundError("no such webhook")
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/{hook_id}/rotate-secret",
    responses=errors.responses(401, 404, 422, 503),
    summary="Rotate a webhook's signing secret (the previous one keeps signing for a day)",
)
async def rotate_secret(hook_id: IdPath, app: Producer, state: State) -> SecretRotated:
    runtime = state.runtime
    secret = new_secret()
    until = runtime.clock.time() + ROTATION_OVERLAP
    if await runtime.store.outbound.rotate_secret(app.name, hook_id, secret, until) is None:
        raise NotFoundError("no such webhook")
    return SecretRotated(id=hook_id, secret=secret, previous_valid_until=until)


@router.put(
    "/v1/users/{user_id}",
    responses=errors.responses(400, 401, 413, 415, 422, 503),
    summary="Set a user's profile (email address, locale, time zone, name)",
)
async def put_profile(user_id: UserPath, body: ProfileIn, app: Producer, state: State) -> ProfileOut:
    profile = Profile(app.name, user_id, body.email, body.locale, body.time_zone, body.name)
    await state.runtime.store.outbound.set_profile(profile)
    return ProfileOut(user=user_id, **body.model_dump())


@router.get(
    "/v1/events/{event_id}/deliveries",
    responses=errors.responses(401, 422, 503),
    summary="An event's offline deliveries and their status",
)
async def event_deliveries(
    event_id: EventPath, app: Producer, state: State, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> DeliveriesPage:
    rows = await state.runtime.store.outbound.for_event(app.name, event_id, limit)
    return DeliveriesPage(
        items=[
            DeliveryOut(
                id=r.id,
                user=r.user,
                seq=r.seq,
                channel=r.channel,
                target=r.target,
                status=r.status,
                attempts=r.attempts,
                next_at=r.next_at,
                last_error=r.last_error,
                updated_at=r.updated_at,
            )
            for r in rows
        ]
    )

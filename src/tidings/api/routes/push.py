"""A user's own offline targets: Web Push subscriptions (and the app's VAPID public key to make them with)
and FCM devices. All user-scoped (user token): a user sees and deletes only their own.

``POST /v1/me/push-subscriptions`` takes the browser's ``PushSubscription.toJSON()``; the same endpoint again
(re-subscribing) updates its keys and owner and keeps its id. Endpoints must be https in production mode.
``POST /v1/me/devices`` registers an FCM registration token; the same token again moves it to this user.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Response

from tidings.api import errors
from tidings.api.channel_schemas import (
    DeviceIn,
    DeviceOut,
    Devices,
    PushSubscriptionIn,
    PushSubscriptionOut,
    PushSubscriptions,
    VapidKey,
)
from tidings.api.deps import State, User
from tidings.api.routing import json_router
from tidings.core.delivery import Device, PushSubscription
from tidings.core.ids import new_id
from tidings.errors import InvalidInputError, NotFoundError
from tidings.sender import new_vapid_pair

router = json_router(tags=["push"])

IdPath = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z]+$")]


@router.get(
    "/v1/push/vapid-public-key", responses=errors.responses(401, 503), summary="The app's VAPID public key"
)
async def vapid_public_key(caller: User, state: State) -> VapidKey:
    app, _ = caller
    runtime = state.runtime
    _, public = await runtime.store.outbound.vapid(app.name, new_vapid_pair, runtime.clock.time())
    return VapidKey(public_key=public)


@router.post(
    "/v1/me/push-subscriptions",
    status_code=201,
    responses=errors.responses(400, 401, 413, 415, 422, 503),
    summary="Register this browser's Web Push subscription",
)
async def add_subscription(body: PushSubscriptionIn, caller: User, state: State) -> PushSubscriptionOut:
    app, user = caller
    runtime = state.runtime
    if runtime.settings.production and not body.endpoint.startswith("https://"):
        raise InvalidInputError("endpoint must be an https URL")
    now = runtime.clock.time()
    sub = PushSubscription(new_id(now), app.name, user, body.endpoint, body.keys.p256dh, body.keys.auth, now)
    stored = await runtime.store.outbound.add_subscription(sub)
    return PushSubscriptionOut(id=stored.id, endpoint=stored.endpoint, created_at=stored.created_at)


@router.get(
    "/v1/me/push-subscriptions", responses=errors.responses(401, 503), summary="My push subscriptions"
)
async def list_subscriptions(caller: User, state: State) -> PushSubscriptions:
    app, user = caller
    subs = await state.runtime.store.outbound.subscriptions(app.name, user)
    return PushSubscriptions(
        items=[PushSubscriptionOut(id=s.id, endpoint=s.endpoint, created_at=s.created_at) for s in subs]
    )


@router.delete(
    "/v1/me/push-subscriptions/{sub_id}",
    status_code=204,
    responses=errors.responses(401, 404, 422, 503),
    summary="Remove one of my push subscriptions",
)
async def remove_subscription(sub_id: IdPath, caller: User, state: State) -> Response:
    app, user = caller
    if not await state.runtime.store.outbound.remove_subscription(app.name, user, sub_id):
        raise NotFoundError("no such push subscription")
    return Response(status_code=204)


@router.post(
    "/v1/me/devices",
    status_code=201,
    responses=errors.responses(400, 401, 413, 415, 422, 503),
    summary="Register a mobile device (FCM registration token)",
)
async def add_device(body: DeviceIn, caller: User, state: State) -> DeviceOut:
    app, user = caller
    runtime = state.runtime
    now = runtime.clock.time()
    stored = await runtime.store.outbound.add_device(
        Device(new_id(now), app.name, user, body.platform, body.token, now)
    )
    return DeviceOut(id=stored.id, platform=stored.platform, created_at=stored.created_at)


@router.get("/v1/me/devices", responses=errors.responses(401, 503), summary="My devices")
async def list_devices(caller: User, state: State) -> Devices:
    app, user = caller
    found = await state.runtime.store.outbound.devices(app.name, user)
    return Devices(items=[DeviceOut(id=d.id, platform=d.platform, created_at=d.created_at) for d in found])


@router.delete(
    "/v1/me/devices/{device_id}",
    status_code=204,
    responses=errors.responses(401, 404, 422, 503),
    summary="Remove one of my devices",
)
async def remove_device(device_id: IdPath, caller: User, state: State) -> Response:
    app, user = caller
    if not await state.runtime.store.outbound.remove_device(app.name, user, device_id):
        raise NotFoundError("no such device")
    return Response(status_code=204)

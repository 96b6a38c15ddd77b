"""Topic subscribers (e.g. a user's followers), managed by the producer.

``PUT`` and ``DELETE`` are idempotent and answer 200 either way; ``changed`` tells whether anything did.
``GET`` lists subscribers in ascending user-id order, a page at a time, with an opaque cursor.
``PUT /v1/topics/{topic}/subscribers`` with a JSON list of user ids imports many at once (one transaction,
at most ``max_bulk_subscribers`` ids), idempotently: ids already subscribed are left as they are.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Path, Query

from tidings.api import cursors, errors
from tidings.api.deps import Producer, State
from tidings.api.routing import json_router
from tidings.api.schemas import (
    NO_CONTROL_CHARS,
    TOPIC_PATTERN,
    BulkSubscribed,
    SubscribersPage,
    Subscription,
    UserId,
)
from tidings.errors import LimitExceededError

router = json_router(tags=["topics"])

TopicPath = Annotated[str, Path(pattern=TOPIC_PATTERN, description="e.g. followers:bob")]
UserPath = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_CONTROL_CHARS)]
SUBSCRIBER = "/v1/topics/{topic}/subscribers/{user_id}"


@router.put(SUBSCRIBER, responses=errors.responses(401, 422, 503), summary="Subscribe a user to a topic")
async def subscribe(topic: TopicPath, user_id: UserPath, app: Producer, state: State) -> Subscription:
    changed = await state.runtime.store.topics.subscribe(app.name, topic, user_id)
    return Subscription(topic=topic, user_id=user_id, subscribed=True, changed=changed)


@router.delete(SUBSCRIBER, responses=errors.responses(401, 422, 503), summary="Unsubscribe a user")
async def unsubscribe(topic: TopicPath, user_id: UserPath, app: Producer, state: State) -> Subscription:
    changed = await state.runtime.store.topics.unsubscribe(app.name, topic, user_id)
    return Subscription(topic=topic, user_id=user_id, subscribed=False, changed=changed)


@router.get(
    "/v1/topics/{topic}/subscribers",
    responses=errors.responses(400, 401, 422, 503),
    summary="List a topic's subscribers",
)
async def subscribers(
    topic: TopicPath,
    app: Producer,
    state: State,
    cursor: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SubscribersPage:
    after = cursors.string_field(cursors.decode(cursor), "after") if cursor is not None else None
    users = await state.runtime.store.topics.page(app.name, topic, after, limit + 1)
    more = len(users) > limit
    users = users[:limit]
    return SubscribersPage(items=users, next=cursors.encode({"after": users[-1]}) if more else None)


@router.put(
    "/v1/topics/{topic}/subscribers",
    responses=errors.responses(400, 401, 413, 415, 422, 503),
    summary="Subscribe many users at once (a bulk import of followers); idempotent",
    description="The body is a JSON list of user ids, at most `max_bulk_subscribers` (default 10,000) of "
    "them; duplicates count once. Ids already subscribed are left as they are, so repeating an import (or a "
    "part of one, after a failure) is safe. The whole list is added in one transaction: all or nothing.",
)
async def subscribe_many(
    topic: TopicPath,
    users: Annotated[list[UserId], Body(min_length=1, description="user ids")],
    app: Producer,
    state: State,
) -> BulkSubscribed:
    limit = state.runtime.settings.max_bulk_subscribers
    distinct = list(dict.fromkeys(users))
    if len(distinct) > limit:
        raise LimitExceededError(f"at most {limit} user ids per request")
    added = await state.runtime.store.topics.subscribe_many(app.name, topic, distinct)
    return BulkSubscribed(topic=topic, added=added, received=len(distinct))

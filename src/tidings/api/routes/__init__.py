"""The HTTP routes, one module per resource; ``ROUTERS`` is what ``create_app`` includes."""

from __future__ import annotations

from fastapi import APIRouter

from tidings.api.routes import (
    admin,
    decisions,
    events,
    lifecycle,
    me,
    ops,
    preferences,
    push,
    topics,
    unsubscribe,
    users,
    webhooks,
)

ROUTERS: tuple[APIRouter, ...] = (
    events.router,
    decisions.router,
    topics.router,
    me.router,
    preferences.router,
    push.router,
    webhooks.router,
    lifecycle.router,
    unsubscribe.router,
    admin.router,
    ops.router,
    users.router,
)

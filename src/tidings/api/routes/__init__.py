"""The HTTP routes, one module per resource; ``ROUTERS`` is what ``create_app`` includes."""

from __future__ import annotations

from fastapi import APIRouter

from tidings.api.routes import (
    admin,
    decisions,
    events,
    me,
    ops,
    preferences,
    push,
    topics,
    unsubscribe,
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
    unsubscribe.router,
    admin.router,
    ops.router,
)

"""The HTTP routes, one module per resource; ``ROUTERS`` is what ``create_app`` includes."""

from __future__ import annotations

from fastapi import APIRouter

from tidings.api.routes import admin, events, me, ops, topics

ROUTERS: tuple[APIRouter, ...] = (events.router, topics.router, me.router, admin.router, ops.router)

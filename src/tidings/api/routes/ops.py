"""Probes and metrics: ``/healthz`` (the process answers), ``/readyz`` (its backends do), ``/metrics``.

These stay open while the process drains, so orchestrators can watch it go; ``/readyz`` then answers 503.
``router`` holds all three (``probes`` and ``metrics_router``); a process whose ``metrics_port`` is not -1
leaves ``/metrics`` off its main listener and serves ``scrape_app`` on a listener of its own instead, so
scrapes never ride the public routes. Either way the broker's lag behind ``tidings_log_lag`` is read at most
once a second (``Runtime.refresh_lag``), however often it is scraped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import structlog
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from tidings.api import errors
from tidings.api.deps import State
from tidings.api.schemas import Health, Ready
from tidings.observability import metrics
from tidings.runtime import Runtime

probes = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])
log = structlog.get_logger("tidings.api")

PROBE_TIMEOUT = 2.0


@probes.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


async def _probe(name: str, probe: Awaitable[object]) -> bool:
    """Whether the probe finished in time; any failure means not ready, so nothing is re-raised."""
    try:
        await asyncio.wait_for(probe, PROBE_TIMEOUT)
    except Exception as exc:
        log.warning("readiness probe failed", dependency=name, error=type(exc).__name__)
        return False
    return True


async def _update_lag(state: State) -> None:
    state.runtime.funnel.lag(await state.runtime.log.lag())


@probes.get(
    "/readyz",
    responses={
        200: {"model": Ready},
        503: {"model": errors.ErrorBody, "description": "Draining, or a backend is unreachable"},
    },
    summary="Readiness: the store and the event log answer",
)
async def readyz(state: State) -> Response:
    runtime = state.runtime
    results = {
        "store": await _probe("store", runtime.store.ping()),
        "log": await _probe("log", _update_lag(state)),
    }
    checks = {name: "ok" if ok else "unreachable" for name, ok in results.items()}
    failing = (["draining"] if runtime.draining else []) + [name for name, ok in results.items() if not ok]
    if failing:
        message = f"not ready: {', '.join(failing)}"
        return errors.error_response(503, "not_ready", message, {"Retry-After": "1"}, checks=checks)
    return JSONResponse(Ready(status="ready", checks=checks).model_dump())


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}},
    summary="Prometheus metrics",
)
async def prometheus(state: State) -> Response:
    return await _scrape(state.runtime)


async def _scrape(runtime: Runtime) -> Response:
    # The lag as of this scrape, or of the last read under a second ago; the worker updates it too.
    await _probe("log", runtime.refresh_lag())
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


router = APIRouter()
router.include_router(probes)
router.include_router(metrics_router)


def scrape_app(runtime: Runtime) -> Starlette:
    """The separate metrics listener's app: ``GET /metrics`` and ``GET /healthz``, nothing else (404)."""

    async def scrape(request: Request) -> Response:
        return await _scrape(runtime)

    async def health(request: Request) -> Response:
        return JSONResponse(Health(status="ok").model_dump())

    return Starlette(
        routes=[Route("/metrics", scrape, methods=["GET"]), Route("/healthz", health, methods=["GET"])]
    )

"""The JS SDK (``/sdk/tidings.js``), the demo inbox page (``/demo``) and, only with ``settings.demo`` on, the
demo's endpoints (``/demo/api/…``, see ``tidings.demo.api``).

Everything is served from files inside the Python package: no Node at run time, no CDN, no external asset.
Without demo mode, ``/demo`` is a short page that says how to turn it on, and ``/demo/api/…`` answers 404.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from tidings.api.pages import PAGE_HEADERS
from tidings.runtime import Runtime

STATIC = Path(__file__).parent / "static"
SDK = Path(__file__).parent.parent / "sdk"


class PublicFiles(StaticFiles):
    """Files any origin may load: a page elsewhere imports ``/sdk/tidings.js`` as a module script, which
    browsers fetch with CORS. The SDK is public code, and no credentials go with it. ``Service-Worker-Allowed``
    lets a page register ``/sdk/sw.js`` with a wider scope than ``/sdk/`` (the SDK's default needs none)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Service-Worker-Allowed"] = "/"
        return response


def install(app: FastAPI, runtime: Runtime) -> None:
    """Adds the demo routes to ``app`` (the demo-only endpoints only when ``settings.demo`` is on)."""
    demo_on = runtime.settings.demo
    page = (STATIC / ("index.html" if demo_on else "off.html")).read_text(encoding="utf-8")

    async def demo_page(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    app.add_route("/demo", demo_page, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/demo/static", StaticFiles(directory=STATIC), name="demo-static")
    app.mount("/sdk", PublicFiles(directory=SDK), name="sdk")
    if demo_on:
        from tidings.demo.api import DemoApp, router

        app.state.demo = DemoApp(runtime)
        app.include_router(router)

"""The admin dashboard: ``GET /admin`` (a static page with live charts and a "where is my notification"
search) and its data endpoints under ``/admin/api/``, which take the admin token.

The page loads without a token: it holds no data. The token is typed into the page once and kept in the
tab's ``sessionStorage`` (gone when the tab closes; never a cookie, so no other site can ride on it). Every
number on the page is about the process that serves it: behind a load balancer, each replica has its own.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from tidings.api.pages import PAGE_HEADERS
from tidings.runtime import Runtime

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI, runtime: Runtime) -> None:
    """Adds ``/admin``, ``/admin/static/…`` and ``/admin/api/…`` to ``app`` (built by ``create_app``, whose
    state the admin check needs). Idempotent."""
    if getattr(app.state, "admin_installed", False):
        return
    app.state.admin_installed = True
    from tidings.admin.routes import router

    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if not runtime.settings.admin_token:
        page = admin_off(page)

    async def admin_page(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    app.add_route("/admin", admin_page, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/admin/static", StaticFiles(directory=STATIC), name="admin-static")
    app.include_router(router)


def admin_off(page: str) -> str:
    """The page as served while the admin routes are off: the "start with TIDINGS_ADMIN_TOKEN" note shown
    (without JavaScript too), the token form hidden, and ``data-admin="off"`` on ``<html>`` for the script."""
    page = page.replace('<html lang="en">', '<html lang="en" data-admin="off">', 1)
    page = page.replace('<p id="admin-off" class="off" hidden>', '<p id="admin-off" class="off">', 1)
    return page.replace(
        '<form id="token-form" class="token"', '<form id="token-form" class="token" hidden', 1
    )

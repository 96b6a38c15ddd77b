"""``GET /``: a small page of links to what this process serves, so a first visit finds its way (not a 404).

Built once per app from the process's roles and settings: the demo is listed only while it is on, and the
admin page says whether its routes are on. No data, no script: it is safe to show to anyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse

from tidings import __version__
from tidings.api.pages import PAGE_HEADERS
from tidings.settings import Settings


def links(settings: Settings, roles: Iterable[str]) -> list[tuple[str, str]]:
    """(path, what it is) for every page this process serves, in the order a newcomer wants them."""
    roles = frozenset(roles)
    out: list[tuple[str, str]] = []
    if "api" in roles and settings.demo:
        out.append(("/demo", "the demo: a small social app on the JS SDK, live"))
    out.append(("/docs", "HTTP API docs (OpenAPI, interactive)"))
    out.append(("/asyncapi.json", "WebSocket and SSE protocol (AsyncAPI 3)"))
    if settings.admin_token:
        out.append(("/admin", "admin dashboard (takes TIDINGS_ADMIN_TOKEN)"))
    else:
        out.append(("/admin", "admin dashboard: off, start with TIDINGS_ADMIN_TOKEN=… to turn it on"))
    out += [("/healthz", "liveness"), ("/readyz", "readiness (the backends answer)")]
    if settings.metrics_listen_port is None:  # else it is on the metrics listener, not on this port
        out.append(("/metrics", "Prometheus metrics"))
    return out


def render(settings: Settings, roles: Iterable[str]) -> str:
    roles = sorted(roles)
    items = "\n".join(
        f'    <li><a href="{escape(path)}">{escape(path)}</a>: {escape(text)}</li>'
        for path, text in links(settings, roles)
    )
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Tidings</title>
  <link rel="icon" href="data:,">
</head>
<body>
  <h1>Tidings {escape(__version__)}</h1>
  <p>Real-time notifications for social products. This process runs: {escape(", ".join(roles))}.</p>
  <ul>
{items}
  </ul>
</body>
</html>
"""


def install(app: FastAPI, settings: Settings, roles: Iterable[str]) -> None:
    page = render(settings, roles)

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    app.add_route("/", home, methods=["GET", "HEAD"], include_in_schema=False)

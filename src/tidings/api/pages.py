"""Headers of the HTML pages Tidings serves (``/demo``, ``/admin``)."""

from __future__ import annotations

# Only the page's own files, only this server ('self' covers ws: of the same host); no inline script or
# style, so an injected string cannot run.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

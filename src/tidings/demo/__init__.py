"""The demo inbox page (``/demo``) and the JS SDK route (placeholder until the SDK lands)."""

from __future__ import annotations

from fastapi import FastAPI

from tidings.runtime import Runtime


def install(app: FastAPI, runtime: Runtime) -> None:
    """Adds the demo routes to ``app`` (the demo-only endpoints only when ``settings.demo`` is on)."""
    return None

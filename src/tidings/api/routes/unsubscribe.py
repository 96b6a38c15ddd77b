"""One-click unsubscribe (RFC 8058): the ``List-Unsubscribe`` URL of every mail.

``POST /v1/unsubscribe/{token}`` (what mail clients send, body ``List-Unsubscribe=One-Click``) turns email off
for the token's category in the user's preferences, idempotently. ``GET`` only shows a small page with a
button that posts: link scanners and prefetchers follow GETs, and must not unsubscribe anyone. A token is
checked with the app's secret (``channels.unsubscribe``); a bad one answers 404 without saying why.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import html
from typing import Annotated

import orjson
from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from tidings.api import errors
from tidings.api.channel_schemas import Unsubscribed
from tidings.api.deps import State
from tidings.auth import previous_secret
from tidings.channels.unsubscribe import BadToken, Unsubscribe, verify
from tidings.core.rules import NO_PREFERENCES
from tidings.errors import NotFoundError
from tidings.runtime import Runtime

router = APIRouter(tags=["unsubscribe"])

TokenPath = Annotated[str, Path(min_length=10, max_length=2000, pattern=r"^[A-Za-z0-9_.=-]+$")]
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Unsubscribe</title>
<meta name="viewport" content="width=device-width"></head><body style="font-family:sans-serif;margin:3em">
<h1>Unsubscribe</h1><p>Stop emails about <strong>{category}</strong>?</p>
<form method="post"><button type="submit">Unsubscribe</button></form></body></html>"""


async def _checked(runtime: Runtime, token: str) -> Unsubscribe:
    parts = token.split(".")
    try:
        app_name = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))[0]
        app = await runtime.store.apps.get(str(app_name)) if isinstance(app_name, str) else None
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error, orjson.JSONDecodeError):
        app = None
    # During a secret rotation's overlap, links signed with the replaced secret still work (``auth``).
    if app is not None:
        for secret in (app.jwt_secret, previous_secret(app, runtime.clock.time())):
            try:
                return _verified(token, app.name, secret)
            except BadToken:
                continue
    raise NotFoundError("this unsubscribe link is not valid")


def _verified(token: str, app: str, secret: str | None) -> Unsubscribe:
    return verify(token, lambda name: secret if name == app else None)


@router.get("/v1/unsubscribe/{token}", response_class=HTMLResponse, include_in_schema=False)
async def confirm_page(token: TokenPath, state: State) -> HTMLResponse:
    what = await _checked(state.runtime, token)
    return HTMLResponse(PAGE.format(category=html.escape(what.category)))


@router.post(
    "/v1/unsubscribe/{token}",
    responses=errors.responses(404, 422, 503),
    summary="One-click unsubscribe (RFC 8058): email off for the link's category",
)
async def unsubscribe(token: TokenPath, state: State) -> Unsubscribed:
    what = await _checked(state.runtime, token)
    store = state.runtime.store.preferences
    prefs = await store.user(what.app, what.user) or NO_PREFERENCES
    categories = {name: dict(channels) for name, channels in prefs.categories.items()}
    categories.setdefault(what.category, {})["email"] = False
    await store.set_user(what.app, what.user, dataclasses.replace(prefs, categories=categories))
    return Unsubscribed(unsubscribed=True, category=what.category)

"""Who gets what, by which channel: a user's preferences (``/v1/me/preferences``) and the app's rules
(``/v1/rules``, for the producer). Both are stored whole and replaced whole by ``PUT``; the fan-out reads
them (an app's rules are cached for a few seconds per worker process). See ``tidings.core.rules``.
"""

from __future__ import annotations

from fastapi import Response

from tidings.api import errors
from tidings.api.deps import Producer, State, User
from tidings.api.routing import json_router
from tidings.api.schemas import PreferenceDefaults, PreferencesIn, PreferencesOut, RulesIn
from tidings.core.rules import NO_PREFERENCES, AppRules, UserPreferences, prefs_to_json, rules_to_json

router = json_router(tags=["preferences"])

PREFERENCES = "/v1/me/preferences"
RULES = "/v1/rules"

PREFERENCES_HELP = """\
Per **category** (an event type is its own category unless the app's rules map it to one) and **channel**
(`in_app`, `web_push`, `email`, `webhook`, `mobile_push`): on or off; a channel left out keeps the app's
default (shown in `defaults`). `in_app` off suppresses the category: offline channels deliver inbox notifications.
**Mutes**: actor ids, and object ids or threads (`object.thread`), whose events never notify you.
**Quiet hours** in your time zone: web push and email wait until they end; the inbox is still updated.
Categories the app marks **critical** (security...) bypass all of these.
"""

RULES_HELP = """\
The app's notification rules. Per event **type**: its `category`, its aggregation window (events with the
same `group_key` within it become one notification that `replaces` the previous one; default 3600 s, 0: off)
and its `ttl` (an event processed later than that is dropped, and the drop recorded). Per **category**:
`critical` (bypasses preferences, mutes, quiet hours and caps) and default channels. App-wide default
`channels`; per-user `caps` of the offline channels (e.g. at most 10 web pushes an hour; the excess is
deferred into a digest, never dropped); `digest_delay` for low-priority offline deliveries.
The senders deliver web push, email, webhooks and mobile push (`mobile_push`, off by default); each
delivery's status is at `GET /v1/events/{id}/deliveries`.
"""


@router.get(
    PREFERENCES,
    responses=errors.responses(401, 503),
    summary="My notification preferences, and the app's defaults",
    description=PREFERENCES_HELP,
)
async def get_preferences(caller: User, state: State) -> PreferencesOut:
    app, user = caller
    store = state.runtime.store.preferences
    prefs = await store.user(app.name, user) or NO_PREFERENCES
    rules = await store.rules(app.name) or AppRules()
    return _preferences_out(prefs, rules)


@router.put(
    PREFERENCES,
    responses=errors.responses(400, 401, 413, 415, 422, 503),
    summary="Replace my notification preferences",
    description=PREFERENCES_HELP,
)
async def put_preferences(body: PreferencesIn, caller: User, state: State) -> PreferencesOut:
    app, user = caller
    prefs = body.to_preferences()
    store = state.runtime.store.preferences
    await store.set_user(app.name, user, prefs)
    return _preferences_out(prefs, await store.rules(app.name) or AppRules())


def _preferences_out(prefs: UserPreferences, rules: AppRules) -> PreferencesOut:
    defaults = rules_to_json(rules)
    return PreferencesOut(
        **prefs_to_json(prefs),
        defaults=PreferenceDefaults(channels=defaults["channels"], categories=defaults["categories"]),
    )


@router.get(
    RULES,
    response_class=Response,
    responses={200: {"model": RulesIn}, **errors.responses(401, 503)},
    summary="The app's notification rules",
    description=RULES_HELP,
)
async def get_rules(app: Producer, state: State) -> Response:
    rules = await state.runtime.store.preferences.rules(app.name) or AppRules()
    return _rules_response(rules)


@router.put(
    RULES,
    response_class=Response,
    responses={200: {"model": RulesIn}, **errors.responses(400, 401, 413, 415, 422, 503)},
    summary="Replace the app's notification rules",
    description=RULES_HELP,
)
async def put_rules(body: RulesIn, app: Producer, state: State) -> Response:
    rules = body.to_rules()
    await state.runtime.store.preferences.set_rules(app.name, rules)
    return _rules_response(rules)


def _rules_response(rules: AppRules) -> Response:
    return Response(
        RulesIn.model_validate(rules_to_json(rules)).model_dump_json(), media_type="application/json"
    )

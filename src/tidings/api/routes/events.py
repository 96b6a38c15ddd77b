"""Producers send events: ``POST /v1/events`` and ``POST /v1/events/batch``.

An event is answered as accepted only after ``EventLog.append`` returned, i.e. once it is durable. A repeat
of an Idempotency-Key with the same body answers 202 with the first event's id (and the header
``Idempotent-Replayed: true``) and appends nothing; with another body, 422; while the first request is still
in flight in this process, 409. A batch answers 200 with one result per item, in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from tidings import auth
from tidings.api import errors
from tidings.api.deps import ApiState, Producer, State
from tidings.api.routing import direct_route, json_router
from tidings.api.schemas import Accepted, BatchEventIn, BatchIn, BatchOut, EventIn, ItemError
from tidings.core.ids import new_id
from tidings.core.models import App, Event
from tidings.errors import (
    AuthError,
    IdempotencyMismatchError,
    LimitExceededError,
    TidingsError,
    UnavailableError,
)
from tidings.observability import tracing
from tidings.ports import Append, Appended

router = json_router(tags=["events"])

LAG_TTL = 1.0  # seconds the log's lag is reused for admission: counting it is not free on every engine


class OverloadedError(UnavailableError):
    """The event log is too far behind for this priority (503 with Retry-After): low first, then normal."""

    code = "overloaded"


class LagGate:
    """Load shedding by priority: past ``shed_low_lag`` events in the log not yet fanned out, low-priority
    events are refused; past ``shed_normal_lag``, normal ones too; high priority is never shed here (the
    per-key rate limit still applies). Refused means not accepted: the producer retries after Retry-After."""

    def __init__(self) -> None:
        self._lag = 0
        self._read_at: float | None = None

    async def shed(self, state: State) -> frozenset[str]:
        """The priorities refused right now. One count at a time: requests arriving while it runs go by the
        previous one (at most ``LAG_TTL`` plus one count old) instead of each starting its own count."""
        runtime = state.runtime
        now = runtime.clock.monotonic()
        if self._read_at is None or now - self._read_at >= LAG_TTL:
            self._read_at = now
            self._lag = await runtime.log.lag()
        settings = runtime.settings
        if self._lag > settings.shed_normal_lag:
            return frozenset({"low", "normal"})
        return frozenset({"low"}) if self._lag > settings.shed_low_lag else frozenset()


async def shed_priorities(request: Request, state: State) -> frozenset[str]:
    gate = getattr(request.app.state, "lag_gate", None)
    if gate is None:
        gate = request.app.state.lag_gate = LagGate()
    return await gate.shed(state)


def _overloaded(priority: str) -> OverloadedError:
    return OverloadedError(f"overloaded: {priority}-priority events are refused for now", retry_after=5.0)


KeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a request safely: the same key and body answer with the same event id.",
    ),
]


async def rate_limited_producer(state: State, app: Producer) -> App:
    """The producer, charged one event. Dependencies run before body validation: bad bodies cost too."""
    await state.limiter.charge(app.api_key_hash, 1)
    return app


def _check_recipients(event: EventIn, max_recipients: int) -> None:
    if event.recipients is not None and len(event.recipients) > max_recipients:
        raise LimitExceededError(f"recipients: at most {max_recipients} user ids per event")


async def _append(
    state: State, request: Request, app: App, items: Sequence[tuple[EventIn, str | None]]
) -> list[Appended | Exception]:
    """Appends events (durable when this returns) and counts the ones that are new.

    Traced as ``api.append``, a server span under the request's ``traceparent``; its context goes into
    every event (``Event.trace``), so the fan-out, in whatever process, continues the same trace.
    """
    now = state.runtime.clock.time()
    route = str(getattr(request.scope.get("route"), "path", ""))  # the template, never a raw path
    attributes = {"http.request.method": request.method, "http.route": route, "tidings.app": app.name}
    with tracing.server_span("api.append", request.headers, attributes) as span:
        # An unsampled request has no span, but its context still travels: the fan-out then makes none either.
        carrier = tracing.carrier_of(span) or tracing.incoming(request.headers)
        appends = [
            Append(
                _event(event, new_id(now), app, now, key, carrier),
                event.body_hash() if key is not None else None,
            )
            for event, key in items
        ]
        if span is not None:
            span.set_attribute("tidings.event.ids", [append.event.id for append in appends])
        results = await state.runtime.log.append(appends)
    # The trace id only of a sampled trace: one a tracing backend can show.
    trace_id = carrier["traceparent"][3:35] if carrier is not None and tracing.sampled(carrier) else None
    new = [
        append.event
        for append, result in zip(appends, results, strict=True)
        if isinstance(result, Appended) and not result.duplicate
    ]
    state.runtime.funnel.accepted(new, trace_id)
    return results


def _event(
    event: EventIn, event_id: str, app: App, now: float, key: str | None, carrier: dict[str, str] | None
) -> Event:
    accepted = event.to_event(event_id=event_id, app=app.name, accepted_at=now, idempotency_key=key)
    return dataclasses.replace(accepted, trace=carrier) if carrier is not None else accepted


# What FastAPI's dependency solver did per request, by hand (``DirectRoute``): the same checks in the same
# order, the same errors. The endpoints below keep their FastAPI signatures for the OpenAPI document.
_KEY_HEADER = TypeAdapter(Annotated[str | None, Field(min_length=1, max_length=255)])
_EVENT = TypeAdapter(EventIn)
_BATCH = TypeAdapter(BatchIn)


def _validated(adapter: TypeAdapter[Any], value: Any, loc: tuple[str, ...], found: list[Any]) -> Any:
    """``value`` validated, or None with its errors (located as FastAPI locates them) added to ``found``."""
    try:
        return adapter.validate_python(value, from_attributes=True)
    except ValidationError as exc:
        found.extend({**err, "loc": (*loc, *err["loc"])} for err in exc.errors(include_url=False))
        return None


async def _direct_producer(request: Request) -> tuple[ApiState, App]:
    state: ApiState = request.app.state.api
    return state, await auth.authenticate_producer(state.runtime, _api_key(request), state.apps)


def _api_key(request: Request) -> str:
    """The credential as the ``ApiKey`` scheme (``HTTPBearer``, ``auto_error=False``) and ``deps.producer``
    read it, without the credentials model: 401 without a non-empty ``Bearer`` one."""
    authorization = request.headers.get("authorization")
    scheme, _, credential = (authorization or "").partition(" ")
    credential = credential.strip()
    if not (authorization and scheme and credential) or scheme.lower() != "bearer":
        raise AuthError("missing Authorization: Bearer header")
    return credential


class _SubResponse(Response):
    """What the endpoint may set headers on (as FastAPI's own): headers only, none of its own, so none is
    doubled when they are copied into the answer (a second ``content-length: 0`` would cut the body off)."""

    def __init__(self) -> None:
        self.raw_headers = []


def _answer_json(model: BaseModel, status: int, response: Response) -> Response:
    answer = Response(model.__pydantic_serializer__.to_json(model), status, media_type="application/json")
    answer.raw_headers.extend(
        response.raw_headers
    )  # what the endpoint set (Idempotent-Replayed, Retry-After)
    return answer


async def _post_event_direct(request: Request, body: Any) -> Response:
    state, app = await _direct_producer(request)
    app = await rate_limited_producer(state, app)
    found: list[Any] = []
    key = request.headers.get("idempotency-key")
    if key is not None:
        key = _validated(_KEY_HEADER, key, ("header", "Idempotency-Key"), found)
    event = _validated(_EVENT, body, ("body",), found)
    if found:
        raise RequestValidationError(found, body=body)
    response = _SubResponse()
    accepted = await post_event(event, state, request, response, app, key)
    return _answer_json(accepted, 202, response)


async def _post_batch_direct(request: Request, body: Any) -> Response:
    state, app = await _direct_producer(request)
    found: list[Any] = []
    batch = _validated(_BATCH, body, ("body",), found)
    if found:
        raise RequestValidationError(found, body=body)
    response = _SubResponse()
    return _answer_json(await post_batch(batch, state, request, response, app), 200, response)


async def post_event(
    event: EventIn,
    state: State,
    request: Request,
    response: Response,
    app: Annotated[App, Depends(rate_limited_producer)],
    idempotency_key: KeyHeader = None,
) -> Accepted:
    _check_recipients(event, state.runtime.settings.max_recipients)
    if event.priority in await shed_priorities(request, state):
        raise _overloaded(event.priority)
    with state.in_flight.hold(app.name, [idempotency_key] if idempotency_key is not None else []):
        (result,) = await _append(state, request, app, [(event, idempotency_key)])
    if isinstance(result, Exception):
        raise result
    if result.duplicate:
        response.headers["Idempotent-Replayed"] = "true"
    return Accepted(id=result.event_id)


@dataclass
class _Item:
    """A batch item on its way: validated (``event``), refused (``error``) or a repeat of item ``same_as``."""

    event: BatchEventIn | None = None
    error: ItemError | None = None
    same_as: int | None = None


def _item_error(code: str, message: str) -> ItemError:
    return ItemError(error=errors.ErrorDetail(code=code, message=message))


def _validate_item(raw: Any, max_recipients: int) -> _Item:
    try:
        event = BatchEventIn.model_validate(raw)
        _check_recipients(event, max_recipients)
    except ValidationError as exc:
        message = errors.validation_message(errors.validation_details(exc.errors()))
        return _Item(error=_item_error("validation_failed", message))
    except TidingsError as exc:
        return _Item(error=_item_error(exc.code, exc.message))
    return _Item(event=event)


def _resolve_keys(items: list[_Item], state: State, app: App) -> None:
    """Items repeating an earlier item's key become ``same_as`` it (or a mismatch); keys in flight elsewhere
    are refused with 409's code, so each item gets its own answer."""
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        key = item.event.idempotency_key if item.event is not None else None
        if item.event is None or key is None:
            continue
        if state.in_flight.is_held(app.name, key):
            item.event, item.error = None, _item_error("idempotency_key_in_flight", "key still in flight")
        elif key in first:
            earlier = items[first[key]].event
            assert earlier is not None
            if earlier.body_hash() == item.event.body_hash():
                item.event, item.same_as = None, first[key]
            else:
                mismatch = IdempotencyMismatchError("idempotency_key was used with another body")
                item.event, item.error = None, _item_error(mismatch.code, mismatch.message)
        else:
            first[key] = index


def _answer(result: Appended | Exception) -> Accepted | ItemError:
    if isinstance(result, Appended):
        return Accepted(id=result.event_id)
    if isinstance(result, TidingsError):
        return _item_error(result.code, result.message)
    raise result


async def post_batch(
    batch: BatchIn, state: State, request: Request, response: Response, app: Producer
) -> BatchOut:
    settings = state.runtime.settings
    if len(batch.events) > settings.max_batch_events:
        raise LimitExceededError(f"events: at most {settings.max_batch_events} per batch")
    await state.limiter.charge(app.api_key_hash, len(batch.events))
    items = [_validate_item(raw, settings.max_recipients) for raw in batch.events]
    _resolve_keys(items, state, app)
    _shed(items, await shed_priorities(request, state), response)
    to_append = [(index, item.event) for index, item in enumerate(items) if item.event is not None]
    keys = [event.idempotency_key for _, event in to_append if event.idempotency_key is not None]
    results: list[Accepted | ItemError | None] = [item.error for item in items]
    if to_append:
        with state.in_flight.hold(app.name, keys):
            appended = await _append(
                state, request, app, [(event, event.idempotency_key) for _, event in to_append]
            )
        for (index, _), result in zip(to_append, appended, strict=True):
            results[index] = _answer(result)
    for refused in results:  # each refusal once (a repeat of a refused item is the same refusal)
        if isinstance(refused, ItemError):
            state.runtime.funnel.rejected(refused.error.code)
    return BatchOut(results=[_final(results, index, item) for index, item in enumerate(items)])


def _shed(items: list[_Item], shed: frozenset[str], response: Response) -> None:
    """Items of a shed priority are refused one by one (``overloaded``); the answer carries Retry-After."""
    for item in items:
        if item.event is not None and item.event.priority in shed:
            error = _overloaded(item.event.priority)
            item.event, item.error = None, _item_error(error.code, error.message)
            response.headers["Retry-After"] = errors.retry_after(error.retry_after)


def _final(results: list[Accepted | ItemError | None], index: int, item: _Item) -> Accepted | ItemError:
    result = results[item.same_as if item.same_as is not None else index]
    assert result is not None, "every item is refused, appended, or a repeat of an appended item"
    return result


router.add_api_route(
    "/v1/events",
    post_event,
    methods=["POST"],
    status_code=202,
    responses=errors.responses(400, 401, 409, 413, 415, 422, 429, 503),
    summary="Send one event",
    route_class_override=direct_route(_post_event_direct),
)
router.add_api_route(
    "/v1/events/batch",
    post_batch,
    methods=["POST"],
    responses=errors.responses(400, 401, 413, 415, 422, 429, 503),
    summary="Send many events; one result per event, in order",
    route_class_override=direct_route(_post_batch_direct),
)

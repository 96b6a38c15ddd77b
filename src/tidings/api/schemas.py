"""Request and response bodies of the HTTP API (pydantic), with the limits that do not depend on settings.

Requests are strict (no type coercion: ``"5"`` is not a seq) and refuse unknown top-level fields, so a typo
is a 422 instead of silently ignored data. ``actor`` and ``object`` are open objects (``id`` plus any fields
the app wants to show, e.g. ``name``, ``avatar``, ``url``), each at most 4 KiB serialized; ``data`` is at
most 16 KiB.
Limits that come from settings (recipients per event, events per batch) are checked by the routes.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, field_validator, model_validator

from tidings.api.errors import ErrorDetail
from tidings.auth import normalize_origin
from tidings.core.models import Event, Priority
from tidings.core.rules import (
    DEFAULT_WINDOW,
    AppRules,
    QuietHours,
    UserPreferences,
    clock_minutes,
    known_zones,
    rules_from_json,
)

TYPE_PATTERN = r"^[a-z0-9_.:-]{1,64}$"
TOPIC_PATTERN = r"^[A-Za-z0-9_.:@-]{1,200}$"
APP_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_DATA_BYTES = 16 * 1024
MAX_REF_BYTES = 4 * 1024
MAX_MARK_SEQS = 1000
MAX_DEPTH = 32
MAX_SEQ = 2**63 - 1  # seqs are 64-bit signed integers in every store

Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]

# No control characters (NUL included) in ids: every backend must store exactly what it was given.
NO_CONTROL_CHARS = r"^[^\x00-\x1f\x7f]+$"
UserId = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_CONTROL_CHARS)]
Topic = Annotated[str, Field(pattern=TOPIC_PATTERN)]
AppName = Annotated[str, Field(pattern=APP_NAME_PATTERN)]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_CONTROL_CHARS)]

_STRICT = ConfigDict(extra="forbid", strict=True)
_OPEN = ConfigDict(extra="allow", strict=True)


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value: keys sorted at every level, no whitespace."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class FieldError(ValueError):
    """A model-level check's refusal that names its field: the 422 ``loc`` then ends with ``field`` instead
    of being the whole object's (see ``tidings.api.errors.validation_details``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


# Nesting n deep takes at least 2n bytes of brackets: a value serialized shorter than this cannot be too deep.
_SHALLOW_BYTES = 2 * (MAX_DEPTH + 1)


def check_json_bounds(value: Any, limit: int, what: str) -> None:
    """``ValueError`` unless ``value`` nests at most ``MAX_DEPTH`` deep and serializes to at most ``limit``
    bytes. The depth bound keeps every later serialization (the log, the notification) within orjson's own
    recursion limit, so a deep body is a 422 here instead of an error further on.

    Serialized first (orjson, in C): a short value cannot nest too deep, so the walk over every node in
    Python is only needed for values of ``_SHALLOW_BYTES`` or more (or too deep for orjson itself). When both
    bounds are broken the depth is named, as before."""
    try:
        size = len(canonical_json(value))
    except orjson.JSONEncodeError:
        size = None  # orjson's own recursion limit: the walk names the depth
    if (size is None or size >= _SHALLOW_BYTES) and _depth(value) > MAX_DEPTH:
        raise ValueError(f"{what} nests deeper than {MAX_DEPTH} levels")
    if size is None:
        raise ValueError(f"{what} cannot be serialized")
    if size > limit:
        raise ValueError(f"{what} is over {limit} bytes serialized")


class Actor(BaseModel):
    """Who did it. ``id`` is required; any other fields are shown to recipients as sent."""

    model_config = _OPEN
    id: UserId
    name: Annotated[str, Field(max_length=255)] | None = None
    avatar: Annotated[str, Field(max_length=2048)] | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Actor:
        check_json_bounds(_as_json(self), MAX_REF_BYTES, "actor")
        return self


class ObjectRef(BaseModel):
    """What it is about, e.g. ``{"id": "post:42"}``; extra fields are kept."""

    model_config = _OPEN
    id: Annotated[str, Field(min_length=1, max_length=255)]

    @model_validator(mode="after")
    def _bounded(self) -> ObjectRef:
        check_json_bounds(_as_json(self), MAX_REF_BYTES, "object")
        return self


_REF_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    model: tuple(model.model_fields) for model in (Actor, ObjectRef)
}


def _as_json(ref: Actor | ObjectRef, *, only_set: bool = False) -> dict[str, Any]:
    """``ref.model_dump(mode="json")`` (``exclude_unset=True`` with ``only_set``), without pydantic's general
    serializer: the declared fields are strict strings (or None) and the extra ones are JSON as parsed, so
    the dump is these values as they are, declared fields first, in declaration order."""
    declared = _REF_FIELDS[type(ref)]
    fields = ref.__dict__
    if only_set:
        chosen = ref.__pydantic_fields_set__
        out = {name: fields[name] for name in declared if name in chosen}
    else:
        out = {name: fields[name] for name in declared}
    extra = ref.__pydantic_extra__
    if extra:
        out.update(extra)
    return out


class EventIn(BaseModel):
    """An event from a producer. Exactly one of ``recipients`` (user ids) or ``topic`` (its subscribers)."""

    model_config = _STRICT
    type: Annotated[str, Field(pattern=TYPE_PATTERN, examples=["post.liked"])]
    actor: Actor | None = None
    recipients: (
        Annotated[
            list[UserId],
            Field(
                min_length=1,
                description="1 to max_recipients (default 1000) user ids; duplicates are dropped",
            ),
        ]
        | None
    ) = None
    topic: Topic | None = None
    object: ObjectRef | None = None
    data: Annotated[dict[str, Any], Field(description="at most 16 KiB serialized")] = Field(
        default_factory=dict
    )
    group_key: Annotated[str, Field(max_length=255)] | None = None
    priority: Priority = "normal"
    ordering_key: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=255,
                pattern=NO_CONTROL_CHARS,
                description="events with the same key are fanned out in acceptance order; default: the single "
                "recipient, else the topic, else the event id",
            ),
        ]
        | None
    ) = None
    cancel_key: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=255,
                pattern=NO_CONTROL_CHARS,
                description="a handle to retract this event later with POST /v1/events/cancel",
            ),
        ]
        | None
    ) = None

    @field_validator("data", mode="before")
    @classmethod
    def _null_data(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("data")
    @classmethod
    def _bounded_data(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_json_bounds(value, MAX_DATA_BYTES, "data")
        return value

    @field_validator("recipients")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _one_target(self) -> EventIn:
        if (self.recipients is None) == (self.topic is None):
            raise FieldError("recipients", "exactly one of recipients or topic is required")
        return self

    def body_hash(self) -> str:
        """SHA-256 hex of the canonical JSON of the validated event (defaults filled in, key order lost)."""
        fields = self.model_dump(mode="json", exclude={"idempotency_key"})
        for added in ("ordering_key", "cancel_key"):  # fields added later hash as before when left out
            if fields.get(added) is None:
                fields.pop(added, None)
        return hashlib.sha256(canonical_json(fields)).hexdigest()

    def to_event(self, *, event_id: str, app: str, accepted_at: float, idempotency_key: str | None) -> Event:
        return Event(
            id=event_id,
            app=app,
            type=self.type,
            accepted_at=accepted_at,
            recipients=tuple(self.recipients) if self.recipients is not None else None,
            topic=self.topic,
            # As sent: optional fields the producer left out are not added as nulls.
            actor=_as_json(self.actor, only_set=True) if self.actor is not None else None,
            object=_as_json(self.object, only_set=True) if self.object is not None else None,
            data=self.data,
            group_key=self.group_key,
            priority=self.priority,
            idempotency_key=idempotency_key,
            ordering_key=self.ordering_key,
            cancel_key=self.cancel_key,
        )


class BatchEventIn(EventIn):
    """One item of a batch: an event plus its own idempotency key."""

    idempotency_key: IdempotencyKey | None = None


class BatchIn(BaseModel):
    # Items are validated one by one by the route, so one bad item is refused alone.
    model_config = _STRICT
    events: Annotated[
        list[SkipValidation[BatchEventIn]],
        Field(min_length=1, description="1 to max_batch_events (default 500) events"),
    ]


class Accepted(BaseModel):
    id: str
    status: Literal["accepted"] = "accepted"


class ItemError(BaseModel):
    error: ErrorDetail


class BatchOut(BaseModel):
    results: list[Accepted | ItemError]


class Subscription(BaseModel):
    topic: str
    user_id: str
    subscribed: bool
    changed: bool = Field(description="false when the subscription was already in that state")


class SubscribersPage(BaseModel):
    items: list[str]
    next: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class Notification(BaseModel):
    """A notification as a user sees it (see the contract); fields may be added over time."""

    model_config = ConfigDict(extra="allow")
    seq: int
    id: str
    event_id: str
    type: str
    actors: list[dict[str, Any]]
    count: int
    object: dict[str, Any] | None
    data: dict[str, Any]
    priority: Priority
    created_at: str
    read_at: str | None
    seen_at: str | None
    replaces: int | None


class NotificationsPage(BaseModel):
    items: list[Notification]
    next: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")
    counts: dict[str, int] | None = Field(
        default=None, description="unread, unseen, archived: the user's counts"
    )


class UnreadCount(BaseModel):
    unread: int
    unseen: int


class MarkIn(BaseModel):
    """Exactly one of ``seqs`` (those notifications) or ``up_to`` (every seq up to and including it)."""

    model_config = _STRICT
    seqs: Annotated[list[Seq], Field(min_length=1, max_length=MAX_MARK_SEQS)] | None = None
    up_to: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> MarkIn:
        if (self.seqs is None) == (self.up_to is None):
            raise FieldError("seqs", "exactly one of seqs or up_to is required")
        return self


class Marked(BaseModel):
    updated: int = Field(description="notifications that changed state")


class StreamTicket(BaseModel):
    ticket: str = Field(description="one use: GET /v1/stream?ticket=...")
    expires_in: float = Field(description="seconds")


class AppIn(BaseModel):
    model_config = _STRICT
    name: AppName
    origins: Annotated[list[str], Field(max_length=50)] = Field(default_factory=list)

    @field_validator("origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [normalize_origin(origin) for origin in value]


class AppCreated(BaseModel):
    app: str
    api_key: str = Field(description="shown once; stored only as its SHA-256")
    jwt_secret: str = Field(description="signs the app's user tokens (HS256)")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    checks: dict[str, str]


# --- social rules: bulk subscribers, preferences, app rules, decisions ---------------------------------------

CATEGORY_PATTERN = TYPE_PATTERN  # a category is named like an event type (a type is its own category)
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
MAX_CATEGORIES = 200
MAX_MUTES = 1000
MAX_WINDOW = 30 * 86400.0  # seconds: aggregation windows, TTLs, cap periods, digest delays


class BulkSubscribed(BaseModel):
    topic: str
    added: int = Field(description="user ids that were not subscribed yet (0 when the import is repeated)")
    received: int = Field(description="distinct user ids in the request")


class ChannelSwitches(BaseModel):
    """Channels switched on (true) or off (false); a channel left out keeps its default."""

    model_config = _STRICT
    in_app: bool | None = None
    web_push: bool | None = None
    email: bool | None = None
    webhook: bool | None = None
    mobile_push: bool | None = None

    def chosen(self) -> dict[str, bool]:
        return {name: on for name, on in self.model_dump().items() if on is not None}


class Mutes(BaseModel):
    model_config = _STRICT
    actors: Annotated[list[UserId], Field(max_length=MAX_MUTES)] = Field(
        default_factory=list, description="actor ids whose events never notify this user"
    )
    objects: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=255)]], Field(max_length=MAX_MUTES)
    ] = Field(default_factory=list, description="object ids, or threads (`object.thread`), muted")


class QuietHoursIn(BaseModel):
    """Local times of day in ``time_zone`` (IANA, e.g. ``Europe/Paris``); ``start`` after ``end`` spans
    midnight. During quiet hours web push and email wait until ``end``; the inbox is still updated."""

    model_config = _STRICT
    start: Annotated[str, Field(pattern=CLOCK_PATTERN, examples=["22:00"])]
    end: Annotated[str, Field(pattern=CLOCK_PATTERN, examples=["07:00"])]
    time_zone: Annotated[str, Field(max_length=64, examples=["Europe/Paris"])]

    @field_validator("time_zone")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in known_zones():
            raise ValueError("not an IANA time zone name")
        return value


class PreferencesIn(BaseModel):
    """A user's preferences, replaced whole by ``PUT``; the body ``GET`` answered is accepted unchanged."""

    model_config = _STRICT
    categories: Annotated[
        dict[Annotated[str, Field(pattern=CATEGORY_PATTERN)], ChannelSwitches],
        Field(max_length=MAX_CATEGORIES, description="per category, channels on or off"),
    ] = Field(default_factory=dict)
    mutes: Mutes = Field(default_factory=Mutes)
    quiet_hours: QuietHoursIn | None = None
    # What GET answers can be sent back as is: its read-only part is accepted here and ignored.
    defaults: dict[str, Any] | None = Field(
        default=None, description="read-only (the app's defaults, as GET shows them): ignored"
    )

    def to_preferences(self) -> UserPreferences:
        quiet = self.quiet_hours
        return UserPreferences(
            categories={name: switches.chosen() for name, switches in self.categories.items()},
            muted_actors=frozenset(self.mutes.actors),
            muted_objects=frozenset(self.mutes.objects),
            quiet_hours=None
            if quiet is None
            else QuietHours(clock_minutes(quiet.start), clock_minutes(quiet.end), quiet.time_zone),
        )


class PreferenceDefaults(BaseModel):
    channels: dict[str, bool] = Field(description="the app's default per channel")
    categories: dict[str, dict[str, Any]] = Field(description="categories the app configured")


class PreferencesOut(BaseModel):
    categories: dict[str, dict[str, bool]]
    mutes: dict[str, list[str]]
    quiet_hours: dict[str, str] | None
    defaults: PreferenceDefaults = Field(description="the app's defaults, for a settings screen (read-only)")


class CategoryIn(BaseModel):
    model_config = _STRICT
    critical: bool = Field(default=False, description="bypasses preferences, mutes, quiet hours and caps")
    channels: ChannelSwitches = Field(default_factory=ChannelSwitches)


class TypeRuleIn(BaseModel):
    model_config = _STRICT
    category: Annotated[str, Field(pattern=CATEGORY_PATTERN)] | None = None
    aggregate_window: Annotated[float, Field(ge=0, le=MAX_WINDOW)] | None = Field(
        default=None, description="seconds; 0: no aggregation; null: the app's default"
    )
    ttl: Annotated[float, Field(gt=0, le=MAX_WINDOW)] | None = Field(
        default=None,
        description="seconds after acceptance past which the event is dropped; null: app default",
    )


class CapIn(BaseModel):
    model_config = _STRICT
    limit: Annotated[int, Field(ge=0, le=100_000)]
    per: Annotated[float, Field(gt=0, le=MAX_WINDOW)] = 3600.0


class RetentionIn(BaseModel):
    """How long each user inbox keeps notifications (``core.retention``); null: the server's default."""

    model_config = _STRICT
    max_age: Annotated[float, Field(ge=0, le=10 * 365 * 86400.0)] | None = Field(
        default=None,
        description="seconds a notification is kept; 0: no limit; null: TIDINGS_RETENTION_MAX_AGE",
    )
    max_count: Annotated[int, Field(ge=0, le=1_000_000_000)] | None = Field(
        default=None,
        description="notifications kept per user; 0: no limit; null: TIDINGS_RETENTION_MAX_COUNT",
    )


class RulesIn(BaseModel):
    """An app's notification rules, replaced whole by ``PUT /v1/rules``."""

    model_config = _STRICT
    channels: ChannelSwitches = Field(default_factory=ChannelSwitches, description="app-wide defaults")
    categories: Annotated[
        dict[Annotated[str, Field(pattern=CATEGORY_PATTERN)], CategoryIn], Field(max_length=MAX_CATEGORIES)
    ] = Field(default_factory=dict)
    types: Annotated[
        dict[Annotated[str, Field(pattern=TYPE_PATTERN)], TypeRuleIn], Field(max_length=MAX_CATEGORIES)
    ] = Field(default_factory=dict)
    caps: dict[Literal["web_push", "email", "webhook", "mobile_push"], CapIn] | None = Field(
        default=None, description="per-user caps of the offline channels; null: the defaults"
    )
    aggregate_window: Annotated[float, Field(ge=0, le=MAX_WINDOW)] = DEFAULT_WINDOW
    digest_delay: Annotated[float, Field(ge=0, le=MAX_WINDOW)] = 3600.0
    ttl: Annotated[float, Field(gt=0, le=MAX_WINDOW)] | None = None
    retention: RetentionIn = Field(
        default_factory=RetentionIn, description="per user inbox, swept in the background"
    )

    def to_rules(self) -> AppRules:
        return rules_from_json(
            {
                "channels": self.channels.chosen(),
                "categories": {
                    name: {"critical": c.critical, "channels": c.channels.chosen()}
                    for name, c in self.categories.items()
                },
                "types": {name: t.model_dump() for name, t in self.types.items()},
                "caps": None if self.caps is None else {n: c.model_dump() for n, c in self.caps.items()},
                "aggregate_window": self.aggregate_window,
                "digest_delay": self.digest_delay,
                "ttl": self.ttl,
                "retention": self.retention.model_dump(),
            }
        )


class DecisionOut(BaseModel):
    user: str | None = Field(description="null: a decision about the whole event (a stale drop)")
    kind: Literal["drop", "suppress", "deliver", "defer", "aggregate", "cancel", "retract", "erase", "export"]
    channel: str | None = Field(
        description="in_app, web_push, email, webhook, mobile_push; null for drop and suppress"
    )
    reason: str
    seq: int | None = Field(description="the user's notification it is about, when there is one")
    at: str
    detail: dict[str, Any] | None = None


class DecisionsPage(BaseModel):
    items: list[DecisionOut]
    next: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


# --- the life of a notification: retraction, states, counts --------------------------------------------------

MAX_CANCEL_KEYS = 100  # per POST /v1/events/cancel: one bounded transaction
EventId = Annotated[str, Field(min_length=1, max_length=32, pattern=NO_CONTROL_CHARS)]
CancelKey = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_CONTROL_CHARS)]


class CancelIn(BaseModel):
    """Retract events: those sent with one of ``cancel_keys`` (accepted until now) and those of ``event_ids``."""

    model_config = _STRICT
    cancel_keys: Annotated[list[CancelKey], Field(max_length=MAX_CANCEL_KEYS)] = Field(default_factory=list)
    event_ids: Annotated[list[EventId], Field(max_length=MAX_CANCEL_KEYS)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some(self) -> CancelIn:
        if not self.cancel_keys and not self.event_ids:
            raise FieldError("cancel_keys", "give at least one cancel key (or event id)")
        if len(self.cancel_keys) + len(self.event_ids) > MAX_CANCEL_KEYS:
            raise FieldError("cancel_keys", f"at most {MAX_CANCEL_KEYS} cancel keys and event ids in all")
        return self


class Retracted(BaseModel):
    retracted: int = Field(description="inboxes changed now (0 too when the events are not fanned out yet)")


class SeqsIn(BaseModel):
    """The user's notifications an archive, unarchive, unread or delete applies to."""

    model_config = _STRICT
    seqs: Annotated[list[Seq], Field(min_length=1, max_length=MAX_MARK_SEQS)]


class Counts(BaseModel):
    unread: int = Field(description="notifications not archived and not read")
    unseen: int = Field(description="notifications not archived and not seen")
    archived: int


class Changed(Counts):
    updated: int = Field(description="notifications that changed state")

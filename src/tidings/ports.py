"""The ports: small Protocols, each with its written semantics. Every backend passes one contract suite.

``backends/sql/sqlite/`` is the embedded reference implementation of the storage ports, ``backends/memory.py``
of the bus. Errors from a backend's library are translated once, inside that backend, into ``tidings.errors``
(``UnavailableError`` when the backend cannot be reached).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tidings.core.delivery import (
    Backlog,
    Claimed,
    DeadEvent,
    DeliveryRecord,
    Device,
    Finished,
    Profile,
    PushSubscription,
    WebhookEndpoint,
)
from tidings.core.models import App, Event, InboxItem, InboxWrite, LiveMessage, Priority, StoredNotification
from tidings.core.retention import Limits, Swept
from tidings.core.rules import AppRules, Decision, Deferred, UserPreferences

# A live stream about to open: (app, user, the client's cursor: None for "only what comes next").
OpenRequest = tuple[str, str, int | None]


@dataclass(frozen=True, slots=True)
class Opening:
    """What ``Inbox.openings`` read for one ``OpenRequest``, from one snapshot: the user's ``last_seq``; and,
    only when the cursor is behind it, the retention ``floor`` (``Retention.floor``) and ``page``, the first
    backlog page after the cursor (``Inbox.backlog(app, user, after, limit)``); otherwise floor 0, page None."""

    last_seq: int
    floor: int
    page: list[StoredNotification] | None


@dataclass(frozen=True, slots=True)
class Append:
    """One event to append. ``body_hash`` fingerprints the request that carried ``idempotency_key``."""

    event: Event
    body_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of one ``Append``: ``duplicate`` when the key was seen before with the same body."""

    event_id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event handed to a consumer; ``token`` is what ``ack`` needs (an offset, a message id...)."""

    event: Event
    token: object
    lane: Priority = "normal"


class EventLog(Protocol):
    """The durable, ordered log between the API and the fan-out workers.

    - ``append`` returns only once every event is durable: a crash after it returns loses nothing. Items with an
      ``idempotency_key`` already stored for the same app are not appended again: the result carries the first
      event's id with ``duplicate=True`` when ``body_hash`` matches, and is an ``IdempotencyMismatchError`` (not
      raised: returned in its slot) when it differs. Results are in the order of the items.
    - ``read`` hands out events at least once: an event that is not acked is handed out again after a restart
      (or, on engines with leases, after its lease expires). Within one priority lane it hands out events in
      append order; ``high`` is read before ``normal`` before ``low``. It waits up to ``timeout`` seconds for
      something to arrive and may return an empty list.
    - ``ack`` marks deliveries done; acked events are not handed out again. (Embedded log: after a restart, an
      event acked out of order, past one still unacked, may be handed out once more; the worker acks in order.)
    - ``lag`` is the number of appended events not yet acked (an estimate is fine on engines that only have one).
    """

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]: ...

    async def read(self, max_items: int, timeout: float) -> list[Delivery]: ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    async def lag(self) -> int: ...

    async def close(self) -> None: ...


class Inbox(Protocol):
    """Each user's inbox: the source of truth for what a user has been notified of.

    - ``write`` commits all its rows in one transaction. It is idempotent on (app, user, event id): a write whose
      row exists already creates nothing and returns the existing row. Every new row gets the user's next ``seq``
      (1, 2, 3, ... per (app, user), no gaps), allocated inside the commit, so seq order is commit order. It returns
      one ``StoredNotification`` per write, new or existing, in the order of the writes.
    - In the same transaction ``write`` aggregates, defers and records as ``core.aggregation.plan_commit`` plans
      (a row that joins an aggregate replaces it; offline deliveries go to the ``deferred`` rows under the
      user's caps; deliver/defer/aggregate decisions go to the decision log), for new rows only.
    - ``backlog`` returns the rows of one user with seq > ``after``, ascending, at most ``limit``, leaving out
      replaced rows (so its seqs ascend, not always consecutively).
    - ``page`` lists for the user API: newest first (seq < ``before`` when given), or oldest first when ``after`` is
      given; ``unread_only`` keeps rows without ``read_at``; replaced rows are left out.
    - ``counts`` returns (unread, unseen) of the shown rows not archived (see ``tallies``). ``mark`` sets
      ``read_at``/``seen_at`` (only where unset) on the given seqs, or on every seq <= ``up_to``; returns how
      many rows changed. It also cancels the pending offline deliveries of those seqs (read or seen: no push
      needed any more), recording each cancellation in the decision log.
    - ``last_seq`` is the user's highest committed seq (0 when none); ``last_seqs`` is the same for many users
      at once, from one snapshot per chunk of users (a statement each): a dict with an entry for every user
      asked, for the heartbeat's tail checks of a process's streams (``gateway.ticker``).

    The life of a notification (``backends.sql.lifecycle``):

    - ``write`` creates nothing for a retracted event (returned with kind 'gone', seq 0), nor again for a
      removed row (kind 'gone'), whatever the order in which the retraction and the write came.
    - ``retract`` records the retraction of ``event_ids`` and of the events with one of ``cancel_keys``
      accepted until now, then, in every inbox of the app, removes their rows (one marker row per user, the
      next seq, kind 'retract', whose payload is the ``retract`` frame) or takes them out of their aggregate,
      re-rendered as a new row that ``replaces`` it (actors and count: a replay of the surviving events);
      cancels their pending and claimed offline deliveries; logs the decisions. Returns the rows to publish.
    - ``change`` archives, unarchives, marks unread or deletes (for this user only: removed as by a
      retraction, without a marker) the user's shown notifications among ``seqs``; returns the seqs that
      changed and (unread, unseen, archived) after.
    - ``tallies`` is (unread, unseen, archived) from the user's counter row, kept in the same transaction as
      every change of the rows: unread/unseen among the not archived; ``counts`` is its first two.
    - ``scrub_actor`` takes ``actor`` (a user id) out of every aggregate of the app where they contributed, as
      ``retract`` would; returns the rows to publish.
    - ``page`` also filters by ``status`` ('inbox': not archived, 'unread', 'unseen', 'archived', 'all') and
      ``types``; backlogs and pages leave removed rows out, pages and counts leave markers out.
    """

    async def write(self, writes: Sequence[InboxWrite]) -> list[StoredNotification]: ...

    async def retract(
        self, app: str, *, event_ids: Sequence[str], cancel_keys: Sequence[str]
    ) -> list[StoredNotification]: ...

    async def change(
        self,
        app: str,
        user: str,
        action: Literal["archive", "unarchive", "unread", "delete"],
        seqs: Sequence[int],
    ) -> tuple[list[int], tuple[int, int, int]]: ...

    async def tallies(self, app: str, user: str) -> tuple[int, int, int]: ...

    async def scrub_actor(self, app: str, actor: str) -> list[StoredNotification]: ...

    async def backlog(self, app: str, user: str, after: int, limit: int) -> list[StoredNotification]: ...

    async def page(
        self,
        app: str,
        user: str,
        *,
        after: int | None,
        before: int | None,
        limit: int,
        unread_only: bool,
        status: Literal["inbox", "unread", "unseen", "archived", "all"] = "all",
        types: Sequence[str] | None = None,
    ) -> list[InboxItem]: ...

    async def counts(self, app: str, user: str) -> tuple[int, int]: ...

    async def mark(
        self,
        app: str,
        user: str,
        field: Literal["read", "seen"],
        *,
        seqs: Sequence[int] | None,
        up_to: int | None,
        at: float,
    ) -> int: ...

    async def last_seq(self, app: str, user: str) -> int: ...

    async def last_seqs(self, users: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]: ...

    async def openings(self, requests: Sequence[OpenRequest], limit: int) -> list[Opening]:
        """What each of many live streams needs to open, in the order of ``requests`` (``Opening``), each
        from one snapshot: one read for a whole resume storm's batch (``backends.sql.backlog``)."""
        ...


class Apps(Protocol):
    """Tenants and their credentials, and the one-use stream tickets of browsers.

    - ``create`` raises ``AppExistsError`` when the name is taken. API keys are stored only as their SHA-256 hash.
    - ``redeem_ticket`` returns (app, user) and deletes the ticket atomically, so a ticket works once; an expired
      or unknown ticket gives None.
    - ``by_key_hash`` finds the app whose current *or previous* key hash matches; it does not look at
      ``previous_key_until`` (the caller compares it with its clock, ``tidings.auth``).
    - ``rotate_key`` makes ``key_hash`` the current key hash and the replaced one the previous, valid until
      ``previous_until`` (an older previous key is dropped); ``rotate_secret`` does the same for the JWT
      secret. Both return False, changing nothing, when no app has that name.
    - ``delete`` removes the app's row (so its keys and secrets) and its stream tickets in one transaction
      and returns whether there was one; the app's other data (inboxes, topics, preferences...) stays.
    - ``all`` returns every app, ordered by name.
    """

    async def create(self, app: App) -> None: ...

    async def get(self, name: str) -> App | None: ...

    async def by_key_hash(self, key_hash: str) -> App | None: ...

    async def all(self) -> list[App]: ...

    async def rotate_key(self, name: str, key_hash: str, previous_until: float) -> bool: ...

    async def rotate_secret(self, name: str, jwt_secret: str, previous_until: float) -> bool: ...

    async def delete(self, name: str) -> bool: ...

    async def issue_ticket(self, ticket_hash: str, app: str, user: str, expires_at: float) -> None: ...

    async def redeem_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None: ...


class Topics(Protocol):
    """Topic subscriber lists (e.g. a user's followers). ``subscribe``/``unsubscribe`` are idempotent and return
    whether anything changed. ``page`` returns subscriber ids > ``after`` in ascending order, at most ``limit``,
    so a topic of any size is read in bounded chunks.

    ``subscribe_many`` adds many subscribers in one transaction, idempotently; returns how many were new.
    ``boundaries`` returns the ids at positions ``every``, 2 x ``every``, ... (at most ``limit`` of them) of
    the subscribers > ``after`` in ascending order: the ends of chunks of ``every`` subscribers, found by
    reading ids only (at most ``every`` x ``limit`` index entries), so a fan-out is split without holding
    the list.
    """

    async def subscribe(self, app: str, topic: str, user: str) -> bool: ...

    async def subscribe_many(self, app: str, topic: str, users: Sequence[str]) -> int: ...

    async def boundaries(
        self, app: str, topic: str, after: str | None, every: int, limit: int
    ) -> list[str]: ...

    async def unsubscribe(self, app: str, topic: str, user: str) -> bool: ...

    async def page(self, app: str, topic: str, after: str | None, limit: int) -> list[str]: ...


class Preferences(Protocol):
    """Users' notification preferences and apps' notification rules (``core.rules``), stored whole.

    ``user`` returns None for a user who never set any; ``users`` returns the preferences of those of ``users``
    who have some (one query for a fan-out chunk). ``rules`` returns None for an app that never set any.
    ``set_user``/``set_rules`` replace what was stored.
    """

    async def user(self, app: str, user: str) -> UserPreferences | None: ...

    async def users(self, app: str, users: Sequence[str]) -> dict[str, UserPreferences]: ...

    async def set_user(self, app: str, user: str, prefs: UserPreferences) -> None: ...

    async def rules(self, app: str) -> AppRules | None: ...

    async def set_rules(self, app: str, rules: AppRules) -> None: ...


class Decisions(Protocol):
    """The decision log and the pending offline deliveries.

    - ``record`` stores decisions made outside an inbox write (drops, suppressions); at most one per (app,
      event, user, kind, channel): recording one again changes nothing, so a redelivered event adds nothing.
    - ``for_event`` lists an event's decisions ordered by (user, kind, channel), after the ``after`` key of
      that order (None: from the start), at most ``limit``; ``user`` given: that user's only.
    - ``pending`` lists a user's pending offline deliveries (``deferred``), by seq and channel.
    - ``prune`` forgets decisions made before ``older_than``, pending deliveries due before it that no
      sender took (no sender runs: the table stays bounded), and ``Outbound`` deliveries that ended before it
      (dead ones stay until an operator retries them); returns how many rows it deleted.
    """

    async def record(self, decisions: Sequence[Decision]) -> None: ...

    async def for_event(
        self, app: str, event_id: str, *, user: str | None, after: tuple[str, str, str] | None, limit: int
    ) -> list[Decision]: ...

    async def pending(self, app: str, user: str) -> list[Deferred]: ...

    async def prune(self, older_than: float) -> int: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """An Idempotency-Key to record for ``event_id`` (with the fingerprint of the request's body)."""

    app: str
    key: str
    body_hash: str
    event_id: str


class Idempotency(Protocol):
    """Producers' Idempotency-Keys, for event logs that cannot look keys up themselves (the brokers).

    ``claim`` records each (app, key) -> (event_id, body_hash) unless that key is recorded already, atomically per
    key, and returns per claim None when this call recorded it, else the recorded ``Claim``. Records are kept for
    at least ``IDEMPOTENCY_WINDOW`` seconds after ``now``; ``prune`` forgets older ones.
    """

    async def claim(self, claims: Sequence[Claim], now: float) -> list[Claim | None]: ...

    async def prune(self, older_than: float) -> int: ...


IDEMPOTENCY_WINDOW = 24 * 3600.0


Target = PushSubscription | Device | WebhookEndpoint | Profile


class Outbound(Protocol):
    """What the offline senders read and write: users' targets, apps' webhooks and VAPID keys, the ledger.

    Targets. ``set_profile`` replaces a user's profile. ``add_subscription`` stores a push subscription; one
    row per (app, endpoint): the same endpoint again (a browser re-subscribing, perhaps for another user)
    replaces its user and keys and keeps its id. ``add_device`` likewise per (app, token). ``remove_*``
    delete one of the caller's own (user-scoped, or app-scoped for webhooks) and say whether one existed.
    ``disabled_webhooks`` lists at most ``limit`` disabled endpoints of every app, the longest failing first.
    ``rotate_secret`` puts a new secret first and keeps the previous newest one signing until
    ``overlap_until``; older ones are dropped. ``vapid`` returns the app's key pair (private, public),
    storing ``make()``'s pair first when the app has none (concurrent callers get the same pair).

    Ledger. ``claim(owner, now, lease, limit)`` atomically (1) turns due ``deferred`` rows into deliveries,
    one per target of the channel (a channel without a target records a ``cancel`` decision), and (2) leases
    at most ``limit`` pending deliveries whose ``next_at`` passed and whose lease is free or expired to
    ``owner`` until ``now + lease``, adding one to their ``attempts`` before anything is sent. No two owners
    hold the same delivery at once; a delivery whose holder died is taken again once its lease ends. A
    delivery whose notification was read, seen or replaced in the meantime is not returned: it becomes
    ``cancelled`` with a ``cancel`` decision. ``finish`` applies outcomes, but only to deliveries still
    leased by ``owner`` (a late finish of a retaken delivery changes nothing); ``remove_target`` deletes the
    target (subscription, device, endpoint, the profile's email); a webhook failure starts its
    ``failing_since`` and a success clears it; an endpoint failing for ``WEBHOOK_DISABLE_AFTER`` is
    disabled. ``dead`` lists dead deliveries and dead fan-out events (newest first), ``retry_dead`` makes
    dead deliveries pending again with fresh attempts. ``depth`` returns the ``Backlog`` (due deliveries,
    the oldest due time, dead letters, disabled webhooks).
    """

    async def set_profile(self, profile: Profile) -> None: ...

    async def profile(self, app: str, user: str) -> Profile | None: ...

    async def add_subscription(self, sub: PushSubscription) -> PushSubscription: ...

    async def subscriptions(self, app: str, user: str) -> list[PushSubscription]: ...

    async def remove_subscription(self, app: str, user: str, sub_id: str) -> bool: ...

    async def add_device(self, device: Device) -> Device: ...

    async def devices(self, app: str, user: str) -> list[Device]: ...

    async def remove_device(self, app: str, user: str, device_id: str) -> bool: ...

    async def add_webhook(self, hook: WebhookEndpoint) -> None: ...

    async def webhooks(self, app: str) -> list[WebhookEndpoint]: ...

    async def disabled_webhooks(self, limit: int) -> list[WebhookEndpoint]: ...

    async def remove_webhook(self, app: str, hook_id: str) -> bool: ...

    async def rotate_secret(
        self, app: str, hook_id: str, secret: str, overlap_until: float
    ) -> WebhookEndpoint | None: ...

    async def vapid(self, app: str, make: Callable[[], tuple[str, str]], now: float) -> tuple[str, str]: ...

    async def targets(self, rows: Sequence[Claimed]) -> dict[tuple[str, str, str], Target]: ...

    async def claim(self, owner: str, now: float, lease: float, limit: int) -> list[Claimed]: ...

    async def finish(self, owner: str, results: Sequence[Finished], now: float) -> int: ...

    async def for_event(self, app: str, event_id: str, limit: int) -> list[DeliveryRecord]: ...

    async def dead(self, app: str | None, limit: int) -> tuple[list[DeliveryRecord], list[DeadEvent]]: ...

    async def retry_dead(self, ids: Sequence[int] | None, now: float) -> int: ...

    async def record_dead_event(self, app: str, event_id: str, error: str, now: float) -> None: ...

    async def depth(self, now: float) -> Backlog: ...


class Store(Protocol):
    """The storage bundle of one backend (one database, one connection pool)."""

    inbox: Inbox
    apps: Apps
    topics: Topics
    idempotency: Idempotency
    preferences: Preferences
    decisions: Decisions
    outbound: Outbound
    retention: Retention
    user_data: UserData

    async def ping(self) -> None:
        """Raises ``UnavailableError`` when the database cannot be reached."""
        ...

    async def close(self) -> None: ...


LiveHandler = Callable[[LiveMessage], None]


class Subscription(Protocol):
    async def close(self) -> None:
        """Idempotent. Frees its (app, user) before its first await: a ``subscribe`` made once ``close`` was
        called is not refused as a second subscription."""
        ...


class Bus(Protocol):
    """The live bus from workers to gateways, addressed by (app, user).

    At most once: a message may be lost or reordered (gateways fill gaps from the ``Inbox``), never altered.
    ``subscribe`` calls ``handler`` (synchronously, on the event loop; it must not block) for each message to that
    user published after the subscription is in place, until ``close``. A handler that raises is logged; the bus
    carries on with the next message.

    One subscriber: the gateway's hub (``gateway/hub.py``) is the only caller of ``subscribe``, and it holds at
    most one subscription per (app, user) per process, however many connections that user has here: the fan-in
    to several connections is the hub's, not the bus's. Subscribing again for an (app, user) whose subscription
    is still open is a caller error, which a bus may reject (ours raise ``ConflictError``; a subscribe that fails
    leaves nothing behind).
    """

    async def publish(self, messages: Sequence[LiveMessage]) -> None: ...

    async def subscribe(self, app: str, user: str, handler: LiveHandler) -> Subscription: ...

    async def close(self) -> None: ...


class Retention(Protocol):
    """The retention sweep of user inboxes (``core.retention``) and what it leaves behind.

    - ``sweep`` runs one batch over the app's users after ``after`` (ascending; None: from the first), at most
      ``users`` of them and ``budget`` deleted rows, in one short transaction: each user's seqs up to the cut
      ``limits`` call for are deleted (a prefix: the seqs above stay gap-free) with their pending offline
      deliveries (the ledger's pending ones become ``expired``), and the user's floor rises to the cut. Safe
      to run from several processes at once. ``Swept`` says where the next batch starts and whether the pass
      over the app is done.
    - ``floor`` is the highest seq swept for the user (0: none); every seq at or below it is gone.
    """

    async def sweep(
        self, app: str, after: str | None, limits: Limits, *, users: int, budget: int
    ) -> Swept: ...

    async def floor(self, app: str, user: str) -> int: ...


class UserData(Protocol):
    """A user's data on request (``DELETE /v1/users/{id}``, ``GET /v1/users/{id}/export``).

    - ``erase`` deletes everything held about the user in the app: inbox, seq counter and retention floor,
      preferences, profile, push subscriptions, devices, topic memberships, pending and ledger deliveries,
      channel counters, stream tickets, decisions (but the ``erase``/``export`` audit entries). Idempotent;
      the inbox goes in batches of ``batch`` rows, each its own transaction. Returns rows deleted per kind.
    - ``export`` returns all of it as JSON-ready values, secrets left out (push keys and endpoint paths,
      device tokens); at most ``limit`` inbox rows and decisions, newest first (``truncated`` says so).
    """

    async def erase(self, app: str, user: str, *, batch: int = 1000) -> dict[str, int]: ...

    async def export(self, app: str, user: str, *, limit: int = 100_000) -> dict[str, Any]: ...

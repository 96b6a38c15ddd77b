"""Aggregation and the rest of an inbox commit, pure: what rows, replacements, deferrals and decisions one
write transaction makes. Both stores (SQLite, PostgreSQL) read the state this needs, call ``plan_commit``
and write what it returns, inside the transaction that also allocates the seqs, so the outcome is the same
on every backend and for any number of concurrent writers (each store serializes a user's writes).

Aggregation. A write whose event has a ``group_key`` and an ``aggregate_window`` > 0 joins the user's
*current aggregate* of that group (the newest row of the group that nothing replaced yet) when it has the same
event type and started less than the window ago. Joining commits a NEW row (the next seq) whose notification
``replaces`` the current one's seq, shows the latest ``max_actors`` distinct actors (newest first) and
``count`` = events merged so far; the replaced row is marked (``replaced_by``) and then no longer counts as
unread or unseen, and backlogs and lists leave it out. Otherwise the write starts a new group. So:

- a chain of replacements is linear: each row is replaced at most once, by a later seq of the same group;
- the count of an aggregate is the number of events in its chain;
- a user who comes back later gets one row per group, not one per event.

Contributions. Every row of a group records its ``chain`` (the first seq of its aggregate) and, while its
event counts, its ``contrib`` (the event's actor and actor limit): a retraction takes one out and re-renders
the aggregate from the survivors (``replay``), so its actors and count always equal a replay of the
surviving events, in order (``backends.sql.lifecycle``).

Counters. The plan carries each user's change of the (unread, unseen, archived) counters: +1 unread and
unseen per new row, minus what a replaced row counted, so a replacement never counts twice.

Offline deliveries. The pending deliveries (``Deferred``) of a replaced row move to the new row (one push for
the aggregate, not one per like); a channel with nothing pending is planned afresh. A delivery due at once
counts against the user's cap of that channel (fixed windows); past the cap it is deferred into a digest due
at the end of the window, never dropped.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from tidings.core.ids import new_id
from tidings.core.models import JSON, ChannelPlan, InboxWrite, StoredNotification, render_notification
from tidings.core.rules import AGGREGATE, DEFER, DELIVER, Decision, Deferred, cap_window_start

UserKey = tuple[str, str]  # (app, user)
InboxKey = tuple[str, str, str]  # (app, user, event id)
GroupKey = tuple[str, str, str]  # (app, user, group key)
RowKey = tuple[str, str, int]  # (app, user, seq)
UsageKey = tuple[str, str, str]  # (app, user, channel)


@dataclass(frozen=True, slots=True)
class Current:
    """A user's current aggregate of one group, as stored."""

    seq: int
    type: str
    started_at: float
    count: int
    actors: tuple[JSON, ...]
    chain: int | None = None  # the first seq of the aggregate (None: written before chains were kept)
    state: tuple[int, int, int] = (1, 1, 0)  # what the row counts as (unread, unseen, archived)


@dataclass(frozen=True, slots=True)
class Usage:
    """Deliveries counted against a cap in the window starting at ``window_start``."""

    window_start: float
    count: int


@dataclass(slots=True)
class NewRow:
    """An inbox row to insert. ``replaced_by`` is set when a later write of the same batch replaced it.

    Not frozen, unlike the other records here: one is made per inbox row, and a frozen dataclass's ``__init__``
    (``object.__setattr__`` per field) costs several times a plain one's. Nothing changes it after
    ``plan_commit`` (which replaces it whole, ``dataclasses.replace``)."""

    write: InboxWrite
    seq: int
    id: str
    payload: bytes
    group_started_at: float | None
    replaces: int | None
    replaced_by: int | None = None
    chain: int | None = None  # the first seq of its aggregate (grouped rows only)
    contrib: str | None = None  # JSON {"actor": ..., "max": n}: what its event adds to the aggregate


@dataclass
class CommitPlan:
    """Everything one write transaction does beyond allocating seqs (which ``last`` holds, updated)."""

    rows: list[NewRow] = field(default_factory=list)
    replaced: list[tuple[RowKey, int]] = field(default_factory=list)  # stored rows -> the seq replacing them
    deferred: list[Deferred] = field(default_factory=list)  # new pending deliveries
    moved: list[tuple[RowKey, int]] = field(default_factory=list)  # stored pending rows -> their final seq
    usage: dict[UsageKey, Usage] = field(default_factory=dict)  # counters to save
    decisions: list[Decision] = field(default_factory=list)
    stored: dict[InboxKey, StoredNotification] = field(default_factory=dict)
    counters: dict[UserKey, list[int]] = field(default_factory=dict)  # (unread, unseen, archived) deltas


# Base32 (Crockford, ``ids.new_id``'s alphabet) of every 10-bit value: two characters per lookup.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
_MASK80 = (1 << 80) - 1


def id_source(now: float) -> Callable[[], str]:
    """Notification ids for one commit: one random 80-bit draw, then the following values, so ids are unique
    within the commit and random across commits (and a commit's ids sort in the order they were made).

    Each id is exactly ``ids.new_id(now, value)``, made cheaper: the time part (10 characters) is encoded
    once per commit and the 80 random bits as 8 lookups of two characters, not 26 shifts per id."""
    counter = itertools.count(secrets.randbits(80))
    prefix = new_id(now, 0)[:10]
    pairs = _PAIRS

    def next_id() -> str:
        r = next(counter) & _MASK80
        return (
            prefix
            + pairs[r >> 70]
            + pairs[(r >> 60) & 1023]
            + pairs[(r >> 50) & 1023]
            + pairs[(r >> 40) & 1023]
            + pairs[(r >> 30) & 1023]
            + pairs[(r >> 20) & 1023]
            + pairs[(r >> 10) & 1023]
            + pairs[r & 1023]
        )

    return next_id


def current_from_row(
    seq: int,
    payload: bytes,
    started_at: float | None,
    chain: int | None = None,
    state: tuple[int, int, int] = (1, 1, 0),
) -> Current | None:
    """The aggregate state of a stored row; None for a row that cannot be joined (no start recorded)."""
    if started_at is None:
        return None
    obj = orjson.loads(payload)
    actors = tuple(obj.get("actors") or ())
    return Current(seq, obj["type"], started_at, int(obj.get("count", 1)), actors, chain, state)


def row_state(
    read_at: float | None, seen_at: float | None, archived_at: float | None
) -> tuple[int, int, int]:
    """What a shown row counts as: (unread, unseen, archived)."""
    if archived_at is not None:
        return (0, 0, 1)
    return (int(read_at is None), int(seen_at is None), 0)


def contribution(actor: JSON | None, max_actors: int) -> str:
    """The ``contrib`` of a grouped row: its event's actor and the actor limit it was written with."""
    return orjson.dumps({"actor": actor, "max": max_actors}).decode()


def replay(contribs: Sequence[str]) -> tuple[tuple[JSON, ...], int]:
    """(actors, count) of an aggregate made of these contributions, oldest first: what writing the surviving
    events one after the other gives (``merge_actors`` with each one's limit)."""
    actors: tuple[JSON, ...] = ()
    for raw in contribs:
        item = orjson.loads(raw)
        actors = merge_actors(item.get("actor"), actors, int(item.get("max") or 3))
    return actors, len(contribs)


def rerender(
    payload: bytes,
    *,
    seq: int,
    notification_id: str,
    actors: Sequence[JSON],
    count: int,
    replaces: int,
    event_id: str | None = None,
) -> bytes:
    """An aggregate's notification re-rendered as a new seq that ``replaces`` the shown one: the same
    notification with its surviving actors and count (its read/seen state travels in the row)."""
    obj = orjson.loads(payload)
    obj.update(seq=seq, id=notification_id, actors=list(actors), count=count, replaces=replaces)
    if event_id is not None:
        obj["event_id"] = event_id
    obj["read_at"] = obj["seen_at"] = None
    return orjson.dumps(obj)


def add_counts(plan: CommitPlan, user: UserKey, delta: Sequence[int]) -> None:
    counts = plan.counters.setdefault(user, [0, 0, 0])
    for i, value in enumerate(delta):
        counts[i] += value


def merge_actors(actor: JSON | None, actors: Sequence[JSON], limit: int) -> tuple[JSON, ...]:
    """The latest ``limit`` distinct actors, newest first (an actor acting again moves to the front)."""
    if actor is None:
        return tuple(actors[:limit])
    rest = [a for a in actors if a.get("id") != actor.get("id")]
    return (actor, *rest)[:limit]


def joins(current: Current | None, write: InboxWrite, now: float) -> bool:
    """Whether ``write`` joins ``current``: same type, aggregation on, group started within the window."""
    return (
        current is not None
        and write.aggregate_window > 0
        and current.type == write.event.type
        and now - current.started_at < write.aggregate_window
    )


@dataclass
class _Batch:
    """The state ``plan_commit`` threads through one batch (in-batch rows may be replaced in the batch)."""

    plan: CommitPlan
    last: dict[UserKey, int]
    current: dict[GroupKey, Current]
    stored_pending: dict[RowKey, list[Deferred]]  # pending rows in the store, by the seq they belong to
    usage: Mapping[UsageKey, Usage]
    now: float
    new_id: Callable[[], str]
    new_rows: dict[RowKey, int] = field(default_factory=dict)  # (app, user, seq) -> index in plan.rows
    new_pending: dict[RowKey, list[Deferred]] = field(default_factory=dict)  # planned in this batch
    moves: dict[RowKey, int] = field(default_factory=dict)  # stored pending rows (where stored) -> final seq
    moved_from: dict[RowKey, RowKey] = field(default_factory=dict)  # where moved rows are now -> stored at
    tails: dict[str, bytes] = field(default_factory=dict)  # event id -> its plain payload after the id


def plan_commit(
    fresh: Sequence[InboxWrite],
    *,
    last: dict[UserKey, int],
    current: Mapping[GroupKey, Current],
    pending: Mapping[RowKey, Sequence[Deferred]],
    usage: Mapping[UsageKey, Usage],
    now: float,
    new_id: Callable[[], str],
) -> CommitPlan:
    """Plans the commit of ``fresh`` (writes whose rows do not exist yet, distinct, in batch order).

    ``last`` (each user's last seq, updated in place), ``current`` (current aggregates of the groups of the
    writes), ``pending`` (pending deliveries of those aggregates) and ``usage`` (cap counters of the users)
    are what the store read inside the transaction.
    """
    stored_pending = {key: list(items) for key, items in pending.items()}
    batch = _Batch(CommitPlan(), last, dict(current), stored_pending, usage, now, new_id)
    for write in fresh:
        _plan_one(batch, write)
    batch.plan.deferred = [item for items in batch.new_pending.values() for item in items]
    batch.plan.moved = list(batch.moves.items())
    return batch.plan


def _plan_one(batch: _Batch, write: InboxWrite) -> None:
    if write.event.group_key is None:
        _plan_plain(batch, write)
    else:
        _plan_any(batch, write)


def _plan_plain(batch: _Batch, write: InboxWrite) -> None:
    """``_plan_any`` of a write without a group key, the common row, with what cannot happen to it left out:
    it joins nothing, replaces nothing and is never replaced in the batch (only a group's current row is: a
    stored one, below every new seq, or one of the batch's grouped rows), so it needs no aggregate state
    (``Current``) and no place in ``new_rows``. The plan is the same, field for
    field (``tests/core/test_aggregation_fast_paths.py``)."""
    app, user, event = write.app, write.user, write.event
    key = (app, user)
    seq = batch.last[key] = batch.last.get(key, 0) + 1
    plan = batch.plan
    counts = plan.counters.get(key)
    if counts is None:
        plan.counters[key] = [1, 1, 0]
    else:
        counts[0] += 1
        counts[1] += 1
    notification_id = batch.new_id()
    payload = _plain_payload(batch, write, seq, notification_id)
    plan.rows.append(NewRow(write, seq, notification_id, payload, None, None))
    plan.stored[(app, user, event.id)] = StoredNotification(app, user, seq, event.id, payload)
    _decide(batch, write, seq, DELIVER, "in_app", write.reason or "recipient")
    for channel in write.channels:
        _plan_channel(batch, write, seq, channel)


def _plan_any(batch: _Batch, write: InboxWrite) -> None:
    user = (write.app, write.user)
    seq = batch.last[user] = batch.last.get(user, 0) + 1
    group = (write.app, write.user, write.event.group_key) if write.event.group_key is not None else None
    current = batch.current.get(group) if group is not None else None
    replaces, moved = None, set[str]()
    if current is not None and joins(current, write, batch.now):
        replaces, moved = current.seq, _replace(batch, user, current.seq, seq)
        add_counts(batch.plan, user, [-n for n in current.state])
        actors = merge_actors(write.event.actor, current.actors, write.max_actors)
        chain = current.chain if current.chain is not None else current.seq
        state = Current(seq, write.event.type, current.started_at, current.count + 1, actors, chain)
    else:
        first = (write.event.actor,) if write.event.actor is not None else ()
        state = Current(seq, write.event.type, batch.now, 1, first, seq)
    add_counts(batch.plan, user, (1, 1, 0))
    if group is not None:
        batch.current[group] = state
    _add_row(batch, write, seq, state, replaces, grouped=group is not None)
    _in_app_decision(batch, write, seq, state, replaces)
    for plan in write.channels:
        if plan.channel in moved:
            _decide(batch, write, seq, DELIVER, plan.channel, "merged into the aggregate's pending delivery")
        else:
            _plan_channel(batch, write, seq, plan)


def _replace(batch: _Batch, user: UserKey, old: int, new: int) -> set[str]:
    """Marks row ``old`` replaced by ``new``; moves its pending deliveries; returns their channels."""
    key = (user[0], user[1], old)
    index = batch.new_rows.get(key)
    if index is not None:
        batch.plan.rows[index] = replace(batch.plan.rows[index], replaced_by=new)
    else:
        batch.plan.replaced.append((key, new))
    new_key = (user[0], user[1], new)
    stored = batch.stored_pending.pop(key, [])
    if stored:
        # One move per stored row, from where it is stored to where it ends: a store applies all moves of
        # a commit at once (PostgreSQL: one UPDATE), so a chain of moves would stop after its first step.
        origin = batch.moved_from.pop(key, key)
        batch.moves[origin] = new
        batch.moved_from[new_key] = origin
        batch.stored_pending[new_key] = [replace(item, seq=new) for item in stored]
    planned = batch.new_pending.pop(key, [])  # planned in this batch: they move in the plan itself
    if planned:
        batch.new_pending[new_key] = [replace(item, seq=new) for item in planned]
    return {item.channel for item in (*stored, *planned)}


def _add_row(
    batch: _Batch, write: InboxWrite, seq: int, state: Current, replaces: int | None, *, grouped: bool
) -> None:
    notification_id = batch.new_id()
    if replaces is None and state.count == 1:  # not an aggregate: the event's own actor, count 1
        payload = _plain_payload(batch, write, seq, notification_id)
    else:
        payload = render_notification(
            write,
            seq=seq,
            notification_id=notification_id,
            created_at=batch.now,
            actors=list(state.actors),
            count=state.count,
            replaces=replaces,
        )
    started = state.started_at if grouped else None
    chain = state.chain if grouped else None
    contrib = contribution(write.event.actor, write.max_actors) if grouped else None
    batch.new_rows[(write.app, write.user, seq)] = len(batch.plan.rows)
    batch.plan.rows.append(
        NewRow(write, seq, notification_id, payload, started, replaces, None, chain, contrib)
    )
    key = (write.app, write.user, write.event.id)
    batch.plan.stored[key] = StoredNotification(write.app, write.user, seq, write.event.id, payload)


_HEAD = b'{"seq":0,"id":""'


def _plain_payload(batch: _Batch, write: InboxWrite, seq: int, notification_id: str) -> bytes:
    """``render_notification`` of a row that aggregates nothing, byte for byte, rendered once per event and
    commit: every recipient's notification is the same JSON but for its leading ``seq`` and ``id``."""
    tail = batch.tails.get(write.event.id)
    if tail is None:
        whole = render_notification(write, seq=0, notification_id="", created_at=batch.now)
        assert whole.startswith(_HEAD)  # the rendering's first two keys, in this order
        tail = batch.tails[write.event.id] = whole[len(_HEAD) :]
    return b'{"seq":%d,"id":%b%b' % (seq, orjson.dumps(notification_id), tail)


def _in_app_decision(
    batch: _Batch, write: InboxWrite, seq: int, state: Current, replaces: int | None
) -> None:
    if replaces is None:
        _decide(batch, write, seq, DELIVER, "in_app", write.reason or "recipient")
        return
    reason = f"joined group {write.event.group_key!r}: replaces seq {replaces}, {state.count} events"
    detail = {"replaces": replaces, "count": state.count}
    _decide(batch, write, seq, AGGREGATE, "in_app", reason, detail)


def _plan_channel(batch: _Batch, write: InboxWrite, seq: int, plan: ChannelPlan) -> None:
    due_at, reason, digest = plan.due_at, plan.reason, plan.digest
    if due_at is None and plan.cap > 0:
        due_at, reason, digest = _apply_cap(batch, write, plan)
    item = Deferred(
        write.app,
        write.user,
        seq,
        plan.channel,
        write.event.id,
        batch.now if due_at is None else due_at,
        reason,
        digest,
        *_trace_of(write),
    )
    batch.new_pending.setdefault((write.app, write.user, seq), []).append(item)
    kind = DELIVER if due_at is None else DEFER
    detail: JSON | None = None if due_at is None else {"due_at": due_at, "digest": digest}
    _decide(batch, write, seq, kind, plan.channel, reason, detail)


def _apply_cap(batch: _Batch, write: InboxWrite, plan: ChannelPlan) -> tuple[float | None, str, bool]:
    """Counts one delivery against the user's cap, or defers it into a digest at the window's end."""
    key = (write.app, write.user, plan.channel)
    start = cap_window_start(batch.now, plan.cap_window)
    used = batch.plan.usage.get(key) or batch.usage.get(key)
    count = used.count if used is not None and used.window_start == start else 0
    if count >= plan.cap:
        reason = f"cap of {plan.cap} per {plan.cap_window:.0f}s reached: digest"
        return start + plan.cap_window, reason, True
    batch.plan.usage[key] = Usage(start, count + 1)
    return None, plan.reason, plan.digest


def _decide(
    batch: _Batch,
    write: InboxWrite,
    seq: int,
    kind: str,
    channel: str,
    reason: str,
    detail: dict[str, Any] | None = None,
) -> None:
    batch.plan.decisions.append(
        Decision(write.app, write.event.id, write.user, kind, reason, channel, seq, batch.now, detail)
    )


def _trace_of(write: InboxWrite) -> tuple[str | None, str | None]:
    trace = write.trace
    if not trace or "traceparent" not in trace:
        return None, None
    return trace["traceparent"], trace.get("tracestate")

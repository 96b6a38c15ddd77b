"""An in-memory inbox that commits through ``core.aggregation.plan_commit`` exactly as the stores do, for
property tests of aggregation without a database (and as a reference the store tests compare against)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from tidings.core import aggregation
from tidings.core.models import ChannelPlan, Event, InboxWrite, StoredNotification
from tidings.core.rules import Decision, Deferred


@dataclass
class Row:
    seq: int
    event_id: str
    group_key: str | None
    payload: bytes
    group_started_at: float | None
    replaces: int | None
    replaced_by: int | None = None
    read: bool = False

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(self.payload)
        return body


@dataclass
class ModelInbox:
    """One app's inboxes; ``write`` mirrors ``ports.Inbox.write``, ``mark_read`` its ``mark``."""

    app: str = "a"
    rows: dict[str, dict[int, Row]] = field(default_factory=dict)  # user -> seq -> row
    pending: dict[aggregation.RowKey, list[Deferred]] = field(default_factory=dict)
    usage: dict[aggregation.UsageKey, aggregation.Usage] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def write(self, writes: Sequence[InboxWrite], now: float) -> list[StoredNotification]:
        stored = {
            (w.app, w.user, w.event.id): self._stored(w.user, row)
            for w in writes
            for row in self.rows.get(w.user, {}).values()
            if row.event_id == w.event.id
        }
        fresh = {(w.app, w.user, w.event.id): w for w in writes if (w.app, w.user, w.event.id) not in stored}
        if fresh:
            last = {(self.app, user): max(self.rows.get(user, {}), default=0) for _, user, _ in fresh}
            current = self._current(fresh.values())
            plan = aggregation.plan_commit(
                list(fresh.values()),
                last=last,
                current=current,
                pending={k: v for k, v in self.pending.items() if k[2] in {c.seq for c in current.values()}},
                usage=dict(self.usage),
                now=now,
                new_id=lambda: f"n{next(self.ids)}",
            )
            self._apply(plan)
            stored.update(plan.stored)
        return [stored[(w.app, w.user, w.event.id)] for w in writes]

    def _current(self, writes: Any) -> dict[aggregation.GroupKey, aggregation.Current]:
        found = {}
        for w in writes:
            if w.event.group_key is None or w.aggregate_window <= 0:
                continue
            rows = [r for r in self.rows.get(w.user, {}).values() if r.group_key == w.event.group_key]
            if rows:
                newest = max(rows, key=lambda r: r.seq)
                current = aggregation.current_from_row(newest.seq, newest.payload, newest.group_started_at)
                if current is not None:
                    found[(w.app, w.user, w.event.group_key)] = current
        return found

    def _apply(self, plan: aggregation.CommitPlan) -> None:
        for new in plan.rows:
            self.rows.setdefault(new.write.user, {})[new.seq] = Row(
                new.seq,
                new.write.event.id,
                new.write.event.group_key,
                new.payload,
                new.group_started_at,
                new.replaces,
                new.replaced_by,
            )
        for (_, user, seq), by in plan.replaced:
            self.rows[user][seq].replaced_by = by
        # All moves at once, from the rows as stored (as one UPDATE does): a chained move would find nothing.
        taken = {key: self.pending.pop(key) for key, _ in plan.moved}
        for key, new_seq in plan.moved:
            self.pending[(key[0], key[1], new_seq)] = [replace(d, seq=new_seq) for d in taken[key]]
        for item in plan.deferred:
            self.pending.setdefault((item.app, item.user, item.seq), []).append(item)
        self.usage.update(plan.usage)
        self.decisions.extend(plan.decisions)

    def _stored(self, user: str, row: Row) -> StoredNotification:
        return StoredNotification(self.app, user, row.seq, row.event_id, row.payload)

    def shown(self, user: str) -> list[Row]:
        return [row for seq, row in sorted(self.rows.get(user, {}).items()) if row.replaced_by is None]

    def backlog(self, user: str, after: int) -> list[tuple[int, bytes]]:
        return [(row.seq, row.payload) for row in self.shown(user) if row.seq > after]

    def unread(self, user: str) -> int:
        return sum(1 for row in self.shown(user) if not row.read)

    def mark_read(self, user: str, up_to: int) -> None:
        for row in self.rows.get(user, {}).values():
            if row.seq <= up_to:
                row.read = True
        for key in [k for k in self.pending if k[1] == user and k[2] <= up_to]:
            del self.pending[key]


def like(
    event_id: str,
    user: str,
    *,
    actor: str = "bob",
    group: str | None = "post:42:like",
    type_: str = "post.liked",
    window: float = 3600.0,
    channels: tuple[ChannelPlan, ...] = (),
    app: str = "a",
    accepted_at: float = 0.0,
) -> InboxWrite:
    event = Event(
        id=event_id,
        app=app,
        type=type_,
        accepted_at=accepted_at,
        recipients=(user,),
        actor={"id": actor, "name": actor.title()},
        object={"id": "post:42"},
        group_key=group,
    )
    return InboxWrite(app, user, event, window if group is not None else 0.0, 3, channels, "recipient")

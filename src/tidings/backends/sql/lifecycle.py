"""The life of a notification after its write, the same SQL on both engines: retraction, archive, mark
unread, delete, read/seen marks, and the per-user counters every one of them keeps.

Every function is one synchronous unit of work on a SQLAlchemy ``Connection`` inside the caller's write
transaction (SQLite: the writer thread; PostgreSQL: ``AsyncConnection.run_sync``).

Invariants.

- Counters. ``user_seqs`` (unread, unseen, archived) equal a COUNT of the user's shown notifications (not
  replaced, not removed, not a marker), unread/unseen among the not archived: every change of a row changes
  them in the same transaction, under the user's counter lock (``lock_user``; the inbox write path takes the
  same row lock), so ``counts`` is one primary-key read.
- Retraction wins whatever the order. ``retract`` records a retraction (by event id, or by cancel key for the
  events accepted up to then) before it looks for rows; the inbox write checks those records inside its own
  transaction (``admit``). On PostgreSQL both take a transaction advisory lock per event id and cancel key
  (shared in the write, exclusive in the retraction), so either the write commits first and the retraction
  then finds its rows, or the retraction commits first and the write skips the event. SQLite's single writer
  serializes them anyway.
- Gap-free streams. A removed row stays (``removed_at``), so a redelivered event finds it and writes nothing;
  a backlog leaves it out, as it leaves out replaced rows, and the retraction adds a *marker* row with the next
  seq (``kind`` 'retract', its payload the ``retract`` frame), so a stream resumed from any point learns of it.
  An aggregate that keeps surviving events is re-rendered instead, as a new row that ``replaces`` it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import orjson
from sqlalchemy import ARRAY, Connection, Text, and_, any_, bindparam, delete, func, or_, select, text, update

from tidings.backends.sql import queries
from tidings.backends.sql.ledger import cancel_decisions
from tidings.backends.sql.rows import cancel_decision
from tidings.backends.sql.targets import insert_for
from tidings.core import aggregation, frames
from tidings.core.models import InboxWrite, StoredNotification
from tidings.core.rules import CANCEL, Decision
from tidings.db.schema import cancel_keys, decisions, deferred, deliveries, inbox, retractions, user_seqs

RETRACT = "retract"  # the decision kind of a retraction
CHUNK = 256  # keys per IN list: bounded statements for any list length
Action = Literal["archive", "unarchive", "unread", "delete"]
Counts = tuple[int, int, int]  # (unread, unseen, archived)

i = inbox.c


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _lock_keys(conn: Connection, app: str, ids: Iterable[str], keys: Iterable[str], *, shared: bool) -> None:
    """PostgreSQL: transaction advisory locks per event id and cancel key, in one order (no deadlock)."""
    if not _postgres(conn):
        return
    names = sorted({f"e\x1f{app}\x1f{e}" for e in ids} | {f"k\x1f{app}\x1f{k}" for k in keys})
    if not names:
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    sql = text(
        f"SELECT count({function}(h)) FROM (SELECT hashtextextended(n, 0) AS h "
        "FROM unnest(CAST(:names AS text[])) AS n ORDER BY h) AS s"
    ).bindparams(bindparam("names", names))
    conn.execute(sql)


# --- counters ------------------------------------------------------------------------------------------------


def lock_user(conn: Connection, app: str, user: str) -> tuple[int, list[int]]:
    """The user's counter row, created when missing and locked (PostgreSQL): (last seq, [counters])."""
    ensure = insert_for(conn, user_seqs).values(app=app, user_id=user, last_seq=0)
    conn.execute(ensure.on_conflict_do_nothing())
    c = user_seqs.c
    query = select(c.last_seq, c.unread, c.unseen, c.archived).where(c.app == app, c.user_id == user)
    if _postgres(conn):
        query = query.with_for_update()
    row = conn.execute(query).one()
    return int(row[0]), [int(row[1]), int(row[2]), int(row[3])]


def save_user(conn: Connection, app: str, user: str, last: int, counts: Sequence[int]) -> None:
    c = user_seqs.c
    conn.execute(
        update(user_seqs)
        .where(c.app == app, c.user_id == user)
        .values(last_seq=last, unread=counts[0], unseen=counts[1], archived=counts[2])
    )


def counts(conn: Connection, app: str, user: str) -> Counts:
    c = user_seqs.c
    row = conn.execute(select(c.unread, c.unseen, c.archived).where(c.app == app, c.user_id == user)).first()
    return (int(row[0]), int(row[1]), int(row[2])) if row is not None else (0, 0, 0)


def _state(row: Any) -> tuple[int, int, int]:
    return aggregation.row_state(row.read_at, row.seen_at, row.archived_at)


def _sub(counts: list[int], state: Sequence[int]) -> None:
    for n, value in enumerate(state):
        counts[n] -= value


# --- the write path's check ------------------------------------------------------------------------------------


def admit(conn: Connection, writes: Sequence[InboxWrite], now: float) -> set[str]:
    """The event ids among ``writes`` that were retracted (their writes create nothing), checked under the
    events' shared locks; records which events carry a cancel key, and the retraction decision of each
    retracted event (once)."""
    events = {(w.app, w.event.id): w.event for w in writes}
    gone: set[str] = set()
    for app in sorted({a for a, _ in events}):
        mine = [e for (a, _), e in events.items() if a == app]
        ids = [e.id for e in mine]
        keyed = [e for e in mine if e.cancel_key is not None]
        _lock_keys(conn, app, ids, [e.cancel_key for e in keyed if e.cancel_key], shared=True)
        r = retractions.c
        for chunk in _chunks(ids):
            where = and_(r.app == app, r.kind == "event", r.key.in_(chunk))
            gone.update(conn.execute(select(r.key).where(where)).scalars())
        if keyed:
            names = sorted({e.cancel_key for e in keyed if e.cancel_key})
            query = select(r.key, r.at).where(r.app == app, r.kind == "key", r.key.in_(names))
            until = {key: at for key, at in conn.execute(query)}
            gone.update(e.id for e in keyed if e.cancel_key in until and e.accepted_at <= until[e.cancel_key])
            rows = [
                {"app": app, "cancel_key": e.cancel_key, "event_id": e.id, "accepted_at": e.accepted_at}
                for e in keyed
                if e.id not in gone
            ]
            if rows:
                conn.execute(insert_for(conn, cancel_keys).on_conflict_do_nothing(), rows)
        reason = "retracted before its fan-out: not delivered"
        _record(conn, [Decision(app, e, "", RETRACT, reason, "in_app", None, now) for e in ids if e in gone])
    return gone


def _record(conn: Connection, items: Sequence[Decision]) -> None:
    if not items:
        return
    values = [
        {
            "app": d.app,
            "event_id": d.event_id,
            "user_id": d.user,
            "kind": d.kind,
            "channel": d.channel,
            "reason": d.reason,
            "seq": d.seq,
            "detail": orjson.dumps(d.detail).decode() if d.detail is not None else None,
            "at": d.at,
        }
        for d in items
    ]
    # executemany: a statement compiled once, whatever the number of rows (a topic has thousands)
    conn.execute(insert_for(conn, decisions).on_conflict_do_nothing(), values)


# --- retraction ------------------------------------------------------------------------------------------------


def retract(
    conn: Connection,
    app: str,
    event_ids: Sequence[str],
    keys: Sequence[str],
    at: float,
    new_id: Callable[[], str],
) -> list[StoredNotification]:
    """Records the retraction of ``event_ids`` and of the events with a cancel key in ``keys`` accepted up
    to ``at``; removes or re-renders their rows in every inbox of the app; returns the rows to publish
    (markers, kind 'retract', and re-rendered aggregates)."""
    ids, names = sorted(set(event_ids)), sorted(set(keys))
    _lock_keys(conn, app, ids, names, shared=False)
    r = retractions.c
    marks = [{"app": app, "kind": "event", "key": e, "at": at} for e in ids]
    marks += [{"app": app, "kind": "key", "key": k, "at": at} for k in names]
    if marks:
        upsert = insert_for(conn, retractions).values(marks)
        conn.execute(upsert.on_conflict_do_update(index_elements=[r.app, r.kind, r.key], set_={"at": at}))
    k = cancel_keys.c
    targets = set(ids)
    for chunk in _chunks(names):
        where = and_(k.app == app, k.cancel_key.in_(chunk), k.accepted_at <= at)
        targets.update(conn.execute(select(k.event_id).where(where)).scalars())
    events = sorted(targets)

    def fetch(columns: Sequence[Any]) -> list[Any]:
        return [
            row
            for chunk in _chunks(events)
            for row in conn.execute(select(*columns).where(i.app == app, i.event_id.in_(chunk)))
        ]

    reason = "retracted by the producer"
    _record(conn, [Decision(app, e, "", RETRACT, reason, "in_app", None, at) for e in sorted(targets)])
    return _retract_rows(conn, app, fetch, at, new_id, reason)


def scrub_actor(
    conn: Connection, app: str, actor: str, at: float, new_id: Callable[[], str]
) -> list[StoredNotification]:
    """Takes ``actor`` out of every aggregate of the app where they contributed, as retracting their
    contributions would; returns the rows to publish."""
    pattern = "%" + orjson.dumps(actor).decode().replace("%", r"\%").replace("_", r"\_") + "%"
    where = and_(i.app == app, i.contrib.is_not(None), i.contrib.like(pattern, escape="\\"))

    def fetch(columns: Sequence[Any]) -> list[Any]:
        found = conn.execute(select(*columns, i.contrib.label("c")).where(where))
        return [row for row in found if (orjson.loads(row.c).get("actor") or {}).get("id") == actor]

    return _retract_rows(conn, app, fetch, at, new_id, "the actor's data was erased")


ROW_COLUMNS = [i.user_id, i.seq, i.event_id, i.payload, i.group_key, i.group_started_at, i.read_at]
ROW_COLUMNS += [i.seen_at, i.archived_at, i.removed_at, i.replaced_by, i.kind, i.type, i.chain, i.contrib]
ROW_COLUMNS += [i.created_at]


def _rows(conn: Connection, app: str, user: str, where: Any) -> list[Any]:
    return list(conn.execute(select(*ROW_COLUMNS).where(queries.of_user(app, user), where).order_by(i.seq)))


def _lock_users(conn: Connection, app: str, users: Sequence[str]) -> dict[str, tuple[int, list[int]]]:
    """The counter rows of ``users`` (created when missing), locked in user order on PostgreSQL as the write
    path locks them: {user: (last seq, [unread, unseen, archived])}."""
    ordered = sorted(set(users))
    locked: dict[str, tuple[int, list[int]]] = {}
    if not ordered:
        return locked
    c = user_seqs.c
    ensure = insert_for(conn, user_seqs).on_conflict_do_nothing()  # executemany: compiled once
    conn.execute(ensure, [{"app": app, "user_id": u, "last_seq": 0} for u in ordered])
    postgres = _postgres(conn)
    # PostgreSQL: one statement, the users as one array (an IN list of hundreds was planned poorly).
    for chunk in [ordered] if postgres else _chunks(ordered):
        which = (
            c.user_id == any_(bindparam("users", list(chunk), type_=ARRAY(Text)))
            if postgres
            else c.user_id.in_(chunk)
        )
        query = (
            select(c.user_id, c.last_seq, c.unread, c.unseen, c.archived)
            .where(c.app == app, which)
            .order_by(c.user_id)
        )
        if postgres:
            query = query.with_for_update()
        for row in conn.execute(query):
            locked[row.user_id] = (int(row.last_seq), [int(row.unread), int(row.unseen), int(row.archived)])
    return locked


def _retract_rows(
    conn: Connection,
    app: str,
    fetch: Callable[[Sequence[Any]], list[Any]],
    at: float,
    new_id: Callable[[], str],
    reason: str,
) -> list[StoredNotification]:
    """Takes the events of the rows ``fetch`` selects out: whole rows removed, aggregates re-rendered from
    their surviving contributions; one marker row per user lists the removed seqs. Set-based over the users
    (a topic's fan-out is thousands of them); the re-renders go one aggregate at a time. The rows are read
    again once their users' counters are locked, so no write changes them in between."""
    locked = _lock_users(conn, app, [row.user_id for row in fetch([i.user_id])])
    rows = fetch(ROW_COLUMNS)
    removed: dict[str, list[Any]] = {}
    chains: set[tuple[str, int]] = set()
    uncounted: list[dict[str, Any]] = []
    logged: list[Decision] = []
    for row in rows:
        if row.removed_at is not None or row.kind != "notification":
            continue
        logged.append(Decision(app, row.event_id, row.user_id, RETRACT, reason, "in_app", row.seq, at))
        if row.chain is not None and row.contrib is not None:
            uncounted.append({"u": row.user_id, "s": row.seq})
            chains.add((row.user_id, row.chain))
        elif row.replaced_by is None:
            removed.setdefault(row.user_id, []).append(row)
    _record(conn, logged)  # per recipient: which of their notifications it took
    if uncounted:
        where = and_(i.app == app, i.user_id == bindparam("u"), i.seq == bindparam("s"))
        conn.execute(update(inbox).where(where).values(contrib=None), uncounted)
    published: list[StoredNotification] = []
    last = {user: value[0] for user, value in locked.items()}
    for user, chain in sorted(chains):
        heads = _rows(conn, app, user, and_(i.chain == chain, i.seq >= chain, _shown()))
        if not heads:
            continue
        head = heads[0]
        contribs = list(
            conn.execute(
                select(i.contrib)
                .where(queries.of_user(app, user), i.seq >= chain, i.chain == chain, i.contrib.is_not(None))
                .order_by(i.seq)
            ).scalars()
        )
        if not contribs:
            removed.setdefault(user, []).append(head)
            continue
        last[user] += 1
        published.append(_rerender(conn, app, user, head, contribs, last[user], at, new_id()))
    _remove(
        conn, app, [(row.user_id, row.seq) for rows_of in removed.values() for row in rows_of], at, reason
    )
    markers: list[dict[str, Any]] = []
    for user in sorted(removed):
        counts_now = locked[user][1]
        for row in removed[user]:
            _sub(counts_now, _state(row))
        last[user] += 1
        seqs_out = sorted(row.seq for row in removed[user])
        payload = frames.encode_retract(seqs_out, unread=counts_now[0], unseen=counts_now[1])
        marker = new_id()
        markers.append(
            {
                "app": app,
                "user_id": user,
                "seq": last[user],
                "id": marker,
                "event_id": marker,
                "payload": payload,
                "created_at": at,
                "kind": "retract",
            }
        )
        published.append(StoredNotification(app, user, last[user], marker, payload, kind="retract"))
    if markers:
        conn.execute(inbox.insert(), markers)
    changed = [
        {"u": user, "l": last[user], "n1": value[1][0], "n2": value[1][1], "n3": value[1][2]}
        for user, value in locked.items()
        if last[user] != value[0]
    ]
    if changed:
        c = user_seqs.c
        conn.execute(
            update(user_seqs)
            .where(c.app == app, c.user_id == bindparam("u"))
            .values(
                last_seq=bindparam("l"),
                unread=bindparam("n1"),
                unseen=bindparam("n2"),
                archived=bindparam("n3"),
            ),
            changed,
        )
    return published


def _shown() -> Any:
    return and_(i.replaced_by.is_(None), i.removed_at.is_(None), i.kind == "notification")


def _rerender(
    conn: Connection, app: str, user: str, head: Any, contribs: list[str], seq: int, at: float, row_id: str
) -> StoredNotification:
    """The aggregate ``head`` as a new row ``seq`` made of ``contribs``; its read/seen/archive state and pending
    deliveries move with it, so the counters do not change."""
    actors, count = aggregation.replay(contribs)
    payload = aggregation.rerender(
        head.payload, seq=seq, notification_id=row_id, actors=actors, count=count, replaces=head.seq
    )
    conn.execute(
        inbox.insert().values(
            app=app,
            user_id=user,
            seq=seq,
            id=row_id,
            event_id=row_id,  # a row no event made: its own id keeps (app, user, event_id) unique
            payload=payload,
            created_at=head.created_at,
            group_key=head.group_key,
            group_started_at=head.group_started_at,
            read_at=head.read_at,
            seen_at=head.seen_at,
            archived_at=head.archived_at,
            type=head.type,
            chain=head.chain,
            replaces=head.seq,
        )
    )
    conn.execute(update(inbox).where(queries.of_user(app, user), i.seq == head.seq).values(replaced_by=seq))
    f = deferred.c
    where = and_(f.app == app, f.user_id == user, f.seq == head.seq)
    conn.execute(update(deferred).where(where).values(seq=seq))
    return StoredNotification(app, user, seq, row_id, payload)


def _remove(conn: Connection, app: str, pairs: Sequence[tuple[str, int]], at: float, reason: str) -> None:
    """Marks the rows ((user, seq)) removed (not joinable any more) and cancels their pending and claimed
    deliveries, each cancellation logged."""
    if not pairs:
        return
    why = f"the notification was {reason}"
    d, f = deliveries.c, deferred.c
    wanted = set(pairs)
    keys = [{"u": user, "s": seq} for user, seq in sorted(wanted)]
    by_key = and_(i.app == app, i.user_id == bindparam("u"), i.seq == bindparam("s"))
    conn.execute(update(inbox).where(by_key).values(removed_at=at, group_started_at=None), keys)
    for chunk in _chunks(sorted({user for user, _ in pairs})):  # by user: one index range each
        pending = conn.execute(
            select(f.user_id, f.seq, f.channel, f.event_id).where(f.app == app, f.user_id.in_(chunk))
        ).all()
        gone = [r for r in pending if (r.user_id, r.seq) in wanted]
        if gone:
            one = and_(
                f.app == app,
                f.user_id == bindparam("u"),
                f.seq == bindparam("s"),
                f.channel == bindparam("c"),
            )
            conn.execute(
                delete(deferred).where(one), [{"u": r.user_id, "s": r.seq, "c": r.channel} for r in gone]
            )
            _record(
                conn, [Decision(app, r.event_id, r.user_id, CANCEL, why, r.channel, r.seq, at) for r in gone]
            )
        waiting = and_(d.app == app, d.user_id.in_(chunk), d.status == "pending")
        claimed = [
            r
            for r in conn.execute(select(d.id, d.event_id, d.user_id, d.channel, d.seq).where(waiting))
            if (r.user_id, r.seq) in wanted
        ]
        if claimed:
            conn.execute(
                update(deliveries)
                .where(d.id.in_([r.id for r in claimed]))
                .values(status="cancelled", last_error=why, lease_owner=None, lease_until=None, updated_at=at)
            )
            cancel_decisions(conn, [(app, r.event_id, r.user_id, r.channel, r.seq) for r in claimed], why, at)


# --- the user's own changes -------------------------------------------------------------------------------------


def change(
    conn: Connection, app: str, user: str, action: Action, seqs: Sequence[int], at: float
) -> tuple[list[int], Counts]:
    """Archives, unarchives, marks unread or deletes the user's shown notifications ``seqs``; returns the
    seqs that changed and the counts after."""
    _, counts_now = lock_user(conn, app, user)
    wanted = sorted(set(seqs))
    rows = [
        row for chunk in _chunks(wanted) for row in _rows(conn, app, user, and_(i.seq.in_(chunk), _shown()))
    ]
    if action == "archive":
        rows = [row for row in rows if row.archived_at is None]
        values: dict[str, Any] = {"archived_at": at}
    elif action == "unarchive":
        rows = [row for row in rows if row.archived_at is not None]
        values = {"archived_at": None}
    elif action == "unread":
        rows = [row for row in rows if row.read_at is not None]
        values = {"read_at": None}
    else:
        values = {}
    for row in rows:
        _sub(counts_now, _state(row))
        if action != "delete":
            after = {"archived_at": row.archived_at, "read_at": row.read_at, "seen_at": row.seen_at, **values}
            state = aggregation.row_state(after["read_at"], after["seen_at"], after["archived_at"])
            _sub(counts_now, [-n for n in state])
    changed = [row.seq for row in rows]
    if action == "delete":
        _remove(conn, app, [(user, seq) for seq in changed], at, "deleted by the user")
    elif changed:
        for chunk in _chunks(changed):
            conn.execute(update(inbox).where(queries.of_user(app, user), i.seq.in_(chunk)).values(**values))
    c = user_seqs.c
    conn.execute(
        update(user_seqs)
        .where(c.app == app, c.user_id == user)
        .values(unread=counts_now[0], unseen=counts_now[1], archived=counts_now[2])
    )
    return changed, (counts_now[0], counts_now[1], counts_now[2])


def mark(
    conn: Connection,
    app: str,
    user: str,
    field: Literal["read", "seen"],
    seqs: Sequence[int] | None,
    up_to: int | None,
    at: float,
) -> int:
    """Sets ``read_at``/``seen_at`` where unset (``seqs`` and ``up_to`` add up), keeps the counters, cancels
    the pending deliveries of those seqs; returns how many rows changed (``ports.Inbox.mark``)."""
    _, counts_now = lock_user(conn, app, user)
    unset = queries.unset_statement(app, user, field, at)
    selections = [i.seq <= up_to] if up_to is not None else []
    wanted = sorted(set(seqs or ()))
    selections += [i.seq.in_(chunk) for chunk in _chunks(wanted)]
    changed = 0
    slot = 0 if field == "read" else 1
    for which in selections:
        returned = conn.execute(
            unset.where(which).returning(i.replaced_by, i.removed_at, i.kind, i.archived_at)
        ).all()
        changed += len(returned)
        counts_now[slot] -= sum(
            1
            for r in returned
            if r.replaced_by is None
            and r.removed_at is None
            and r.kind == "notification"
            and r.archived_at is None
        )
    c = user_seqs.c
    conn.execute(
        update(user_seqs)
        .where(c.app == app, c.user_id == user)
        .values(unread=counts_now[0], unseen=counts_now[1])
    )
    d = deferred.c
    pending = [d.seq <= up_to] if up_to is not None else []
    pending += [d.seq.in_(chunk) for chunk in _chunks(wanted)]
    if pending:
        gone = conn.execute(queries.take_pending(app, user, or_(*pending))).all()
        _record(conn, [cancel_decision(app, user, field, row, at) for row in gone])
    return changed


def count_rows(conn: Connection, app: str, user: str) -> Counts:
    """(unread, unseen, archived) counted from the rows: what the counters must equal (tests, checks)."""
    shown = and_(queries.of_user(app, user), _shown())
    unread = func.count().filter(i.read_at.is_(None), i.archived_at.is_(None))
    unseen = func.count().filter(i.seen_at.is_(None), i.archived_at.is_(None))
    archived = func.count().filter(i.archived_at.is_not(None))
    row = conn.execute(select(unread, unseen, archived).where(shown)).one()
    return int(row[0]), int(row[1]), int(row[2])

"""Fan-out planning, pure: what one event (or fan-out job) makes, given what the planner loaded for it.

``tidings.planner`` does the I/O (rules, subscriber pages and boundaries, preferences, the decision log and
the appends of jobs) and asks this module every question whose answer depends only on data already loaded
and on the clock reading it passes in:

- ``stale_drop``: the one ``DROP`` decision of an event processed later than its type's TTL, or None;
- ``split_jobs``: the chunk jobs (and the next split job) of a split, from the chunk boundaries found;
- ``recipient_chunks`` / ``within`` / ``chunk_range``: the recipients of one job, in chunks;
- ``plan_chunk``: each recipient's verdict (``core.rules.decide``): suppressions as ``SUPPRESS`` decisions, the
  rest as inbox writes carrying their aggregation window and offline channel plans.

Job ids. A job's id is derived from the root event id and its chunk index (``{root}.{index:x}`` for a chunk,
``{root}+{index:x}`` for a split), so a split run twice (a redelivery after a crash) makes the same jobs, and
an event log that dedupes ids refuses the second copies. Ids stay within 32 characters: 26 (a root ULID) + 1 +
at most 5 hex digits, hence ``MAX_CHUNK_INDEX``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from tidings.core.models import Event, FanoutPart, InboxWrite
from tidings.core.rules import (
    DROP,
    MAX_ACTORS,
    NO_PREFERENCES,
    SUPPRESS,
    AppRules,
    Decision,
    UserPreferences,
    Verdict,
    decide,
    stale_reason,
)

T = TypeVar("T")

MAX_CHUNK_INDEX = 0xFFFFF  # job ids stay within 32 characters: 26 (root) + 1 + 5 hex digits


# --- jobs -----------------------------------------------------------------------------------------------------


def job_id(root: str, index: int, kind: str) -> str:
    """The id of chunk (``kind`` "chunk") or split job ``index`` of event ``root``; see the module doc."""
    if index > MAX_CHUNK_INDEX:
        raise ValueError("a topic split into more than 2^20 chunks: raise fanout_chunk")
    return f"{root}{'.' if kind == 'chunk' else '+'}{index:x}"


def root_of(event: Event) -> Event:
    """The producer's event behind a job: what inbox rows and decisions are keyed by."""
    if event.part is None:
        return event
    return dataclasses.replace(event, id=event.part.root, part=None)


def job(event: Event, part: FanoutPart) -> Event:
    """``event`` as the job ``part``: its derived id, and no idempotency key (the producer's key belongs to the
    root event: the log would take the job for a retry of it)."""
    return dataclasses.replace(
        event, id=job_id(part.root, part.index, part.kind), part=part, idempotency_key=None
    )


def split_jobs(event: Event, part: FanoutPart, bounds: Sequence[str], split: int) -> list[Event]:
    """The jobs a split appends: one chunk job per range ending at each of ``bounds`` (the ids found after
    ``part.after``, one every chunk, at most ``split`` of them), then, when ``split`` bounds were found (there
    may be more subscribers), the next split job going on from the last bound, else the tail chunk (less than
    one chunk, to the end of the list). Chunk ranges tile the id space: (after, b1], (b1, b2], ..., (bn, end).
    """
    jobs, after, index = [], part.after, part.index
    for bound in bounds:
        jobs.append(job(event, FanoutPart("chunk", part.root, index, after, bound)))
        after, index = bound, index + 1
    if len(bounds) == split:  # maybe more: the next split job goes on from here
        jobs.append(job(event, FanoutPart("split", part.root, index, after)))
    else:  # the tail, less than one chunk
        jobs.append(job(event, FanoutPart("chunk", part.root, index, after, None)))
    return jobs


# --- recipients -----------------------------------------------------------------------------------------------


def recipient_chunks(recipients: Iterable[str], size: int) -> Iterator[list[str]]:
    """The distinct recipients, each at its first appearance, in chunks of ``size`` (the last one shorter).

    A recipient named twice in one event gets one notification: the inbox is idempotent on (app, user, event)
    anyway, but a duplicate in one batch would only cost a wasted write.
    """
    return chunked(dict.fromkeys(recipients), size)


def chunk_range(event: Event) -> tuple[str | None, str | None]:
    """The subscriber range (after, until] a topic event covers: the whole topic, or its chunk job's range."""
    part = event.part
    return (part.after, part.until) if part is not None else (None, None)


def within(users: Sequence[str], until: str | None) -> list[str]:
    """The users of an ascending page that fall in a range ending at ``until`` (None: no end)."""
    if until is None:
        return list(users)
    return [user for user in users if user <= until]


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter), reading ``items`` lazily.

    Raises ``ValueError`` at once, not at the first ``next()``, when ``size`` < 1.
    """
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return _chunks(iter(items), size)


def _chunks(iterator: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(iterator, size)):
        yield chunk


# --- decisions ------------------------------------------------------------------------------------------------


def stale_drop(root: Event, rules: AppRules, now: float) -> Decision | None:
    """The ``DROP`` decision (user "") of an event too old to notify anyone at ``now``, or None."""
    reason = stale_reason(root, rules, now)
    if reason is None:
        return None
    return Decision(root.app, root.id, "", DROP, reason, at=now)


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """One chunk of recipients, decided: inbox ``writes`` in recipient order, and the ``suppressed`` decisions
    to record (the store records the others, deliver/defer/aggregate, in the write transaction)."""

    writes: list[InboxWrite]
    suppressed: list[Decision]


def plan_chunk(
    root: Event,
    users: Sequence[str],
    rules: AppRules,
    prefs: Mapping[str, UserPreferences],
    now: float,
) -> ChunkPlan:
    """Each user's verdict on ``root`` at ``now``: ``prefs`` holds those of ``users`` who set preferences; the
    others get the app's defaults (decided once per chunk: most users set nothing)."""
    window = rules.window_of(root.type) if root.group_key is not None else 0.0
    usual = decide(root, rules, NO_PREFERENCES, now)
    writes, suppressed = [], []
    for user in users:
        verdict = _verdict(root, rules, prefs.get(user), now, usual)
        if verdict.suppressed is not None:
            suppressed.append(Decision(root.app, root.id, user, SUPPRESS, verdict.suppressed, at=now))
            continue
        writes.append(
            InboxWrite(root.app, user, root, window, MAX_ACTORS, verdict.channels, verdict.in_app_reason)
        )
    return ChunkPlan(writes, suppressed)


def _verdict(
    root: Event, rules: AppRules, prefs: UserPreferences | None, now: float, usual: Verdict
) -> Verdict:
    return usual if prefs is None else decide(root, rules, prefs, now)

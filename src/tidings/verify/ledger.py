"""The accounting of ``tidings verify``: what the producers got a 2xx for, against what each inbox holds and
each live client received. Pure (no I/O, no clock): the runner hands it the records, it hands back a
``Report`` whose counts decide the exit code and whose lines name every event that went wrong.

What counts as what (each user is new to the run, so its seqs start at 1):

- lost: an accepted event missing from a recipient's inbox, or an inbox row a live client never received;
- duplicated: one sent event (one producer, one number) in an inbox twice, or under another event id than
  the one its 2xx answered (an idempotency key that made a second event);
- gaps: an inbox whose seqs are not 1, 2, 3, ...;
- out of order: a producer's events in a user's inbox in another order than it sent them one after another
  (the order of a lane), or a client that received seqs not strictly increasing.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Ref = tuple[int, int]  # (producer, its n-th event): what an event is, whatever id the server gave it
MAX_LINES = 20  # problem lines kept per kind; the counts are always whole


@dataclass(frozen=True, slots=True)
class Sent:
    """One event a producer got a 2xx for; ``accepted_at`` is when the answer arrived (monotonic s)."""

    ref: Ref
    event_id: str
    recipients: tuple[str, ...]
    accepted_at: float


@dataclass(frozen=True, slots=True)
class Row:
    """An inbox row or a live receipt: its seq, event id and the ``ref`` read from the notification's data
    (None when the data carries none); ``at`` is the receipt time for a live client."""

    seq: int
    event_id: str
    ref: Ref | None
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Stream:
    """What one live client received, across its drops and resumes, from ``after`` on."""

    name: str
    user: str
    received: tuple[Row, ...]
    after: int = 0


@dataclass(frozen=True, slots=True)
class Fault:
    """One run of the fault command: when it started and ended (monotonic s) and its exit status."""

    started: float
    ended: float
    status: int


@dataclass
class Report:
    """The outcome: counts by kind, a few named examples of each, latency and recovery figures."""

    events: int = 0
    deliveries: int = 0
    users: int = 0
    clients: int = 0
    faults: int = 0
    resumes: int = 0  # live connections that were dropped and resumed (by the client, or by a fault)
    reordered: int = 0  # lanes out of send order where lane order is not promised (several fan-out workers)
    unconfirmed: int = 0  # rows of events whose 2xx never arrived (sent, answer lost): not a failure
    incomplete: str = ""  # why fewer events than asked were accepted (timeout, refusals), empty if none
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    latency_ms: dict[str, float] = field(default_factory=dict)
    recovery_s: list[float] = field(default_factory=list)

    KINDS = ("lost", "duplicated", "gaps", "out_of_order")

    @property
    def ok(self) -> bool:
        return not self.incomplete and not any(self.counts[kind] for kind in self.KINDS)

    def add(self, kind: str, line: str) -> None:
        self.counts[kind] += 1
        lines: list[str] = getattr(self, kind)
        if len(lines) < MAX_LINES:
            lines.append(line)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "deliveries": self.deliveries,
            "users": self.users,
            "clients": self.clients,
            "faults": self.faults,
            "resumes": self.resumes,
            "unconfirmed": self.unconfirmed,
            "reordered": self.reordered,
            "incomplete": self.incomplete or None,
            **{kind: self.counts[kind] for kind in self.KINDS},
            "examples": {kind: getattr(self, kind) for kind in self.KINDS if getattr(self, kind)},
            "latency_ms": self.latency_ms,
            "recovery_s": self.recovery_s,
        }


def ref_of(data: object) -> Ref | None:
    """The ``(producer, n)`` a verify event carries in its data as ``{"p": producer, "n": n}``."""
    if not isinstance(data, Mapping):
        return None
    p, n = data.get("p"), data.get("n")
    return (p, n) if isinstance(p, int) and isinstance(n, int) else None


def account(
    sent: Sequence[Sent],
    inboxes: Mapping[str, Sequence[Row]],
    streams: Sequence[Stream] = (),
    faults: Sequence[Fault] = (),
    *,
    lane_order: bool = True,
) -> Report:
    """Every check over every user and client; the report of what held and what did not. ``lane_order``
    False: a producer's events out of send order in an inbox are counted in ``reordered``, not failed (the
    contract promises lane order within one fan-out worker; several workers may commit neighbours either way)."""
    report = Report(events=len(sent), users=len(inboxes), clients=len(streams), faults=len(faults))
    by_user: dict[str, list[Sent]] = defaultdict(list)
    for event in sent:
        for user in event.recipients:
            by_user[user].append(event)
    report.deliveries = sum(len(events) for events in by_user.values())
    for user in sorted(set(inboxes) | set(by_user)):
        _check_inbox(report, user, inboxes.get(user, ()), by_user.get(user, []), lane_order)
    for stream in streams:
        _check_stream(report, stream, inboxes.get(stream.user, ()))
    report.latency_ms = latency_ms(sent, streams)
    report.recovery_s = recovery_s(faults, [event.accepted_at for event in sent])
    return report


def _check_inbox(
    report: Report, user: str, inbox: Sequence[Row], sent: Sequence[Sent], lane_order: bool
) -> None:
    seqs = [row.seq for row in inbox]
    if seqs != list(range(1, len(seqs) + 1)):
        report.add("gaps", f"{user}: inbox seqs are not 1..{len(seqs)}: {first_departure(seqs)}")
    expected = {event.ref: event for event in sent}
    seen: Counter[Ref] = Counter(row.ref for row in inbox if row.ref is not None)
    for ref, times in sorted(seen.items()):
        if times > 1:
            report.add("duplicated", f"{user}: {_name(ref)} is in the inbox {times} times")
    for row in inbox:
        event = expected.get(row.ref) if row.ref is not None else None
        if event is None:
            report.unconfirmed += 1
        elif row.event_id != event.event_id:
            report.add(
                "duplicated",
                f"{user}: {_name(event.ref)} is in the inbox as {row.event_id}, its 2xx said {event.event_id}",
            )
    for ref, event in expected.items():
        if ref not in seen:
            report.add("lost", f"{user}: {_name(ref)} ({event.event_id}) accepted, not in the inbox")
    lanes: dict[int, list[int]] = defaultdict(list)
    for row in inbox:
        if row.ref is not None and seen[row.ref] == 1:
            lanes[row.ref[0]].append(row.ref[1])
    for producer, numbers in sorted(lanes.items()):
        if numbers != sorted(numbers) and not lane_order:
            report.reordered += 1
        elif numbers != sorted(numbers):
            at = next(i for i in range(1, len(numbers)) if numbers[i] < numbers[i - 1])
            report.add(
                "out_of_order",
                f"{user}: producer p{producer}'s events out of send order at #{numbers[at]} "
                f"(after #{numbers[at - 1]})",
            )


def _check_stream(report: Report, stream: Stream, inbox: Sequence[Row]) -> None:
    seqs = [row.seq for row in stream.received]
    if any(b <= a for a, b in itertools.pairwise(seqs)):
        report.add("out_of_order", f"{stream.name}: received seqs out of order: {first_departure(seqs)}")
    got = {row.seq: row for row in stream.received}
    missing = [row for row in inbox if row.seq > stream.after and row.seq not in got]
    for row in missing[:MAX_LINES]:
        report.add("lost", f"{stream.name}: seq {row.seq} ({row.event_id}) in the inbox, never received")
    report.counts["lost"] += max(0, len(missing) - MAX_LINES)
    wrong = [row.seq for row in inbox if row.seq in got and got[row.seq].event_id != row.event_id]
    if wrong:
        report.add("duplicated", f"{stream.name}: another event than the inbox's at seqs {wrong[:5]}")


def latency_ms(sent: Sequence[Sent], streams: Sequence[Stream]) -> dict[str, float]:
    """Accepted (2xx) to the first live receipt by any client of that user, per delivery: p50, p90, p99, max.
    A receipt that beat its 2xx counts as 0."""
    accepted = {event.ref: event.accepted_at for event in sent}
    first: dict[tuple[str, Ref], float] = {}
    for stream in streams:
        for row in stream.received:
            if row.ref in accepted and row.ref is not None:
                key = (stream.user, row.ref)
                first[key] = min(first.get(key, math.inf), row.at)
    samples = sorted(max(0.0, (at - accepted[ref]) * 1000.0) for (_, ref), at in first.items())
    if not samples:
        return {}
    return {
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": samples[-1],
        "count": float(len(samples)),
    }


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def recovery_s(faults: Sequence[Fault], accepted_at: Sequence[float]) -> list[float]:
    """Per fault: the longest stretch without a 2xx that overlaps the fault command's run (from the last event
    accepted before the fault bit to the first one after). A fault with no 2xx after it has no figure."""
    times = sorted(accepted_at)
    figures = []
    for fault in faults:
        gaps = [b - a for a, b in itertools.pairwise(times) if a <= fault.ended and b >= fault.started]
        if gaps:
            figures.append(max(gaps))
    return figures


def first_departure(seqs: Sequence[int]) -> str:
    """Where a seq list first departs from 1, 2, 3, ... (gaps, repeats and reorders all show here)."""
    for i, seq in enumerate(seqs):
        if seq != i + 1:
            return (
                f"position {i} has seq {seq} (around {list(seqs[max(0, i - 2) : i + 3])}), {len(seqs)} in all"
            )
    return f"{len(seqs)} in all"


def _name(ref: Ref) -> str:
    return f"p{ref[0]} #{ref[1]}"

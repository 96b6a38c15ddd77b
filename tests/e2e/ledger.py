"""The ledger checker: what producers got 2xx for, against what each inbox holds and each client received.

Every check returns a list of problems in plain words (empty means the guarantee held), so a failing test
shows exactly which user, seq and event went wrong instead of a bare assertion.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from .clients import StreamClient
from .harness import http_client
from .producer import Accepted, Producer

Notification = dict[str, Any]
MAX_PAGES = 10_000  # a bound on paging one inbox: 1,000,000 rows at 100 a page


def accepted_by_user(producers: Iterable[Producer]) -> dict[str, list[Accepted]]:
    """Each user's accepted events (from every producer), each producer's in its send order."""
    by_user: dict[str, list[Accepted]] = defaultdict(list)
    for producer in producers:
        for accepted in producer.accepted:
            for user in accepted.recipients:
                by_user[user].append(accepted)
    return by_user


async def fetch_inbox(base_url: str, token: str, page: int = 100) -> list[Notification]:
    """The user's whole inbox, oldest first, read with ``GET /v1/me/notifications?after=`` page by page."""
    items: list[Notification] = []
    after = 0
    async with http_client(base_url, token=token) as http:
        for _ in range(MAX_PAGES):
            response = await http.get("/v1/me/notifications", params={"after": after, "limit": page})
            assert response.status_code == 200, f"inbox read: {response.status_code} {response.text}"
            batch: list[Notification] = response.json()["items"]
            if not batch:
                return items
            items.extend(batch)
            after = int(batch[-1]["seq"])
    raise AssertionError(f"inbox longer than {MAX_PAGES} pages")


def check_inbox(
    user: str, inbox: Sequence[Notification], accepted: Sequence[Accepted], *, per_key: bool = False
) -> list[str]:
    """Exactly the accepted events, once each, seqs 1..n gap-free, and each producer's events in its order
    (``per_key``: only its events with the same ordering key, what a partitioned log promises)."""
    problems = []
    seqs = [int(n["seq"]) for n in inbox]
    if seqs != list(range(1, len(inbox) + 1)):
        problems.append(f"{user}: inbox seqs are not 1..{len(inbox)}: {_first_gap(seqs)}")
    ids = [n["event_id"] for n in inbox]
    duplicates = [event_id for event_id, count in Counter(ids).items() if count > 1]
    if duplicates:
        problems.append(f"{user}: events twice in the inbox: {duplicates[:5]}")
    expected = {a.event_id for a in accepted}
    lost, extra = expected - set(ids), set(ids) - expected
    if lost:
        problems.append(
            f"{user}: {len(lost)} accepted events missing from the inbox, e.g. {sorted(lost)[:5]}"
        )
    if extra:
        problems.append(
            f"{user}: {len(extra)} inbox rows that nobody sent to this user, e.g. {sorted(extra)[:5]}"
        )
    return problems + _check_producer_order(user, ids, accepted, per_key)


def ordering_key(accepted: Accepted) -> str:
    """The event's ordering key, derived from its request as ``tidings.core.ordering.ordering_key`` does: the
    ``ordering_key`` given, else the single recipient, else the topic, else the event id."""
    body = accepted.body
    recipients = body.get("recipients") or []
    if body.get("ordering_key"):
        return str(body["ordering_key"])
    if len(recipients) == 1:
        return str(recipients[0])
    if body.get("topic"):
        return str(body["topic"])
    return accepted.event_id


def _check_producer_order(
    user: str, inbox_ids: Sequence[str], accepted: Sequence[Accepted], per_key: bool
) -> list[str]:
    """Each producer's events in the order it sent them. ``per_key``: only events with the same ordering key
    (docs/contract.md "Order"): a partitioned log (Kafka) fans events of different keys out in any order, and
    the events of one batch request, appended to several partitions at once, may overtake each other."""
    lane_of = {a.event_id: (a.producer, ordering_key(a) if per_key else "") for a in accepted}
    problems = []
    for lane in sorted(set(lane_of.values())):
        producer, key = lane
        sent = [a.event_id for a in accepted if lane_of[a.event_id] == lane]
        got = [event_id for event_id in inbox_ids if lane_of.get(event_id) == lane]
        if got != sent and set(got) == set(sent):  # (lost or extra events are reported by check_inbox)
            at = next((i for i, (a, b) in enumerate(zip(got, sent, strict=False)) if a != b), len(sent))
            whose = f"{producer}'s events with key {key!r}" if per_key else f"{producer}'s events"
            problems.append(f"{user}: {whose} out of order from its #{at}: got {got[at : at + 3]}")
    return problems


def check_stream(client: StreamClient, inbox: Sequence[Notification]) -> list[str]:
    """The stream, across reconnects, is exactly the inbox: seqs 1..n once each, in order, same events."""
    seqs = client.seqs
    want = [int(n["seq"]) for n in inbox]
    problems = []
    if seqs != want:
        problems.append(
            f"{client!r}: received seqs differ from the inbox's 1..{len(want)}: {_first_gap(seqs)}"
        )
    got_ids = {int(n["seq"]): n["event_id"] for n in client.received}
    wrong = [n["seq"] for n in inbox if got_ids.get(int(n["seq"]), n["event_id"]) != n["event_id"]]
    if wrong:
        problems.append(f"{client!r}: a different event than the inbox's at seqs {wrong[:5]}")
    return problems + [f"{client!r}: {violation}" for violation in client.violations]


def _first_gap(seqs: Sequence[int]) -> str:
    """Where a seq list first departs from 1, 2, 3, ... (duplicates, gaps and reorders all show here)."""
    for i, seq in enumerate(seqs):
        if seq != i + 1:
            around = list(seqs[max(0, i - 2) : i + 3])
            return f"position {i} has seq {seq} (around: {around}), {len(seqs)} in all"
    return f"{len(seqs)} in all"


async def check_all(
    base_url: str,
    producers: Sequence[Producer],
    clients: Sequence[StreamClient],
    tokens: dict[str, str],
    *,
    per_key: bool = False,
) -> list[str]:
    """Every check over every user: inbox against the ledger, every client's stream against its inbox."""
    by_user = accepted_by_user(producers)
    problems = [p for producer in producers for p in producer.problems]
    inboxes = {user: await fetch_inbox(base_url, token) for user, token in tokens.items()}
    for user, inbox in inboxes.items():
        problems += check_inbox(user, inbox, by_user.get(user, []), per_key=per_key)
    for client in clients:
        problems += check_stream(client, inboxes[client.user])
    return problems

"""IdempotentLog: producer idempotency for broker logs, keyed in the store."""

from __future__ import annotations

from collections.abc import Sequence

from backend_support import appends, make_event

from tidings.backends.idempotent import IdempotentLog
from tidings.backends.sql.sqlite import SqliteStore
from tidings.errors import IdempotencyMismatchError
from tidings.ports import Append, Appended, Claim, Delivery


class RecordingLog:
    """A broker stand-in: appends whatever it is given (no key lookups), remembers it."""

    def __init__(self) -> None:
        self.appended: list[str] = []

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]:
        self.appended += [item.event.id for item in items]
        return [Appended(item.event.id) for item in items]

    async def read(self, max_items: int, timeout: float) -> list[Delivery]:
        return []

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def lag(self) -> int:
        return 0

    async def close(self) -> None:
        return None


async def test_a_repeated_key_answers_the_first_id_and_re_appends_it(sqlite_store: SqliteStore) -> None:
    """Same key and body: the first event's id, marked duplicate; the event is appended again under that id."""
    inner = RecordingLog()
    log = IdempotentLog(inner, sqlite_store.idempotency)
    first = await log.append(appends(make_event("E1", key="k"), body_hash="h"))
    again = await log.append(appends(make_event("E2", key="k"), body_hash="h"))
    assert first == [Appended("E1")]
    assert again == [Appended("E1", duplicate=True)]
    assert inner.appended == ["E1", "E1"]


async def test_a_repeated_key_with_another_body_is_refused(sqlite_store: SqliteStore) -> None:
    """Same key, different body: a mismatch in that slot, nothing appended; other items go through."""
    inner = RecordingLog()
    log = IdempotentLog(inner, sqlite_store.idempotency)
    await log.append(appends(make_event("E1", key="k"), body_hash="h"))
    results = await log.append(
        [Append(make_event("E2", key="k"), "other"), Append(make_event("E3", key="k3"), "h3")]
    )
    assert isinstance(results[0], IdempotencyMismatchError)
    assert results[1] == Appended("E3")
    assert inner.appended == ["E1", "E3"]


async def test_the_same_key_twice_in_one_batch_is_one_event(sqlite_store: SqliteStore) -> None:
    """Inside one batch the second use of a key behaves as a repeat of the first."""
    log = IdempotentLog(RecordingLog(), sqlite_store.idempotency)
    results = await log.append(
        [
            Append(make_event("E1", key="k"), "h"),
            Append(make_event("E2", key="k"), "h"),
            Append(make_event("E3")),
        ]
    )
    assert results == [Appended("E1"), Appended("E1", duplicate=True), Appended("E3")]


async def test_claims_are_scoped_by_app_and_pruned_by_age(sqlite_store: SqliteStore) -> None:
    """The same key in two apps are two claims; prune forgets claims older than the horizon."""
    keys = sqlite_store.idempotency
    assert await keys.claim([Claim("a", "k", "h", "E1"), Claim("b", "k", "h", "E2")], now=100.0) == [
        None,
        None,
    ]
    assert await keys.claim([Claim("a", "k", "h", "E9")], now=200.0) == [Claim("a", "k", "h", "E1")]
    assert await keys.prune(older_than=150.0) == 2
    assert await keys.claim([Claim("a", "k", "h", "E9")], now=300.0) == [None]

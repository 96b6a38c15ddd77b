"""``Inbox.openings`` over every store backend: for each request, the same answers as ``last_seq``,
``Retention.floor`` and ``backlog`` give one by one, in the order of the requests, for many users at once."""

from __future__ import annotations

from test_retention_contract import notify, sweep_all

from tidings.core.retention import Limits
from tidings.ports import OpenRequest, Store


async def _one_by_one(store: Store, request: OpenRequest, limit: int) -> tuple[int, int, list[int] | None]:
    app, user, after = request
    last_seq = await store.inbox.last_seq(app, user)
    if after is None or after >= last_seq:
        return last_seq, 0, None
    page = await store.inbox.backlog(app, user, after, limit)
    return last_seq, await store.retention.floor(app, user), [row.seq for row in page]


async def test_openings_answer_as_the_single_reads_do_for_every_kind_of_cursor(store: Store) -> None:
    await notify(store, "alice", 10)
    await notify(store, "bob", 2)
    await notify(store, "carol", 6)
    assert sum(await sweep_all(store, Limits(max_count=4))) == 8  # alice's floor 6, carol's 2
    requests: list[OpenRequest] = [
        ("app1", "alice", 0),  # behind the floor
        ("app1", "alice", 7),  # behind, above the floor
        ("app1", "alice", 10),  # at last_seq: nothing to read
        ("app1", "alice", 12),  # ahead of last_seq
        ("app1", "alice", None),  # no cursor
        ("app1", "bob", 0),
        ("app1", "nobody", 0),  # no row, no counter
        ("app1", "carol", 3),
        ("other", "alice", 0),  # another app: nothing
    ]
    openings = await store.inbox.openings(requests, 3)
    assert len(openings) == len(requests)
    for request, opening in zip(requests, openings, strict=True):
        page = None if opening.page is None else [row.seq for row in opening.page]
        assert (opening.last_seq, opening.floor, page) == await _one_by_one(store, request, 3), request
        assert all(row.payload and row.event_id for row in opening.page or [])
    assert [row.seq for row in openings[1].page or []] == [8, 9, 10]
    assert openings[0].floor == 6
    assert await store.inbox.openings([], 3) == []
